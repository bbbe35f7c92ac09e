"""Hostile certificate input for the AMD certificate loader: random bytes, PEM garbage, every
truncation and byte flip of a real serial-0 VCEK -> CertificateError or a certificate that then
fails its signature check (never another exception, never a warning)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import CertificateError
from sealpod.verify import amd


def _load(data: bytes) -> amd.AmdCertificate | None:
    try:
        return amd.load_certificate(data, role="VCEK")
    except CertificateError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _load(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_der_sequences(body: bytes) -> None:
    # Looks like a DER SEQUENCE with a correct long-form length: reaches the ASN.1 decoder.
    _load(b"\x30\x82" + len(body).to_bytes(2, "big") + body)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_random_pem_chains(text: str) -> None:
    pem = f"-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n".encode(
        "utf-8", "replace"
    )
    try:
        amd.load_chain(pem)
    except CertificateError:
        pass


def test_pem_without_blocks_and_too_many_blocks() -> None:
    with pytest.raises(CertificateError, match="no PEM certificate"):
        amd.load_chain(b"hello")
    block = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError, match="at most 8"):
        amd.load_chain(block * 9)
    with pytest.raises(CertificateError, match="at most"):
        amd.load_chain(b" " * (64 * 1024 + 1))


def test_oversized_certificate() -> None:
    with pytest.raises(CertificateError, match=r"expected 1\.\."):
        amd.load_certificate(b"\x30" * (16 * 1024 + 1), role="VCEK")


@pytest.mark.vectors
def test_every_truncation_of_a_real_vcek(vectors: Path) -> None:
    der = (vectors / "go-sev-guest/vcek.testcer").read_bytes()
    assert _load(der) is not None
    for size in range(len(der)):
        with pytest.raises(CertificateError):
            amd.load_certificate(der[:size], role="VCEK")


@pytest.mark.vectors
@pytest.mark.slow
def test_every_byte_flip_of_a_real_vcek_is_refused_by_load_or_signature(vectors: Path) -> None:
    der = (vectors / "go-sev-guest/vcek.testcer").read_bytes()
    ask, _ = amd.load_chain((vectors / "go-sev-guest/ask_ark_milan.pem").read_bytes())
    for offset in range(len(der)):
        flipped = bytearray(der)
        flipped[offset] ^= 0x01
        cert = _load(bytes(flipped))
        if cert is None:
            continue
        with pytest.raises(CertificateError):
            amd.check_signed_by(cert, ask, step="VCEK")
            amd.parse_endorsement_key(cert)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "pem",
    [
        b"-----BEGIN CERTIFICATE-----" + b" " * 60_000,
        b"-----BEGIN CERTIFICATE-----" * 2_000,
        (b"-----BEGIN CERTIFICATE-----\n" + b"A" * 60 + b"\n") * 700,
        b"-----END CERTIFICATE-----" * 2_500,
    ],
)
def test_pem_splitting_is_linear_on_hostile_input(pem: bytes) -> None:
    # A regular expression with overlapping whitespace classes took 39 s on 4 KB of these.
    with pytest.raises(CertificateError):
        amd.load_chain(pem)
