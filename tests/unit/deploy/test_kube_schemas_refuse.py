"""The validator the manifest tests lean on does refuse what Kubernetes refuses: a misspelt
field and a wrong type (otherwise "validated" would mean nothing)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from kube_schemas import VERSIONS, validate_all

from sealpod.deploy.kube_kms import KmsOptions, render_kms


@pytest.mark.parametrize("version", VERSIONS)
def test_a_misspelt_field_is_refused(version: str) -> None:
    deployment = copy.deepcopy(render_kms(KmsOptions())[2])
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wrong_type_is_refused(version: str) -> None:
    deployment = copy.deepcopy(render_kms(KmsOptions())[2])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_both_versions_are_checked() -> None:
    assert VERSIONS[0] == "1.30.0"
    assert tuple(int(x) for x in VERSIONS[1].split(".")[:2]) > (1, 30)
    assert validate_all(render_kms(KmsOptions())) == 6
