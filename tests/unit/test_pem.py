"""sealpod.crypto.pem: the one PEM reader, and the places that used their own before."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealpod.crypto import pem
from sealpod.errors import EvidenceGenerationError, MalformedEvidence
from sealpod.evidence.trustee_snp import certificates_pem, der_certificates
from sealpod.ratls.certificate import certificate_der
from sealpod.tee.snp_certs import build_cert_table
from sealpod.tee.tsm import snp_certificates_pem
from sealpod.testing.dcap_builders import build_certificate, new_key


def _cert(serial: int = 7) -> bytes:
    key = new_key()
    cert = build_certificate(
        subject="pem test", key=key, issuer=None, issuer_key=key, ca=False,
        not_before=datetime(2024, 1, 1, tzinfo=UTC), not_after=datetime(2034, 1, 1, tzinfo=UTC),
        serial=max(serial, 1),
    )  # fmt: skip
    der = cert.public_bytes(Encoding.DER)
    if serial > 0:
        return der
    # cryptography will not build serial 0 (AMD's VCEKs have it): re-encode the serial only.
    patched = asn1_x509.Certificate.load(der)
    patched["tbs_certificate"]["serial_number"] = serial
    return bytes(patched.dump(force=True))


DER_A, DER_B = _cert(), _cert(9)
PEM_A, PEM_B = pem.encode_certificate(DER_A).encode(), pem.encode_certificate(DER_B).encode()


def test_round_trip_and_order() -> None:
    assert pem.decode(PEM_A + PEM_B) == (DER_A, DER_B)
    assert pem.decode((PEM_A + PEM_B).replace(b"\n", b"\r\n"), strict=True) == (DER_A, DER_B)


def test_lenient_ignores_text_outside_blocks_strict_does_not() -> None:
    text = b"subject=CN = pem test\n" + PEM_A + b"Bag Attributes\n" + PEM_B
    assert pem.decode(text) == (DER_A, DER_B)
    for bad in (text, PEM_A + b"x", PEM_A + b"\0", b"x" + PEM_A):
        with pytest.raises(pem.PemError, match="other than PEM blocks"):
            pem.decode(bad, strict=True)


@pytest.mark.parametrize("strict", [False, True])
def test_body_must_be_base64(strict: bool) -> None:
    # asn1crypto's unarmor (which ratls.certificate used) dropped the '*' and read the DER.
    lines = PEM_A.split(b"\n")
    lines[1] = lines[1][:10] + b"*" + lines[1][10:]
    with pytest.raises(pem.PemError, match="not valid base64"):
        pem.decode(b"\n".join(lines), strict=strict)


def test_strict_refuses_non_canonical_base64_and_missing_line_break() -> None:
    assert base64.b64decode(b"MAR=") == base64.b64decode(b"MAQ=")
    block = b"-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n"
    assert pem.decode(block % b"MAR=") == (b"0\x04",)  # lenient, as OpenSSL
    with pytest.raises(pem.PemError, match="canonical"):
        pem.decode(block % b"MAR=", strict=True)
    with pytest.raises(pem.PemError, match="line break"):
        pem.decode(PEM_A.replace(b"-----\n", b"-----", 1), strict=True)


def test_empty_unterminated_missing_and_too_many_blocks() -> None:
    with pytest.raises(pem.PemError, match="no PEM certificate block"):
        pem.decode(b"hello")
    with pytest.raises(pem.PemError, match="no PEM x509 crl block"):
        pem.decode(PEM_A, label=pem.X509_CRL)
    with pytest.raises(pem.PemError, match="empty"):
        pem.decode(b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n")
    with pytest.raises(pem.PemError, match="no END line"):
        pem.decode(PEM_A[:-30])
    with pytest.raises(pem.PemError, match="at most 2"):
        pem.decode(PEM_A * 3, max_blocks=2)


def test_linear_on_hostile_input() -> None:
    started = time.perf_counter()
    for text in (b"-----BEGIN CERTIFICATE-----" * 40_000, b" \n" * 500_000 + b"x"):
        with pytest.raises(pem.PemError):
            pem.decode(text, strict=True)
    assert time.perf_counter() - started < 2


def test_is_pem_only_at_the_start() -> None:
    assert pem.is_pem(b"\r\n " + PEM_A)
    assert not pem.is_pem(b"\x30\x82" + PEM_A)


def test_ratls_certificate_pem_with_a_foreign_byte_is_refused() -> None:
    assert certificate_der(PEM_A) == DER_A
    lines = PEM_A.split(b"\n")
    lines[2] = b"!" + lines[2]
    with pytest.raises(MalformedEvidence, match="base64"):
        certificate_der(b"\n".join(lines))


def test_trustee_certificates_garbage_is_a_typed_error() -> None:
    certs = [("vcek", _cert(0)), ("ask", DER_B)]
    assert der_certificates(certificates_pem(certs)) == [der for _, der in certs]
    # ssl.PEM_cert_to_DER_cert read these as b"\x03\x80" and b"" (its base64 decoder is lax)
    for garbage in ("-----BEGIN CERTIFICATE-----\nA*4A=\n", "-----BEGIN CERTIFICATE-----\n"):
        with pytest.raises(MalformedEvidence):
            der_certificates(garbage + "-----END CERTIFICATE-----\n")


def test_tsm_auxblob_vcek_with_serial_zero_becomes_pem_without_a_warning() -> None:
    # cryptography warns on serial 0 (pytest turns that into an error), and real VCEKs have it
    vcek = _cert(0)
    out = snp_certificates_pem(build_cert_table({"vcek": vcek, "ask": DER_B}))
    assert out is not None
    assert pem.decode(out) == (vcek, DER_B)
    with pytest.raises(EvidenceGenerationError, match="not a DER certificate"):
        snp_certificates_pem(build_cert_table({"vcek": b"\x30\x03\x02\x01\x00"}))


def test_tsm_auxblob_entry_in_pem_is_refused_not_armoured_twice() -> None:
    # amd.load_certificate also reads PEM, so a PEM entry passed the check and was then armoured
    # as if it were DER (base64 of the PEM text). The table holds DER.
    with pytest.raises(EvidenceGenerationError, match="not a DER certificate"):
        snp_certificates_pem(build_cert_table({"vcek": PEM_A}))
