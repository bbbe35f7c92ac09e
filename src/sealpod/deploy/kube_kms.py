"""The key broker on Kubernetes: :func:`render_kms` (pure).

What it writes, for ``sealpod kube kms`` and for the Kustomize base in
``deploy/kubernetes/base`` (which is this function's output with the default options: a test
keeps the two identical):

1. a ServiceAccount that mounts no API token (the KMS never talks to the Kubernetes API);
2. a Deployment of ``replicas`` (>= 2) stateless ``sealpod kms serve`` processes over one
   PostgreSQL: the database URL and the master key come from Secrets as environment variables
   (``SEALPOD_KMS_DB_URL``, ``SEALPOD_KMS_MASTER_KEY``; the KMS never copies the key into its
   settings), the TLS certificate and key from a ``kubernetes.io/tls`` Secret; liveness on
   ``/healthz``, readiness on ``/readyz`` (503 while sealed or while the database is
   unreachable); Prometheus scrape annotations for ``/metrics``; non-root, read-only root,
   every capability dropped, RuntimeDefault seccomp; replicas spread over nodes;
3. a Service (TLS on 8443), a PodDisruptionBudget (one replica down at a time), and a
   NetworkPolicy (in: the KMS port; out: DNS, PostgreSQL, and HTTPS for Intel PCS / AMD KDS
   collateral);
4. a Job that runs the alembic migrations (``sealpod kms migrate``) before a new version
   serves; its name carries the version, because a Job's pod template cannot change.

With ``unseal="shares"`` no master key is given: each replica starts sealed and is unsealed
with ``sealpod kms unseal`` (Shamir shares), so its readiness stays false until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sealpod import __version__
from sealpod.deploy.kube_common import (
    Manifest,
    check_image,
    check_name,
    check_quantity,
    labels,
    metadata,
    selector,
)
from sealpod.errors import ConfigError

COMPONENT = "kms"
HOME = "/var/lib/sealpod"
TLS_DIR = "/etc/sealpod/tls"
KMS_UID = 10001
MIN_REPLICAS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class KmsOptions:
    """Everything ``sealpod kube kms`` takes from flags; the defaults are the Kustomize base."""

    name: str = "sealpod-kms"
    namespace: str | None = None
    image: str = "sealpod"
    replicas: int = 2
    port: int = 8443
    db_secret: str = "sealpod-kms-db"  # noqa: S105 - the name of a Secret, not a value
    db_secret_key: str = "url"  # noqa: S105 - the name of a Secret, not a value
    master_key_secret: str = "sealpod-kms-master-key"  # noqa: S105 - the name of a Secret, not a value
    master_key_secret_key: str = "master-key"  # noqa: S105 - the name of a Secret, not a value
    tls_secret: str = "sealpod-kms-tls"  # noqa: S105 - the name of a Secret, not a value
    unseal: Literal["key", "shares"] = "key"
    pcs: bool = True
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    memory_limit: str = "512Mi"
    db_port: int = 5432

    def check(self) -> None:
        """Refuse options that would give a broken or weakened deployment.

        Raises:
            ConfigError: a bad name, image, quantity or port, or fewer than 2 replicas.
        """
        check_name(self.name, "name")
        if self.namespace is not None:
            check_name(self.namespace, "namespace")
        for secret in (self.db_secret, self.master_key_secret, self.tls_secret):
            check_name(secret, "secret name")
        for key in (self.db_secret_key, self.master_key_secret_key):
            check_name(key, "secret key")
        check_image(self.image)
        if self.replicas < MIN_REPLICAS:
            raise ConfigError(
                f"replicas is {self.replicas}, expected at least {MIN_REPLICAS}: one replica"
                " is not highly available (use `sealpod kms serve` on one machine instead)"
            )
        if self.replicas > 64:
            raise ConfigError(f"replicas is {self.replicas}, expected at most 64")
        for port, what in ((self.port, "port"), (self.db_port, "database port")):
            if not 1 <= port <= 65535:
                raise ConfigError(f"{what} is {port}, expected 1-65535")
        check_quantity(self.cpu_request, "cpu request")
        check_quantity(self.memory_request, "memory request")
        check_quantity(self.memory_limit, "memory limit")


def render_kms(options: KmsOptions) -> list[Manifest]:
    """The KMS's manifests, in apply order.

    Raises:
        ConfigError: from :meth:`KmsOptions.check`.
    """
    options.check()
    return [
        _service_account(options),
        _migration_job(options),
        _deployment(options),
        _service(options),
        _pdb(options),
        _network_policy(options),
    ]


def _meta(options: KmsOptions, name: str | None = None) -> dict[str, Any]:
    return metadata(name or options.name, options.namespace, labels(options.name, COMPONENT))


def _service_account(options: KmsOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(options),
        "automountServiceAccountToken": False,
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": KMS_UID,
        "runAsGroup": KMS_UID,
        "fsGroup": KMS_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _env(options: KmsOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "SEALPOD_HOME", "value": HOME},
        _secret_env("SEALPOD_KMS_DB_URL", options.db_secret, options.db_secret_key),
    ]
    if options.unseal == "key":
        env.append(
            _secret_env(
                "SEALPOD_KMS_MASTER_KEY", options.master_key_secret, options.master_key_secret_key
            )
        )
    return env


def _writable_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # The root is read-only: the KMS writes only server.json under its home, and /tmp.
    volumes = [
        {"name": "home", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    mounts = [{"name": "home", "mountPath": HOME}, {"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    return volumes, mounts


def _resources(options: KmsOptions) -> dict[str, Any]:
    return {
        "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
        "limits": {"memory": options.memory_limit},
    }


def _migration_job(options: KmsOptions) -> Manifest:
    volumes, mounts = _writable_volumes()
    job_name = f"{options.name}-migrate-{__version__.replace('.', '-').replace('+', '-')}"
    check_name(job_name[:63].rstrip("-"), "migration job name")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(options, job_name[:63].rstrip("-")),
        "spec": {
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels(options.name, "kms-migrate")},
                "spec": {
                    "serviceAccountName": options.name,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "OnFailure",
                    "securityContext": _pod_security(),
                    "containers": [
                        {
                            "name": "migrate",
                            "image": options.image,
                            "command": ["sealpod"],
                            "args": ["kms", "migrate"],
                            "env": [
                                {"name": "SEALPOD_HOME", "value": HOME},
                                _secret_env(
                                    "SEALPOD_KMS_DB_URL", options.db_secret, options.db_secret_key
                                ),
                            ],
                            "resources": _resources(options),
                            "securityContext": _container_security(),
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def _probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTPS"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _deployment(options: KmsOptions) -> Manifest:
    volumes, mounts = _writable_volumes()
    volumes.append(
        {"name": "tls", "secret": {"secretName": options.tls_secret, "defaultMode": 0o440}}
    )
    mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    args = [
        "kms",
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 - inside the pod; the NetworkPolicy limits who reaches it
        "--port",
        str(options.port),
        "--tls-cert",
        f"{TLS_DIR}/tls.crt",
        "--tls-key",
        f"{TLS_DIR}/tls.key",
    ]
    if not options.pcs:
        args.append("--no-pcs")
    pod_labels = labels(options.name, COMPONENT)
    container = {
        "name": "kms",
        "image": options.image,
        "command": ["sealpod"],
        "args": args,
        "ports": [{"name": "https", "containerPort": options.port, "protocol": "TCP"}],
        "env": _env(options),
        "resources": _resources(options),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
        "startupProbe": _probe("/healthz", "https", period=2, failures=30),
        "livenessProbe": _probe("/healthz", "https", period=10, failures=3),
        "readinessProbe": _probe("/readyz", "https", period=5, failures=2),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(options),
        "spec": {
            "replicas": options.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(options.name, COMPONENT)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/scheme": "https",
                        "prometheus.io/port": str(options.port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": options.name,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": _pod_security(),
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector(options.name, COMPONENT)},
                        }
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service(options: KmsOptions) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(options),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(options.name, COMPONENT),
            "ports": [
                {"name": "https", "port": options.port, "targetPort": "https", "protocol": "TCP"}
            ],
        },
    }


def _pdb(options: KmsOptions) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(options),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(options.name, COMPONENT)},
        },
    }


def _network_policy(options: KmsOptions) -> Manifest:
    def port(number: int, protocol: str = "TCP") -> dict[str, Any]:
        return {"port": number, "protocol": protocol}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(options),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": options.name}},
            "policyTypes": ["Ingress", "Egress"],
            # Sealed pods attest from any namespace; scrapers read /metrics on the same port.
            "ingress": [{"ports": [port(options.port)]}],
            "egress": [
                {"ports": [port(53, "UDP"), port(53)]},
                {"ports": [port(options.db_port)]},
                # Intel PCS and AMD KDS collateral for hardware evidence.
                {"ports": [port(443)]},
            ],
        },
    }
