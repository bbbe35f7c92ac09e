"""SIGSTRUCT: a real vector, ones signed here, and a byte-flip table over every field."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import third_party_vector
from sealpod.build.keys import KeyType, generate_key
from sealpod.errors import EvidenceSignatureError, MalformedEvidence
from sealpod.gramine.sigstruct import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    parse_sigstruct,
    verify_sigstruct,
)
from sealpod.testing.sigstruct import make_sigstruct, resign


def real(name: str) -> Path:
    """A public third-party vector (see docs/sgx.md); skips when absent."""
    return third_party_vector("sgx", name)


KEY = cast(rsa.RSAPrivateKey, generate_key(KeyType.RSA_3072))
OTHER_KEY = cast(rsa.RSAPrivateKey, generate_key(KeyType.RSA_3072))
SIGNED = make_sigstruct(KEY, mr_enclave=bytes(range(32)), isv_prod_id=7, isv_svn=3)

# (field, offset, size): every region of the layout, by what a flip there must do.
CONSTANT = [("header", 0, 16), ("header2", 24, 16)]
RESERVED = [("reserved1", 44, 84), ("reserved2", 910, 2), ("reserved3", 992, 16),
            ("reserved4", 1028, 12)]  # fmt: skip
SIGNED_FIELDS = [("vendor", 16, 4), ("date", 20, 4), ("swdefined", 40, 4),
                 ("misc_select", 900, 4), ("misc_mask", 904, 4), ("cet_attributes", 908, 1),
                 ("cet_attributes_mask", 909, 1), ("isv_family_id", 912, 16),
                 ("attributes", 928, 16), ("attribute_mask", 944, 16), ("enclave_hash", 960, 32),
                 ("isv_ext_prod_id", 1008, 16), ("isv_prod_id", 1024, 2),
                 ("isv_svn", 1026, 2)]  # fmt: skip
KEY_FIELDS = [("modulus", 128, 384), ("exponent", 512, 4), ("signature", 516, 384),
              ("q1", 1040, 384), ("q2", 1424, 384)]  # fmt: skip


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_real_vector_from_enarx_parses_verifies_and_round_trips() -> None:
    raw = real("enarx-encl.ss").read_bytes()
    sig = parse_sigstruct(raw)
    verify_sigstruct(sig)
    assert sig.to_bytes() == raw
    # The values enarx's selftest asserts for this file (docs/sgx.md).
    assert (
        sig.mr_enclave.hex() == "b999536238fcf4e9d360ef6cd3e0c20ef8a684c7b93f74a9c4a4c6d517d61fc0"
    )
    assert (sig.vendor, sig.date, sig.isv_prod_id, sig.isv_svn) == (0, 0, 0, 0)
    assert sig.attribute_flags == 0x04 and not sig.debug  # MODE64BIT only
    assert sig.attribute_mask == bytes(16)
    assert sig.mr_signer == hashlib.sha256(sig.modulus).digest()
    assert sig.to_json()["mr_signer"] == sig.mr_signer.hex()


def test_signed_here_verifies_and_reports_identity() -> None:
    sig = parse_sigstruct(SIGNED)
    verify_sigstruct(sig)
    assert (sig.mr_enclave, sig.isv_prod_id, sig.isv_svn) == (bytes(range(32)), 7, 3)
    n = KEY.public_key().public_numbers().n
    assert sig.mr_signer == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert sig.date_text == "2026-03-15"
    assert parse_sigstruct(make_sigstruct(KEY, debug=True)).debug


@pytest.mark.parametrize(("name", "offset", "size"), CONSTANT + RESERVED)
def test_flip_in_constant_or_reserved_bytes_is_malformed(name: str, offset: int, size: int) -> None:
    for at in {offset, offset + size - 1}:
        with pytest.raises(MalformedEvidence) as info:
            parse_sigstruct(flip(SIGNED, at))
        assert info.value.field == name


@pytest.mark.parametrize(("name", "offset", "size"), SIGNED_FIELDS + KEY_FIELDS)
def test_flip_in_any_other_field_fails_the_signature_check(
    name: str, offset: int, size: int
) -> None:
    for at in {offset, offset + size // 2, offset + size - 1}:
        sig = parse_sigstruct(flip(SIGNED, at))  # structure is fine...
        with pytest.raises(EvidenceSignatureError):  # ...the signature is not
            verify_sigstruct(sig)


def test_every_byte_is_covered_by_the_tables() -> None:
    covered = set()
    for _, offset, size in CONSTANT + RESERVED + SIGNED_FIELDS + KEY_FIELDS:
        covered |= set(range(offset, offset + size))
    assert covered == set(range(SIGSTRUCT_SIZE))


def test_signed_by_another_key_verifies_but_has_another_mrsigner() -> None:
    theirs = parse_sigstruct(resign(parse_sigstruct(SIGNED), OTHER_KEY))
    verify_sigstruct(theirs)
    assert theirs.mr_enclave == parse_sigstruct(SIGNED).mr_enclave
    assert theirs.mr_signer != parse_sigstruct(SIGNED).mr_signer


def test_exponent_other_than_3_is_refused() -> None:
    sig = dataclasses.replace(parse_sigstruct(SIGNED), exponent=65537)
    with pytest.raises(EvidenceSignatureError, match="exponent"):
        verify_sigstruct(sig)


@pytest.mark.parametrize("size", [0, 1, SIGSTRUCT_SIZE - 1, SIGSTRUCT_SIZE + 1, 4096])
def test_wrong_size_is_malformed(size: int) -> None:
    with pytest.raises(MalformedEvidence, match="SIGSTRUCT is"):
        parse_sigstruct((SIGNED * 3)[:size])


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=SIGSTRUCT_SIZE, max_size=SIGSTRUCT_SIZE))
def test_random_bytes_are_malformed_or_fail_the_signature(raw: bytes) -> None:
    try:
        sig = parse_sigstruct(raw)
    except MalformedEvidence:
        return
    assert isinstance(sig, Sigstruct) and sig.to_bytes() == raw
    with pytest.raises(EvidenceSignatureError):
        verify_sigstruct(sig)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, SIGSTRUCT_SIZE - 1), st.integers(1, 255))
def test_any_single_byte_change_is_caught(offset: int, xor: int) -> None:
    data = bytearray(SIGNED)
    data[offset] ^= xor
    with pytest.raises((MalformedEvidence, EvidenceSignatureError)):
        verify_sigstruct(parse_sigstruct(bytes(data)))
