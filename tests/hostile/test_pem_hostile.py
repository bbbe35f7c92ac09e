"""Hostile PEM for sealpod.crypto.pem and every reader built on it: text assembled from armour
pieces, random bytes, and splices of a real block -> the reader's typed error (PemError from
the armour reader itself) or DER; never another exception, never a warning. Strict mode
round-trips what it accepts."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.collateral.models import crl_to_der
from sealpod.crypto import pem
from sealpod.errors import SealpodError
from sealpod.evidence.dcap_quote import _split_pem_chain
from sealpod.evidence.trustee_snp import der_certificates
from sealpod.ratls.certificate import certificate_der
from sealpod.testing.dcap_builders import build_certificate, new_key
from sealpod.verify import amd, x509util

_KEY = new_key()
DER = build_certificate(
    subject="pem hostile", key=_KEY, issuer=None, issuer_key=_KEY, ca=True,
    not_before=datetime(2024, 1, 1, tzinfo=UTC), not_after=datetime(2034, 1, 1, tzinfo=UTC),
    serial=5,
).public_bytes(Encoding.DER)  # fmt: skip
PEM = pem.encode_certificate(DER).encode("ascii")
BEGIN, END = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"

_PIECES = st.sampled_from(
    [
        BEGIN, END, b"-----BEGIN X509 CRL-----", b"-----END X509 CRL-----", b"-----BEGIN ",
        b"-----", b"\n", b"\r\n", b"\r", b" ", b"\t", b"\0", b"\x0b", b"MIIB", b"AAAA", b"AA==",
        b"MAR=", b"=", b"*", b"\xc3\xa9", b"\xff", PEM, PEM[:50], PEM[50:],
    ]
)  # fmt: skip
HOSTILE = st.one_of(
    st.lists(_PIECES, max_size=12).map(b"".join),
    st.binary(max_size=300),
    st.tuples(st.integers(0, len(PEM)), st.binary(max_size=8), st.integers(0, 6)).map(
        lambda t: PEM[: t[0]] + t[1] + PEM[t[0] + t[2] :]
    ),
)


def _typed(fn: Callable[[], object]) -> None:
    try:
        fn()
    except SealpodError:
        pass


@settings(max_examples=400, deadline=None)
@given(HOSTILE)
def test_the_armour_reader_raises_only_pem_error(data: bytes) -> None:
    for strict in (False, True):
        for label in (pem.CERTIFICATE, pem.X509_CRL):
            try:
                ders = pem.decode(data, label=label, strict=strict)
            except pem.PemError:
                continue
            assert ders and all(ders)
            if strict and label == pem.CERTIFICATE:
                # one spelling per DER: what strict mode accepts re-encodes to the same blocks
                again = b"".join(
                    BEGIN + b"\n" + base64.b64encode(d) + b"\n" + END + b"\n" for d in ders
                )
                assert pem.decode(again, strict=True) == ders


@settings(max_examples=300, deadline=None)
@given(HOSTILE)
def test_every_reader_raises_only_its_typed_error(data: bytes) -> None:
    text = data.decode("latin-1")
    _typed(lambda: amd.pem_blocks(data))
    _typed(lambda: amd.load_chain(data))
    _typed(lambda: amd.load_certificate(data, role="VCEK"))
    _typed(lambda: amd.split_certificates(data))
    _typed(lambda: x509util.pem_chain_to_der(data, what="chain", step="load"))
    _typed(lambda: x509util.pem_chain_to_der(text, what="chain", step="load"))
    _typed(lambda: certificate_der(data))
    _typed(lambda: der_certificates(text))
    _typed(lambda: crl_to_der(data))
    _typed(lambda: crl_to_der(text))
    _typed(lambda: _split_pem_chain(data, "PCK chain"))
