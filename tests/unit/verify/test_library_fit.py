"""Canaries for why asn1crypto stays beside cryptography (docs/architecture.md, "ASN.1 and PEM").

Each test pins a fact about ``cryptography`` that makes sealpod read some DER with asn1crypto.
When a release changes one, the test fails and the asn1crypto use it justifies can go.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from sealpod.errors import CertificateError
from sealpod.testing.dcap_builders import build_certificate, new_key
from sealpod.verify import x509util


def _signed(*extensions: x509.ExtensionType, ca: bool = False) -> x509.Certificate:
    key = new_key()
    return build_certificate(
        subject="canary", key=key, issuer=None, issuer_key=key, ca=ca, serial=5,
        not_before=datetime(2024, 1, 1, tzinfo=UTC), not_after=datetime(2034, 1, 1, tzinfo=UTC),
        extensions=extensions,
    )  # fmt: skip


def _der() -> bytes:
    return _signed(ca=True).public_bytes(Encoding.DER)


def test_ecdsa_with_a_null_parameter_is_refused_by_cryptography() -> None:
    # Gramine's mbedTLS writes it: ratls.certificate reads RA-TLS certificates with asn1crypto.
    cert = asn1_x509.Certificate.load(_der())
    cert["signature_algorithm"]["parameters"] = core.Null()
    cert["tbs_certificate"]["signature"]["parameters"] = core.Null()
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(cert.dump(force=True))


def test_signature_bit_string_padding_is_accepted_by_cryptography() -> None:
    # Another encoding of the same certificate that verifies: x509util refuses it via asn1crypto.
    # (cryptography does check that the "unused" bit is zero: take a signature ending in one.)
    der = bytearray(next(d for d in iter(_der, None) if d[-1] % 2 == 0))
    signature = x509.load_der_x509_certificate(bytes(der)).signature
    at = len(der) - len(signature) - 3  # the last field: BIT STRING, short length, unused bits
    assert der[at : at + 3] == bytes([0x03, len(signature) + 1, 0])
    der[at + 2] = 1  # one "unused" bit
    padded = x509.load_der_x509_certificate(bytes(der))
    padded.verify_directly_issued_by(padded)
    with pytest.raises(CertificateError, match="unused bits"):
        x509util.load_certificate(bytes(der), what="canary", step="test")


def test_a_serial_of_zero_makes_cryptography_warn() -> None:
    # AMD's VCEKs have serial 0: verify.amd re-encodes it, x509util refuses it, both before
    # cryptography sees it; the PEM reader (sealpod.crypto.pem) does not parse certificates.
    cert = asn1_x509.Certificate.load(_der())
    cert["tbs_certificate"]["serial_number"] = 0
    with pytest.warns(CryptographyDeprecationWarning):
        x509.load_der_x509_certificate(cert.dump(force=True))


def test_private_extensions_are_raw_bytes_in_cryptography() -> None:
    # No generic DER decoder: the SGX and AMD extension values are decoded with asn1crypto.
    oid = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
    cert = _signed(x509.UnrecognizedExtension(oid, b"\x30\x00"))
    value = cert.extensions.get_extension_for_oid(oid).value
    assert isinstance(value, x509.UnrecognizedExtension)
    assert value.value == b"\x30\x00"
