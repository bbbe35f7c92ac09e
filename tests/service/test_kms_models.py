"""Protocol models: strict parsing, and no secret in any repr or str."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from sealpod.errors import MalformedEvidence
from sealpod.kms.client import AttestedSession, ReleasedSecret
from sealpod.kms.codec import b64decode
from sealpod.kms.models import (
    AttestationResponse,
    SecretPut,
    SecretRotate,
    SecretValue,
    UnsealRequest,
    UserAdd,
    UserCreated,
)
from sealpod.kms.state import InitResult

SECRET = "c2VjcmV0LXZhbHVlLTQyNDI0Mg=="  # base64 of the value


@pytest.mark.parametrize(
    "obj",
    [
        SecretPut(value=SECRET),
        SecretRotate(value=SECRET),
        SecretValue(name="n", version=1, kind="value", value=SECRET),
        UnsealRequest(share=SECRET),
        UserCreated(name="u", role="admin", token=SECRET),
        ReleasedSecret("n", 1, "x", b"secret-value-424242"),
        AttestedSession(SECRET, ec.generate_private_key(ec.SECP256R1()), (), (), 0, {}),
        InitResult(admin_name="root", admin_token=SECRET, shares=(), threshold=0, key_id="k"),
        AttestationResponse(
            token=SECRET, expires_at="t", expires_at_unix=0, secrets=[], policies=[], claims={}
        ),
    ],
)
def test_no_secret_in_repr_or_str(obj: object) -> None:
    for text in (repr(obj), str(obj)):
        assert SECRET not in text and "secret-value-424242" not in text


@pytest.mark.parametrize(
    "data",
    [
        {"name": "x", "role": "root"},
        {"name": "../x", "role": "admin"},
        {"name": "x", "role": "admin", "extra": 1},
        {"name": 5, "role": "admin"},
    ],
)
def test_user_add_is_strict(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UserAdd.model_validate(data)


def test_b64decode_accepts_both_alphabets_and_bounds_size() -> None:
    assert b64decode("-_8", field="f") == b"\xfb\xff"
    assert b64decode("+/8=", field="f") == b"\xfb\xff"
    with pytest.raises(MalformedEvidence, match="field f is 4 bytes"):
        b64decode("AAAAAA==", field="f", max_size=3)
    with pytest.raises(MalformedEvidence, match="not base64"):
        b64decode("a$b", field="f")
