"""``render_pod``: a sealed pod's manifests per TEE, validated against the Kubernetes API
schemas (1.30 and the newest bundled), and the inputs it must refuse."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kube_schemas import validate_all

from sealpod.build.manifest import Manifest, Observed, make_manifest
from sealpod.deploy import container as ct
from sealpod.deploy.kube_pod import (
    RUNTIME_CLASSES,
    SGX_ENCLAVE,
    SGX_EPC,
    SGX_NODE_LABEL,
    SGX_PROVISION,
    BundleIdentity,
    PodOptions,
    render_pod,
)
from sealpod.errors import ConfigError
from sealpod.spec.model import parse_spec
from sealpod.spec.template import EXAMPLE_SPEC, SAMPLE_ROOTFS

MEAS = "ab" * 32
SIGNER = "cd" * 32
KMS_ID = "ef" * 32


def manifest(
    *, volumes: bool = True, kms: bool = False, backends: list[str] | None = None
) -> Manifest:
    data: dict[str, Any] = tomllib.loads(EXAMPLE_SPEC)
    if not volumes:
        data.pop("volumes")
    if kms:
        data["kms"] = {"url": "https://kms.example:8443", "identity": KMS_ID}
    if backends is not None:
        data["tee"]["backends"] = backends
    spec = parse_spec(data)
    observed = [Observed(path="/", kind="dir", mode=0o755)]
    for rel, mode, content in SAMPLE_ROOTFS:
        if content is None:
            observed.append(Observed(path=f"/{rel}", kind="dir", mode=mode))
        else:
            observed.append(
                Observed(
                    path=f"/{rel}", kind="file", mode=mode, size=len(content), sha256="00" * 32
                )
            )
    return make_manifest(spec, observed)


def identity(**kw: Any) -> BundleIdentity:
    return BundleIdentity(manifest=manifest(**kw), measurement_hex=MEAS, signer_hex=SIGNER)


def options(**kw: Any) -> PodOptions:
    base: dict[str, Any] = {
        "name": "demo",
        "image": "registry.example/demo@sha256:" + "1" * 64,
        "tee": "sgx",
        "kms_url": "https://kms.example:8443",
        "kms_identity": KMS_ID,
        "port": 8080,
    }
    base.update(kw)
    return PodOptions(**base)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = docs[-1]["spec"]["template"]["spec"]["containers"][0]
    return c


def test_sgx_with_volumes_is_a_statefulset_on_sgx_nodes() -> None:
    docs = render_pod(identity(), options())
    assert validate_all(docs) == 2
    service, sts = docs
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "demo"
    pod = sts["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {SGX_NODE_LABEL: "true"}
    assert "runtimeClassName" not in pod
    limits = container(docs)["resources"]["limits"]
    assert limits[SGX_EPC] == "512Mi"  # the spec's tee.memory
    assert limits[SGX_ENCLAVE] == 1 and limits[SGX_PROVISION] == 1
    assert limits["squat.ai/fuse"] == 1  # the volume's FUSE mount
    # one claim per volume, mounted where `sealpod run --volume-dir` finds it
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "vol-app-data"
    assert claim["metadata"]["annotations"] == {"org.sealpod.volume": "app-data"}
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    assert mounts["vol-app-data"] == f"{ct.VOLUME_DIR}/app-data"
    assert mounts["aesmd"] == "/var/run/aesmd"


@pytest.mark.parametrize("tee", ["snp", "tdx"])
def test_cvm_backends_use_the_coco_runtime_class(tee: str) -> None:
    docs = render_pod(identity(volumes=False), options(tee=tee, replicas=3))
    assert validate_all(docs) == 2
    service, deployment = docs
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 3
    assert "clusterIP" not in service["spec"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == RUNTIME_CLASSES[tee] == f"kata-qemu-{tee}"
    assert "nodeSelector" not in pod
    limits = container(docs)["resources"]["limits"]
    assert not any(k.startswith("sgx.intel.com/") for k in limits)
    assert "squat.ai/fuse" not in limits  # no volumes, no FUSE


def test_sim_is_labelled_as_no_protection() -> None:
    docs = render_pod(identity(volumes=False), options(tee="sim"))
    validate_all(docs)
    annotations = docs[-1]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ct.LABEL_TEE] == "sim"
    assert "NO hardware protection" in annotations["org.sealpod.warning"]


def test_identity_and_kms_reach_the_runtime() -> None:
    docs = render_pod(identity(), options())
    c = container(docs)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env[ct.ENV_KMS_URL] == "https://kms.example:8443"
    assert env[ct.ENV_KMS_IDENTITY] == KMS_ID
    args = c["args"]
    assert args[args.index("--kms-identity") + 1] == f"$({ct.ENV_KMS_IDENTITY})"
    assert args[args.index("--signer") + 1] == SIGNER
    assert args[args.index("--tee") + 1] == "sgx"
    assert "--unsafe-any-kms" not in args
    annotations = docs[-1]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ct.LABEL_MEASUREMENT] == MEAS and annotations[ct.LABEL_SIGNER] == SIGNER


def test_kms_comes_from_the_spec_when_not_given() -> None:
    docs = render_pod(identity(kms=True), options(kms_url=None, kms_identity=None))
    env = {e["name"]: e["value"] for e in container(docs)["env"]}
    assert env[ct.ENV_KMS_URL] == "https://kms.example:8443" and env[ct.ENV_KMS_IDENTITY] == KMS_ID


def test_security_context_is_least_privilege() -> None:
    c = container(render_pod(identity(), options()))
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": list(ct.SANDBOX_CAPABILITIES)}
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["procMount"] == "Unmasked"
    pod = render_pod(identity(), options())[-1]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["hostUsers"] is False  # root in the container is not root on the node


def test_probes_follow_the_port() -> None:
    c = container(render_pod(identity(volumes=False), options(port=6379)))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": 6379}
    # no port: nothing to probe, no Service
    docs = render_pod(identity(volumes=False), options(port=None))
    assert [d["kind"] for d in docs] == ["Deployment"]
    assert "readinessProbe" not in container(docs)
    validate_all(docs)


@pytest.mark.parametrize(
    ("kw", "spec_kw", "words"),
    [
        ({"tee": "sim"}, {"backends": ["sgx"]}, "allows only sgx"),
        ({"kms_url": None}, {}, "no KMS URL"),
        ({"kms_identity": None}, {}, "no pinned KMS identity"),
        ({"replicas": 2}, {}, "exactly 1 replica"),
        ({"name": "Demo_1"}, {}, "name is"),
        ({"namespace": "-x"}, {}, "namespace is"),
        ({"image": "reg.example/app:1 ; rm -rf /"}, {}, "image is"),
        ({"kms_url": "ftp://kms"}, {}, "KMS URL is"),
        ({"kms_identity": "12"}, {}, "KMS identity is"),
        ({"port": 70000}, {}, "port is"),
        ({"volume_size": "lots"}, {}, "volume size is"),
        ({"node_selector": {"a b": "c"}}, {}, "node selector"),
        ({"fuse_resource": "fuse"}, {}, "FUSE resource is"),
    ],
)
def test_refused(kw: dict[str, Any], spec_kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        render_pod(identity(**spec_kw), options(**kw))


def test_unsafe_any_kms_is_explicit() -> None:
    docs = render_pod(identity(), options(kms_identity=None, unsafe_any_kms=True))
    c = container(docs)
    assert "--unsafe-any-kms" in c["args"] and "--kms-identity" not in c["args"]
    assert ct.ENV_KMS_IDENTITY not in {e["name"] for e in c["env"]}


_HOSTILE = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=80)
_MANIFEST = manifest()


@settings(max_examples=150, deadline=None)
@given(name=_HOSTILE, image=_HOSTILE, selector_value=_HOSTILE)
def test_hostile_names_are_refused_or_valid(name: str, image: str, selector_value: str) -> None:
    """Whatever a user types, the result is a ConfigError or manifests the API accepts."""
    bundle = BundleIdentity(manifest=_MANIFEST, measurement_hex=MEAS, signer_hex=SIGNER)
    try:
        docs = render_pod(
            bundle, options(name=name, image=image, node_selector={"zone": selector_value})
        )
    except ConfigError:
        return
    validate_all(docs)


def test_written_by_the_cli_from_a_real_bundle(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sealpod.build.bundle import build_bundle, load_bundle
    from sealpod.build.keys import KeyType, generate_key
    from sealpod.deploy.kube_pod import spec_port
    from sealpod.spec.load import image_source, load_spec
    from sealpod.spec.template import write_example

    write_example(tmp_path / "demo")
    spec = load_spec(tmp_path / "demo" / "sealpod.toml")
    image = image_source(spec, tmp_path / "demo" / "sealpod.toml")
    built = build_bundle(
        spec,
        image=image,
        key=generate_key(KeyType.ED25519),
        out=tmp_path / "b",
        signed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    bundle = load_bundle(built.path)
    assert spec_port(bundle.manifest) is None
    ident = BundleIdentity(
        manifest=bundle.manifest,
        measurement_hex=bundle.measurement.hex(),
        signer_hex=bundle.signer_id.hex(),
    )
    docs = render_pod(ident, options())
    validate_all(docs)
    assert docs[-1]["metadata"]["annotations"][ct.LABEL_MEASUREMENT] == bundle.measurement.hex()


def test_port_defaults_to_the_spec_ready_tcp() -> None:
    from sealpod.deploy.kube_pod import spec_port

    data: dict[str, Any] = tomllib.loads(EXAMPLE_SPEC)
    data["runtime"] = {"ready_tcp": "127.0.0.1:6379"}
    spec = parse_spec(data)
    observed = [Observed(path="/", kind="dir", mode=0o755)]
    observed += [
        Observed(path=f"/{rel}", kind="dir", mode=mode)
        if content is None
        else Observed(path=f"/{rel}", kind="file", mode=mode, size=len(content), sha256="00" * 32)
        for rel, mode, content in SAMPLE_ROOTFS
    ]
    with_port = make_manifest(spec, observed)
    assert spec_port(with_port) == 6379
    assert spec_port(manifest()) is None
