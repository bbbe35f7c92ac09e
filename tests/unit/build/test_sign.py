"""signature.json: every key type signs and verifies; tampering, wrong keys, swaps are refused."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from sealpod.build.keys import AuthorPrivateKey, KeyType, generate_key, signer_id
from sealpod.build.sign import (
    Algorithm,
    format_time,
    parse_signature_document,
    sign_measurement,
    signed_message,
    verify_signature,
)
from sealpod.errors import ConfigError, SignatureError

WHEN = datetime(2025, 3, 1, 12, 30, 45, tzinfo=UTC)
MEASUREMENT = hashlib.sha256(b"manifest").digest()
OTHER = hashlib.sha256(b"other manifest").digest()


@functools.cache
def key(kind: KeyType, n: int = 0) -> AuthorPrivateKey:
    return generate_key(kind)


@pytest.mark.parametrize("kind", list(KeyType))
def test_sign_and_verify(kind: KeyType) -> None:
    doc = sign_measurement(key(kind), MEASUREMENT, signed_at=WHEN)
    assert verify_signature(doc, MEASUREMENT) == signer_id(key(kind).public_key())
    assert doc.signed_at == "2025-03-01T12:30:45Z"
    assert doc.measurement == MEASUREMENT.hex()


def test_algorithms_are_named() -> None:
    names = {k: sign_measurement(key(k), MEASUREMENT, signed_at=WHEN).algorithm for k in KeyType}
    assert names == {
        KeyType.ED25519: Algorithm.ED25519,
        KeyType.ECDSA_P384: Algorithm.ECDSA_P384_SHA384,
        KeyType.RSA_3072: Algorithm.RSA_3072_PKCS1V15_SHA256,
    }


def test_signed_bytes_are_as_documented() -> None:
    # Independent check of the documented format with cryptography directly.
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    public = key(KeyType.ED25519).public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey)
    message = b"sealpod-bundle-signature/v1\x00" + MEASUREMENT + b"2025-03-01T12:30:45Z"
    assert signed_message(MEASUREMENT, doc.signed_at) == message
    public.verify(base64.b64decode(doc.signature), message)


def test_ed25519_signature_is_deterministic() -> None:
    a = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    b = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    assert a.to_json() == b.to_json()


def test_time_is_normalized_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 3, 1, 14, 30, 45, tzinfo=plus_two)) == "2025-03-01T12:30:45Z"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ConfigError, match="time zone"):
        sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=datetime(2025, 1, 1))


def test_wrong_size_measurement_is_refused() -> None:
    with pytest.raises(SignatureError, match="33 bytes"):
        sign_measurement(key(KeyType.ED25519), MEASUREMENT + b"x", signed_at=WHEN)


@pytest.mark.parametrize("kind", list(KeyType))
def test_tampered_manifest_is_refused(kind: KeyType) -> None:
    doc = sign_measurement(key(kind), MEASUREMENT, signed_at=WHEN)
    with pytest.raises(SignatureError, match="is for measurement"):
        verify_signature(doc, OTHER)


@pytest.mark.parametrize("kind", list(KeyType))
def test_measurement_field_rewritten_is_refused(kind: KeyType) -> None:
    # An attacker who edits the manifest and the measurement copy still lacks the signature.
    doc = sign_measurement(key(kind), MEASUREMENT, signed_at=WHEN)
    forged = doc.model_copy(update={"measurement": OTHER.hex()})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(forged, OTHER)


@pytest.mark.parametrize("kind", list(KeyType))
def test_wrong_key_is_refused(kind: KeyType) -> None:
    doc = sign_measurement(key(kind), MEASUREMENT, signed_at=WHEN)
    other = key(kind, 1)  # another key of the same type
    pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    swapped = doc.model_copy(
        update={"public_key": pem.decode(), "signer_id": signer_id(other.public_key()).hex()}
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(swapped, MEASUREMENT)


def test_swapped_signature_document_is_refused() -> None:
    # signature.json of another bundle, even by the same author
    theirs = sign_measurement(key(KeyType.ED25519), OTHER, signed_at=WHEN)
    with pytest.raises(SignatureError, match="another bundle"):
        verify_signature(theirs, MEASUREMENT)


def test_tampered_date_is_refused() -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    later = doc.model_copy(update={"signed_at": "2030-01-01T00:00:00Z"})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(later, MEASUREMENT)


def test_flipped_signature_bit_is_refused() -> None:
    doc = sign_measurement(key(KeyType.ECDSA_P384), MEASUREMENT, signed_at=WHEN)
    raw = bytearray(base64.b64decode(doc.signature))
    raw[-1] ^= 1
    bad = doc.model_copy(update={"signature": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(SignatureError, match="does not verify"):
        verify_signature(bad, MEASUREMENT)


def test_signer_pin() -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    mine = signer_id(key(KeyType.ED25519).public_key())
    assert verify_signature(doc, MEASUREMENT, signer=mine) == mine
    with pytest.raises(SignatureError, match=f"expected {'00' * 32}"):
        verify_signature(doc, MEASUREMENT, signer=bytes(32))


def test_inconsistent_signer_id_copy_is_refused() -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    with pytest.raises(SignatureError, match="signer_id"):
        verify_signature(doc.model_copy(update={"signer_id": "ab" * 32}), MEASUREMENT)


def test_algorithm_that_does_not_fit_the_key_is_refused() -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    bad = doc.model_copy(update={"algorithm": Algorithm.ECDSA_P384_SHA384})
    with pytest.raises(SignatureError, match="algorithm"):
        verify_signature(bad, MEASUREMENT)


def test_unsupported_key_in_document_is_refused() -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = p256.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = doc.model_copy(update={"public_key": pem.decode(), "signer_id": signer_id(p256).hex()})
    with pytest.raises(SignatureError, match="unsupported"):
        verify_signature(bad, MEASUREMENT)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("public_key", "not a pem", "not a PEM public key"),
        ("signature", "!!!", "not valid base64"),
    ],
)
def test_garbage_fields_are_refused(field: str, value: str, fragment: str) -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    with pytest.raises(SignatureError, match=fragment):
        verify_signature(doc.model_copy(update={field: value}), MEASUREMENT)


def test_document_round_trips_through_json() -> None:
    doc = sign_measurement(key(KeyType.RSA_3072), MEASUREMENT, signed_at=WHEN)
    again = parse_signature_document(doc.to_json())
    assert again == doc
    verify_signature(again, MEASUREMENT)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "malformed"),
        (b"{}", "malformed: format"),
        (b"[]", "malformed"),
        (b"x" * 70_000, "larger than"),
    ],
    ids=["not-json", "empty-object", "array", "huge"],
)
def test_malformed_documents_are_refused(raw: bytes, fragment: str) -> None:
    with pytest.raises(SignatureError, match=fragment):
        parse_signature_document(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [("extra", "x"), ("signed_at", "yesterday"), ("measurement", "AB" * 32), ("format", "v2")],
)
def test_document_shape_is_strict(field: str, value: str) -> None:
    signed = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    doc = signed.model_dump(mode="json")
    doc[field] = value
    with pytest.raises(SignatureError, match="malformed"):
        parse_signature_document(json.dumps(doc).encode())


@given(st.binary(max_size=600))
def test_arbitrary_signature_documents_raise_typed_errors(raw: bytes) -> None:
    try:
        doc = parse_signature_document(raw)
    except SignatureError:
        return
    with pytest.raises(SignatureError):
        verify_signature(doc, MEASUREMENT)


@given(st.data())
def test_any_change_to_a_signature_document_is_refused(data: st.DataObject) -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    fields = doc.model_dump(mode="json")
    name = data.draw(st.sampled_from(["signature", "signed_at", "public_key", "signer_id"]))
    text = str(fields[name])
    i = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != text[i]))
    fields[name] = text[:i] + replacement + text[i + 1 :]
    with pytest.raises(SignatureError):
        verify_signature(parse_signature_document(json.dumps(fields).encode()), MEASUREMENT)


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("public_key", lambda pem: pem + "\n"),
        ("public_key", lambda pem: pem.replace("\n", "\r\n")),
        ("signature", lambda sig: sig[:-3] + "\n" + sig[-3:]),
    ],
    ids=["pem-trailing-newline", "pem-crlf", "base64-newline"],
)
def test_equivalent_but_non_canonical_encodings_are_refused(field: str, edit: Any) -> None:
    doc = sign_measurement(key(KeyType.ED25519), MEASUREMENT, signed_at=WHEN)
    changed = doc.model_copy(update={field: edit(getattr(doc, field))})
    with pytest.raises(SignatureError, match=r"canonical|base64"):
        verify_signature(changed, MEASUREMENT)
