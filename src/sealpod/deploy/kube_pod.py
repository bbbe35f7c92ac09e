"""A sealed pod on Kubernetes: :func:`render_pod` (pure).

The pod runs the image ``sealpod image`` wrote (entrypoint ``sealpod run /bundle``) and puts
it where its TEE is:

- ``sgx``: the Intel SGX device plugin's extended resources (``sgx.intel.com/epc`` sized from
  the spec's ``tee.memory``, ``sgx.intel.com/enclave``, ``sgx.intel.com/provision`` for DCAP
  quotes) and nodes labelled by Node Feature Discovery with Intel's rule
  (``intel.feature.node.kubernetes.io/sgx=true``); the host's AESM socket directory is
  mounted for quote generation;
- ``snp`` / ``tdx``: the Confidential Containers runtime class ``kata-qemu-snp`` /
  ``kata-qemu-tdx`` (each pod is its own confidential VM; the runtime class schedules it);
- ``sim``: no hardware protection at all; annotated ``org.sealpod.tee: sim`` so nobody takes
  it for a TEE, and only a KMS whose policy allows simulation releases anything to it.

A spec with ``[[volumes]]`` gives a StatefulSet with one PersistentVolumeClaim per volume (it
holds only the volume's ciphertext; the key comes from the KMS after attestation) and exactly
one replica, because two pods writing one volume would defeat its rollback counter. Otherwise
a Deployment. The KMS URL and its pinned identity are environment variables passed on to
``sealpod run``; a pod without a pinned KMS identity is refused unless ``unsafe_any_kms``.
Probes are TCP checks on the pod's port (the spec's ``runtime.ready_tcp`` or ``--port``), so
a pod is ready only once attestation, provisioning and its workload are up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sealpod.build.manifest import Manifest as BundleManifest
from sealpod.deploy import container as ct
from sealpod.deploy.kube_common import (
    Manifest,
    check_fingerprint,
    check_image,
    check_name,
    check_quantity,
    check_url,
    labels,
    mebibytes,
    metadata,
    selector,
)
from sealpod.errors import ConfigError

TeeName = Literal["sgx", "snp", "tdx", "sim"]
COMPONENT = "sealed-pod"
RUNTIME_CLASSES: dict[str, str] = {"snp": "kata-qemu-snp", "tdx": "kata-qemu-tdx"}
#: Node Feature Discovery label set by the NodeFeatureRule of Intel's device plugins
#: (deployments/nfd/overlays/node-feature-rules in intel-device-plugins-for-kubernetes).
SGX_NODE_LABEL = "intel.feature.node.kubernetes.io/sgx"
SGX_EPC = "sgx.intel.com/epc"
SGX_ENCLAVE = "sgx.intel.com/enclave"
SGX_PROVISION = "sgx.intel.com/provision"
AESMD_DIR = "/var/run/aesmd"
_RESOURCE_RE = re.compile(
    r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodOptions:
    """What ``sealpod kube pod`` takes from flags."""

    name: str
    image: str
    tee: TeeName
    namespace: str | None = None
    replicas: int = 1
    kms_url: str | None = None
    kms_identity: str | None = None
    unsafe_any_kms: bool = False
    port: int | None = None
    volume_size: str = "1Gi"
    storage_class: str | None = None
    cpu_request: str = "250m"
    node_selector: dict[str, str] = field(default_factory=dict)
    #: The extended resource that gives the container /dev/fuse (pods with volumes), e.g.
    #: from squat/generic-device-plugin; Kubernetes offers no other way short of privileged.
    fuse_resource: str = "squat.ai/fuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleIdentity:
    """What the manifests say about the bundle inside the image."""

    manifest: BundleManifest
    measurement_hex: str
    signer_hex: str


def render_pod(bundle: BundleIdentity, options: PodOptions) -> list[Manifest]:
    """The sealed pod's manifests: a Service (when it has a port) and its workload.

    Raises:
        ConfigError: a bad name, image, URL, fingerprint or quantity; a TEE the bundle's spec
            does not allow; no KMS URL or no pinned KMS identity (without ``unsafe_any_kms``);
            more than one replica of a pod with volumes.
    """
    check_name(options.name, "name")
    if options.namespace is not None:
        check_name(options.namespace, "namespace")
    check_image(options.image)
    check_quantity(options.volume_size, "volume size")
    check_quantity(options.cpu_request, "cpu request")
    if options.storage_class is not None:
        check_name(options.storage_class, "storage class")
    spec = bundle.manifest
    if options.tee not in spec.tee.backends:
        raise ConfigError(
            f"tee is {options.tee!r}, but the bundle's spec allows only"
            f" {', '.join(spec.tee.backends)}"
        )
    kms_url = options.kms_url or (spec.kms.url if spec.kms else None)
    if kms_url is None:
        raise ConfigError("no KMS URL: give --kms URL or set [kms] url in the pod spec")
    check_url(kms_url, "KMS URL")
    identity = options.kms_identity or (spec.kms.identity if spec.kms else None)
    if identity is None and not options.unsafe_any_kms:
        raise ConfigError(
            "no pinned KMS identity: give --kms-identity HEX (SHA-256 of the KMS's public key)"
            " or set [kms] identity in the pod spec (--unsafe-any-kms trusts any KMS)"
        )
    if identity is not None:
        identity = check_fingerprint(identity, "KMS identity")
    port = options.port
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"port is {port}, expected 1-65535")
    if not 1 <= options.replicas <= 64:
        raise ConfigError(f"replicas is {options.replicas}, expected 1-64")
    if spec.volumes and options.replicas != 1:
        raise ConfigError(
            f"replicas is {options.replicas}, but the pod has encrypted volumes: each volume"
            " has one writer, so a pod with volumes runs as exactly 1 replica"
        )
    if not _RESOURCE_RE.fullmatch(options.fuse_resource):
        raise ConfigError(
            f"FUSE resource is {options.fuse_resource[:80]!r}, expected DOMAIN/NAME"
            " such as squat.ai/fuse"
        )
    for key, value in options.node_selector.items():
        if not key or len(key) > 253 or len(value) > 63 or any(c.isspace() for c in key + value):
            raise ConfigError(f"node selector {key[:80]!r}={value[:80]!r} is not a valid label")

    template = _pod_template(bundle, options, kms_url, identity, port)
    docs: list[Manifest] = []
    if port is not None or spec.volumes:
        docs.append(_service(options, port, headless=bool(spec.volumes)))
    docs.append(_workload(bundle, options, template))
    return docs


def _args(options: PodOptions, identity: str | None, signer_hex: str) -> list[str]:
    # Appended to the entrypoint `sealpod run /bundle`. $(VAR) is expanded by the kubelet.
    args = ["--tee", options.tee, "--signer", signer_hex, "--kms", f"$({ct.ENV_KMS_URL})"]
    if identity is not None:
        args += ["--kms-identity", f"$({ct.ENV_KMS_IDENTITY})"]
    else:
        args.append("--unsafe-any-kms")
    # The container's network namespace is the pod's: the workload serves through it.
    args += ["--network", "host", "--volume-dir", ct.VOLUME_DIR, "--json"]
    return args


def _security_context() -> dict[str, Any]:
    return {
        # `sealpod run` builds the workload's sandbox (namespaces, FUSE): root in the container
        # with only the capabilities that takes; the workload itself runs with none.
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"], "add": list(ct.SANDBOX_CAPABILITIES)},
        "seccompProfile": {"type": "RuntimeDefault"},
        # bubblewrap mounts a new /proc in its PID namespace; masked paths forbid that.
        "procMount": "Unmasked",
    }


def _resources(spec: BundleManifest, options: PodOptions) -> dict[str, Any]:
    memory = mebibytes(spec.tee.memory_bytes)
    limits: dict[str, Any] = {"memory": memory}
    if spec.volumes:
        limits[options.fuse_resource] = 1
    if options.tee == "sgx":
        limits[SGX_EPC] = memory
        limits[SGX_ENCLAVE] = 1
        limits[SGX_PROVISION] = 1
    return {"requests": {"cpu": options.cpu_request, "memory": memory}, "limits": limits}


def _probes(port: int | None) -> dict[str, Any]:
    if port is None:
        return {}
    check = {"tcpSocket": {"port": port}, "timeoutSeconds": 3}
    return {
        # Verification, attestation and volume mounts come before the port opens.
        "startupProbe": {**check, "periodSeconds": 2, "failureThreshold": 90},
        "livenessProbe": {**check, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**check, "periodSeconds": 5, "failureThreshold": 2},
    }


def _pod_template(
    bundle: BundleIdentity,
    options: PodOptions,
    kms_url: str,
    identity: str | None,
    port: int | None,
) -> dict[str, Any]:
    spec = bundle.manifest
    env: list[dict[str, Any]] = [
        {"name": ct.ENV_HOME, "value": ct.SEALPOD_HOME},
        {"name": ct.ENV_KMS_URL, "value": kms_url},
    ]
    if identity is not None:
        env.append({"name": ct.ENV_KMS_IDENTITY, "value": identity})
    # The root is read-only: sealpod run stages the pod's mounts on a tmpfs under /run.
    mounts: list[dict[str, Any]] = [
        {"name": "home", "mountPath": ct.SEALPOD_HOME},
        {"name": "run", "mountPath": "/run"},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own tmpfs
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "home", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    for vol in spec.volumes:
        mounts.append({"name": _claim_name(vol.name), "mountPath": f"{ct.VOLUME_DIR}/{vol.name}"})
    if options.tee == "sgx":
        volumes.append({"name": "aesmd", "hostPath": {"path": AESMD_DIR, "type": "Directory"}})
        mounts.append({"name": "aesmd", "mountPath": AESMD_DIR})
    container: dict[str, Any] = {
        "name": "sealed-pod",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": _args(options, identity, bundle.signer_hex),
        "env": env,
        "resources": _resources(spec, options),
        "securityContext": _security_context(),
        "volumeMounts": mounts,
        **_probes(port),
    }
    if port is not None:
        container["ports"] = [{"name": "app", "containerPort": port, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        # A user namespace of its own: root in the container is not root on the node (and
        # Kubernetes allows an unmasked /proc only then).
        "hostUsers": False,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": volumes,
    }
    node_selector = dict(options.node_selector)
    if options.tee == "sgx" and not node_selector:
        node_selector = {SGX_NODE_LABEL: "true"}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if options.tee in RUNTIME_CLASSES:
        pod_spec["runtimeClassName"] = RUNTIME_CLASSES[options.tee]
    annotations = {
        ct.LABEL_MEASUREMENT: bundle.measurement_hex,
        ct.LABEL_SIGNER: bundle.signer_hex,
        ct.LABEL_TEE: options.tee,
    }
    if options.tee == "sim":
        annotations["org.sealpod.warning"] = "simulated TEE: NO hardware protection"
    return {
        "metadata": {"labels": labels(options.name, COMPONENT), "annotations": annotations},
        "spec": pod_spec,
    }


def _claim_name(volume: str) -> str:
    # Volume names allow '_' and '.', object names do not; the mount path keeps the real name.
    cleaned = "".join(c if c.isalnum() else "-" for c in volume.lower()).strip("-")
    return check_name(f"vol-{cleaned}"[:63].rstrip("-"), f"claim name for volume {volume!r}")


def _service(options: PodOptions, port: int | None, *, headless: bool) -> Manifest:
    spec: dict[str, Any] = {"selector": selector(options.name, COMPONENT)}
    if headless:
        spec["clusterIP"] = "None"
    if port is not None:
        spec["ports"] = [{"name": "app", "port": port, "targetPort": "app", "protocol": "TCP"}]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(options.name, options.namespace, labels(options.name, COMPONENT)),
        "spec": spec,
    }


def _workload(bundle: BundleIdentity, options: PodOptions, template: dict[str, Any]) -> Manifest:
    meta = metadata(
        options.name,
        options.namespace,
        labels(options.name, COMPONENT),
        {ct.LABEL_MEASUREMENT: bundle.measurement_hex, ct.LABEL_TEE: options.tee},
    )
    spec: dict[str, Any] = {
        "replicas": options.replicas,
        "selector": {"matchLabels": selector(options.name, COMPONENT)},
        "template": template,
    }
    if not bundle.manifest.volumes:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    claims = []
    for vol in bundle.manifest.volumes:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": options.volume_size}},
        }
        if options.storage_class is not None:
            claim_spec["storageClassName"] = options.storage_class
        claims.append(
            {
                "metadata": {
                    "name": _claim_name(vol.name),
                    "labels": labels(options.name, COMPONENT),
                    # The claim stores only the volume's ciphertext (AES-256-GCM nodes).
                    "annotations": {"org.sealpod.volume": vol.name},
                },
                "spec": claim_spec,
            }
        )
    spec.update(
        {
            "serviceName": options.name,
            "podManagementPolicy": "OrderedReady",
            # A replaced pod must not start before the old one has stopped writing.
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "volumeClaimTemplates": claims,
        }
    )
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": spec}


def spec_port(manifest: BundleManifest) -> int | None:
    """The port of the spec's ``[runtime] ready_tcp`` ("HOST:PORT"), if it has one.

    Raises:
        Nothing: the spec model has already checked the address.
    """
    ready = manifest.runtime.ready_tcp if manifest.runtime is not None else None
    if ready is None:
        return None
    _, _, port = ready.rpartition(":")
    return int(port) if port.isdigit() and 0 < int(port) < 65536 else None
