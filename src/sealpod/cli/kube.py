"""``sealpod kube``: Kubernetes manifests for a sealed pod (``kube pod``) and for the key
broker (``kube kms``, the same objects as the Kustomize base in ``deploy/kubernetes``).

Rendering only: the manifests come from :mod:`sealpod.deploy.kube_pod` and
:mod:`sealpod.deploy.kube_kms`. Output is YAML on stdout (or ``-o FILE``); ``--json`` prints a
``v1/List`` that ``kubectl apply -f`` accepts too.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err

kube_app = typer.Typer(
    name="kube",
    help="Kubernetes manifests: a sealed pod (pod) and the key broker (kms).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class KubeTee(enum.StrEnum):
    """``--tee`` for a pod on Kubernetes (``auto`` has no meaning for a manifest)."""

    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"
    SIM = "sim"


class Unseal(enum.StrEnum):
    KEY = "key"
    SHARES = "shares"


OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the manifests here (default: stdout).")
]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace (default: none set).")
]


def _render(docs: list[dict[str, Any]], out_path: Path | None, json_output: bool) -> None:
    import json

    from sealpod._files import write_atomic
    from sealpod.deploy.kube_common import dump_yaml
    from sealpod.errors import ConfigError

    if json_output:
        listing = {"apiVersion": "v1", "kind": "List", "items": docs}
        if out_path is None:
            emit_json(listing)
            return
        text = json.dumps(listing, indent=2, sort_keys=True) + "\n"
    else:
        text = dump_yaml(docs)
    if out_path is None:
        typer.echo(text, nl=False)
        return
    try:
        write_atomic(out_path, text.encode(), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    err.print(f"wrote {len(docs)} manifests to {out_path}", markup=False)


def _selector(items: list[str] | None) -> dict[str, str]:
    from sealpod.errors import ConfigError

    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"node selector is {item[:80]!r}, expected KEY=VALUE")
        result[key] = value
    return result


@command(kube_app, "pod")
def pod_cmd(
    bundle_dir: Annotated[Path, typer.Argument(help="The sealed bundle inside the image.")],
    image: Annotated[
        str, typer.Option("--image", help="The image `sealpod image` wrote (pin a digest).")
    ],
    tee: Annotated[KubeTee, typer.Option("--tee", help="Where it runs: sgx, snp, tdx or sim.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Object name (default: the bundle's name).")
    ] = None,
    namespace: NamespaceOption = None,
    kms: Annotated[
        str | None, typer.Option("--kms", help="KMS URL (default: the spec's [kms] url).")
    ] = None,
    kms_identity: Annotated[
        str | None,
        typer.Option("--kms-identity", help="SHA-256 hex of the KMS's public key (pinned)."),
    ] = None,
    unsafe_any_kms: Annotated[
        bool, typer.Option("--unsafe-any-kms", help="Trust any KMS (no pinned identity).")
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="The workload's TCP port (Service, probes).")
    ] = None,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, max=64, help="Pods of the workload.")
    ] = 1,
    volume_size: Annotated[
        str, typer.Option("--volume-size", help="Size of each volume's claim.")
    ] = "1Gi",
    storage_class: Annotated[
        str | None,
        typer.Option(
            "--storage-class", help="StorageClass of the volumes' claims (default: the cluster's)."
        ),
    ] = None,
    fuse_resource: Annotated[
        str,
        typer.Option("--fuse-resource", help="Extended resource giving /dev/fuse (volumes)."),
    ] = "squat.ai/fuse",
    node_selector: Annotated[
        list[str] | None,
        typer.Option("--node-selector", help="KEY=VALUE (repeatable; replaces the default)."),
    ] = None,
    out_path: OutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a Deployment (a StatefulSet when the pod has volumes) that runs a sealed pod."""
    from sealpod.build.bundle import load_bundle
    from sealpod.deploy.kube_pod import BundleIdentity, PodOptions, render_pod, spec_port

    bundle = load_bundle(bundle_dir)
    default_name = "".join(c if c.isalnum() else "-" for c in bundle_dir.resolve().name.lower())
    options = PodOptions(
        name=name or default_name.strip("-")[:63].strip("-") or "sealed-pod",
        image=image,
        tee=tee.value,
        namespace=namespace,
        replicas=replicas,
        kms_url=kms,
        kms_identity=kms_identity,
        unsafe_any_kms=unsafe_any_kms,
        port=port if port is not None else spec_port(bundle.manifest),
        volume_size=volume_size,
        storage_class=storage_class,
        fuse_resource=fuse_resource,
        node_selector=_selector(node_selector),
    )
    identity = BundleIdentity(
        manifest=bundle.manifest,
        measurement_hex=bundle.measurement.hex(),
        signer_hex=bundle.signer_id.hex(),
    )
    docs = render_pod(identity, options)
    if tee is KubeTee.SIM:
        err.print(
            "warning: --tee sim gives NO hardware protection; only a KMS whose policy allows"
            " simulation releases secrets to it",
            markup=False,
        )
    _render(docs, out_path, json_output)


@command(kube_app, "kms")
def kms_cmd(
    image: Annotated[str, typer.Option("--image", help="An image with sealpod installed.")],
    name: Annotated[str, typer.Option("--name", help="Name of the KMS objects.")] = "sealpod-kms",
    namespace: NamespaceOption = None,
    replicas: Annotated[int, typer.Option("--replicas", help="At least 2.")] = 2,
    port: Annotated[int, typer.Option("--port", help="The KMS's HTTPS port.")] = 8443,
    db_secret: Annotated[
        str, typer.Option("--db-secret", help="Secret whose key 'url' is the PostgreSQL URL.")
    ] = "sealpod-kms-db",  # noqa: S107 - a Secret's name
    master_key_secret: Annotated[
        str,
        typer.Option("--master-key-secret", help="Secret whose key 'master-key' is the key."),
    ] = "sealpod-kms-master-key",  # noqa: S107 - a Secret's name
    tls_secret: Annotated[
        str, typer.Option("--tls-secret", help="kubernetes.io/tls Secret for the KMS.")
    ] = "sealpod-kms-tls",  # noqa: S107 - a Secret's name
    unseal: Annotated[
        Unseal,
        typer.Option("--unseal", help="key: master key from the Secret; shares: unseal by hand."),
    ] = Unseal.KEY,
    pcs: Annotated[
        bool, typer.Option("--pcs/--no-pcs", help="Fetch DCAP collateral from Intel PCS.")
    ] = True,
    cpu_request: Annotated[
        str, typer.Option("--cpu-request", help="CPU each KMS pod requests.")
    ] = "250m",
    memory_request: Annotated[
        str, typer.Option("--memory-request", help="Memory each KMS pod requests.")
    ] = "256Mi",
    memory_limit: Annotated[
        str, typer.Option("--memory-limit", help="Memory limit of each KMS pod.")
    ] = "512Mi",
    db_port: Annotated[int, typer.Option("--db-port", help="For the NetworkPolicy.")] = 5432,
    out_path: OutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the KMS's manifests (Deployment over PostgreSQL, Service, PDB, NetworkPolicy,
    migration Job): the Kustomize base in deploy/kubernetes, with values from flags."""
    from sealpod.deploy.kube_kms import KmsOptions, render_kms

    options = KmsOptions(
        name=name,
        namespace=namespace,
        image=image,
        replicas=replicas,
        port=port,
        db_secret=db_secret,
        master_key_secret=master_key_secret,
        tls_secret=tls_secret,
        unseal=unseal.value,
        pcs=pcs,
        cpu_request=cpu_request,
        memory_request=memory_request,
        memory_limit=memory_limit,
        db_port=db_port,
    )
    _render(render_kms(options), out_path, json_output)


def register(app: typer.Typer) -> None:
    """Add ``sealpod kube`` to the root app."""
    app.add_typer(kube_app, name="kube")
