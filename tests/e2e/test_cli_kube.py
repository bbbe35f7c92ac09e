"""``sealpod kube`` as a user runs it, and the shipped Kustomize overlays rendered by
``kubectl kustomize``: every manifest validated (strict) against the Kubernetes API schemas of
1.30 and of the newest version ``kubernetes-validate`` bundles."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cli_process import quick_start, sealpod

REPO = Path(__file__).resolve().parents[2]
KUSTOMIZE = REPO / "deploy" / "kubernetes"
VERSIONS = ("1.30.0", str(kubernetes_validate.latest_version()))
KMS_ID = "0f" * 32


def validated(text: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, "no manifests"
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    return docs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("kube")
    quick_start(work, pod="demo", bundle="bundle")
    return work


@pytest.mark.parametrize("tee", ["sgx", "snp", "tdx", "sim"])
def test_kube_pod_for_each_tee(built: Path, tee: str) -> None:
    result = sealpod(
        "kube", "pod", "bundle", "--image", "registry.example/demo:1", "--tee", tee,
        "--kms", "https://kms.example:8443", "--kms-identity", KMS_ID, "--port", "8080",
        cwd=built,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = validated(result.stdout)
    assert [d["kind"] for d in docs] == ["Service", "StatefulSet"]  # the demo has a volume
    assert ("NO hardware protection" in result.stderr) == (tee == "sim")


def test_kube_pod_json_and_file_output(built: Path, tmp_path: Path) -> None:
    args = ("kube", "pod", "bundle", "--image", "registry.example/demo:1", "--tee", "snp",
            "--kms", "https://kms.example:8443", "--kms-identity", KMS_ID,
            "--name", "demo")  # fmt: skip
    listing = json.loads(sealpod(*args, "--json", cwd=built).stdout)
    assert listing["kind"] == "List" and listing["apiVersion"] == "v1"
    out = tmp_path / "pod.yaml"
    result = sealpod(*args, "-o", out, cwd=built)
    assert result.returncode == 0 and result.stdout == ""
    assert validated(out.read_text()) == listing["items"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--tee", "sgx"), "no KMS URL"),
        (("--tee", "sgx", "--kms", "https://k:1"), "no pinned KMS identity"),
        (("--tee", "sgx", "--kms", "https://k:1", "--unsafe-any-kms", "--replicas", "2"),
         "1 replica"),
        (("--tee", "auto", "--kms", "https://k:1"), "auto"),
    ],
)  # fmt: skip
def test_kube_pod_refusals(built: Path, extra: tuple[str, ...], words: str) -> None:
    result = sealpod("kube", "pod", "bundle", "--image", "reg.example/d:1", *extra, cwd=built)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert result.stdout == ""


def test_kube_pod_refuses_a_tampered_bundle(built: Path, tmp_path: Path) -> None:
    shutil.copytree(built / "bundle", tmp_path / "b")
    (tmp_path / "b" / "manifest.json").write_bytes(
        (tmp_path / "b" / "manifest.json").read_bytes().replace(b'"svn":1', b'"svn":2')
    )
    result = sealpod("kube", "pod", tmp_path / "b", "--image", "r.example/d:1", "--tee", "snp",
                     "--kms", "https://k:1", "--kms-identity", KMS_ID, cwd=built)  # fmt: skip
    assert result.returncode == 4, result.stderr


def test_kube_kms_matches_the_base_with_flags(tmp_path: Path) -> None:
    result = sealpod("kube", "kms", "--image", "sealpod", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (KUSTOMIZE / "base" / "kms.yaml").read_text()
    result = sealpod("kube", "kms", "--image", "reg.example/sealpod:0.1.0", "--namespace", "kms",
                     "--replicas", "3", "--unseal", "shares", "--no-pcs", cwd=tmp_path)  # fmt: skip
    docs = validated(result.stdout)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert all(d["metadata"]["namespace"] == "kms" for d in docs)
    assert "--no-pcs" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    refused = sealpod("kube", "kms", "--image", "sealpod", "--replicas", "1", cwd=tmp_path)
    assert refused.returncode == 2 and "at least 2" in refused.stderr


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Kustomize overlays cannot be rendered here")
    version = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    try:
        client = json.loads(version.stdout)["clientVersion"]
        minor = int("".join(c for c in client["minor"] if c.isdigit()))
    except (ValueError, KeyError, TypeError):
        pytest.skip(f"cannot tell kubectl's version: {version.stderr.strip()[-200:]}")
    if (int(client["major"]), minor) < (1, 21):
        # Debian 12's kubernetes-client is 1.20: its kustomize has no `patches` or `replicas`.
        pytest.skip(f"kubectl {client['major']}.{minor} embeds a kustomize older than v4")
    return kubectl


@pytest.mark.parametrize("overlay", ["base", "overlays/production", "overlays/shamir"])
def test_kustomize_renders_and_validates(overlay: str) -> None:
    rendered = subprocess.run(
        [_kubectl(), "kustomize", str(KUSTOMIZE / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = validated(rendered)
    kinds = sorted(d["kind"] for d in docs)
    expected = [
        "Deployment",
        "Job",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    if overlay != "base":
        expected = sorted([*expected, "Namespace"])
        assert all(
            d["metadata"].get("namespace") == "sealpod" for d in docs if d["kind"] != "Namespace"
        )
    assert kinds == sorted(expected)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ("SEALPOD_KMS_MASTER_KEY" in env) == (overlay != "overlays/shamir")
    if overlay == "overlays/production":
        assert deployment["spec"]["replicas"] == 3


def test_kms_migrate(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'kms.db'}"
    result = sealpod("kms", "migrate", "--db", db, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["database"] == "sqlite" and doc["revision"]
    again = json.loads(sealpod("kms", "migrate", "--db", db, "--json", cwd=tmp_path).stdout)
    assert again["revision"] == doc["revision"]
    refused = sealpod("kms", "migrate", "--db", "mysql://x/y", cwd=tmp_path)
    assert refused.returncode == 2 and "expected sqlite or postgresql" in refused.stderr
