"""``render_kms``: the key broker's manifests, validated against the Kubernetes API schemas,
the properties the issue asks for, what it refuses, and the Kustomize base being its output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kube_schemas import validate_all

from sealpod import __version__
from sealpod.deploy.kube_common import dump_yaml
from sealpod.deploy.kube_kms import KMS_UID, KmsOptions, render_kms
from sealpod.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
BASE = REPO / "deploy" / "kubernetes" / "base" / "kms.yaml"


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def kms_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return c


def test_defaults_validate_and_hold_every_part() -> None:
    docs = render_kms(KmsOptions())
    assert validate_all(docs) == 6
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Job",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]


def test_deployment_is_ha_probed_and_scraped() -> None:
    docs = render_kms(KmsOptions(namespace="sealpod", image="reg.example/sealpod:1", replicas=3))
    validate_all(docs)
    dep = by_kind(docs)["Deployment"]
    assert dep["metadata"]["namespace"] == "sealpod"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    c = kms_container(docs)
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert by_kind(docs)["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_secrets_come_from_secrets_never_from_argv() -> None:
    docs = render_kms(KmsOptions())
    c = kms_container(docs)
    env = {e["name"]: e for e in c["env"]}
    assert env["SEALPOD_KMS_DB_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "sealpod-kms-db",
        "key": "url",
    }
    assert env["SEALPOD_KMS_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "sealpod-kms-master-key"
    )
    assert "value" not in env["SEALPOD_KMS_MASTER_KEY"]
    assert "--master-key-file" not in c["args"] and "--db" not in c["args"]
    tls = [
        v
        for v in by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "tls"
    ]
    assert tls == [
        {"name": "tls", "secret": {"secretName": "sealpod-kms-tls", "defaultMode": 0o440}}
    ]
    assert c["args"][c["args"].index("--tls-key") + 1] == "/etc/sealpod/tls/tls.key"


def test_shares_mode_keeps_the_key_out_of_the_cluster() -> None:
    docs = render_kms(KmsOptions(unseal="shares"))
    validate_all(docs)
    names = {e["name"] for e in kms_container(docs)["env"]}
    assert "SEALPOD_KMS_MASTER_KEY" not in names and "SEALPOD_KMS_DB_URL" in names


def test_non_root_read_only_and_no_token() -> None:
    docs = render_kms(KmsOptions())
    for kind in ("Deployment", "Job"):
        pod = by_kind(docs)[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == KMS_UID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = pod["containers"][0]["securityContext"]
        assert sc == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
    assert by_kind(docs)["ServiceAccount"]["automountServiceAccountToken"] is False


def test_migration_job_runs_alembic_through_sealpod() -> None:
    job = by_kind(render_kms(KmsOptions()))["Job"]
    assert job["metadata"]["name"] == f"sealpod-kms-migrate-{__version__.replace('.', '-')}"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["sealpod"] and c["args"] == ["kms", "migrate"]
    assert {e["name"] for e in c["env"]} == {"SEALPOD_HOME", "SEALPOD_KMS_DB_URL"}


def test_network_policy_limits_both_ways() -> None:
    policy = by_kind(render_kms(KmsOptions(db_port=6432)))["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    egress_ports = sorted(p["port"] for rule in policy["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 6432]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"replicas": 1}, "at least 2"),
        ({"replicas": 0}, "at least 2"),
        ({"replicas": 65}, "at most 64"),
        ({"image": "UPPER case"}, "image is"),
        ({"name": "kms_1"}, "name is"),
        ({"db_secret": "a/b"}, "secret name is"),
        ({"port": 0}, "port is"),
        ({"memory_limit": "1 GB"}, "memory limit is"),
    ],
)
def test_refused(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        render_kms(KmsOptions(**kw))


def test_the_kustomize_base_is_this_output() -> None:
    """deploy/kubernetes/base/kms.yaml is generated; regenerate it with
    `sealpod kube kms --image sealpod -o deploy/kubernetes/base/kms.yaml`."""
    assert BASE.read_text() == dump_yaml(render_kms(KmsOptions()))


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=70)


@settings(max_examples=120, deadline=None)
@given(name=_TEXT, namespace=_TEXT, image=_TEXT, quantity=_TEXT)
def test_hostile_values_are_refused_or_valid(
    name: str, namespace: str, image: str, quantity: str
) -> None:
    """Whatever a user types into the flags: a ConfigError or manifests the API accepts."""
    try:
        docs = render_kms(
            KmsOptions(name=name, namespace=namespace, image=image, memory_request=quantity)
        )
    except ConfigError:
        return
    validate_all(docs)
