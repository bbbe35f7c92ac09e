"""x509util: pinned chains, CRL windows, DER strictness, content caches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealpod.errors import CertificateError, UntrustedRoot, ValidityError
from sealpod.testing.dcap_builders import DcapPki, build_crl
from sealpod.verify import x509util
from sealpod.verify.trust import TrustAnchors

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STEP = "Step X: test"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _with_unused_bits(der: bytes) -> bytes | None:
    """The same certificate with 1 unused bit declared in its signature BIT STRING, or None
    when the signature's last bit is set (then the trick does not apply)."""
    if der[-1] & 1:
        return None
    # the signature BIT STRING is the last element: 03 <len> 00 30 ...
    i = der.rindex(b"\x03", 0, len(der) - 70)
    while not (der[i + 2] == 0 and der[i + 3] == 0x30 and der[i + 1] == len(der) - i - 2):
        i = der.rindex(b"\x03", 0, i)
    return der[: i + 2] + b"\x01" + der[i + 3 :]


def test_signature_bit_string_must_be_der() -> None:
    for _ in range(40):
        pki = DcapPki.create(now=NOW)
        odd = _with_unused_bits(_der(pki.pck))
        if odd is not None:
            break
    else:  # pragma: no cover - 2**-40
        pytest.fail("no certificate with an even last signature byte")
    # cryptography accepts the other encoding and its signature still verifies ...
    lenient = x509.load_der_x509_certificate(odd)
    lenient.verify_directly_issued_by(pki.pck_ca)
    # ... sealpod refuses it, so that every byte of a PCK chain matters
    with pytest.raises(CertificateError, match="unused bits"):
        x509util.load_certificate(odd, what="PCK", step=STEP)


def _chain(pki: DcapPki) -> list[bytes]:
    return [_der(pki.pck), _der(pki.pck_ca), _der(pki.root)]


def test_verify_chain_reports_sim_and_root() -> None:
    pki = DcapPki.create(now=NOW)
    chain = x509util.verify_chain(_chain(pki), trust=pki.trust(), now=NOW, what="c", step=STEP)
    assert chain.simulated and chain.root_fingerprint == pki.root_fingerprint()
    vendor = TrustAnchors(intel_roots=frozenset({pki.root_fingerprint()}), amd_arks=frozenset())
    assert not x509util.verify_chain(
        _chain(pki), trust=vendor, now=NOW, what="c", step=STEP
    ).simulated
    with pytest.raises(UntrustedRoot):
        x509util.verify_chain(_chain(pki), trust=vendor, now=NOW, what="c", step=STEP, vendor="amd")


def test_chain_order_and_ca_flags() -> None:
    pki = DcapPki.create(now=NOW)
    chain = _chain(pki)
    with pytest.raises(CertificateError, match="certificate 0"):
        x509util.verify_chain(
            [chain[1], chain[0], chain[2]], trust=pki.trust(), now=NOW, what="c", step=STEP
        )
    with pytest.raises(CertificateError, match="1 certificates"):
        x509util.verify_chain(chain[2:], trust=pki.trust(), now=NOW, what="c", step=STEP)
    with pytest.raises(CertificateError, match="does not parse"):
        x509util.verify_chain(
            [b"\x30\x00", chain[2]], trust=pki.trust(), now=NOW, what="c", step=STEP
        )


def test_validity_edges() -> None:
    pki = DcapPki.create(now=NOW)
    chain = _chain(pki)
    before = pki.pck.not_valid_before_utc
    x509util.verify_chain(chain, trust=pki.trust(), now=before, what="c", step=STEP)
    with pytest.raises(ValidityError, match="not yet valid") as info:
        x509util.verify_chain(
            chain, trust=pki.trust(), now=before - timedelta(seconds=1), what="c", step=STEP
        )
    assert "Sealpod Test SGX PCK Certificate" in str(info.value)
    after = pki.pck.not_valid_after_utc
    x509util.verify_chain(chain, trust=pki.trust(), now=after, what="c", step=STEP)
    with pytest.raises(ValidityError, match="expired"):
        x509util.verify_chain(
            chain, trust=pki.trust(), now=after + timedelta(seconds=1), what="c", step=STEP
        )


def test_crl_window_is_half_open() -> None:
    pki = DcapPki.create(now=NOW)
    crl = build_crl(
        issuer=pki.root,
        issuer_key=pki.root_key,
        this_update=NOW,
        next_update=NOW + timedelta(hours=1),
    )
    x509util.check_crl(crl, _der(pki.root), now=NOW, what="CRL", step=STEP)
    with pytest.raises(ValidityError, match="not yet valid"):
        x509util.check_crl(
            crl, _der(pki.root), now=NOW - timedelta(seconds=1), what="CRL", step=STEP
        )
    with pytest.raises(ValidityError, match="not valid any more"):
        x509util.check_crl(crl, _der(pki.root), now=NOW + timedelta(hours=1), what="CRL", step=STEP)


def test_p256_helper() -> None:
    from sealpod.testing.dcap_builders import new_key, raw_point, sign_rs

    key = new_key()
    sig = sign_rs(key, b"data")
    point = b"\x04" + raw_point(key)
    assert x509util.p256_verifies(point, sig, b"data")
    assert not x509util.p256_verifies(point, sig, b"other")
    assert not x509util.p256_verifies(point, sig[:-1], b"data")
    assert not x509util.p256_verifies(b"\x04" + b"\x01" * 64, sig, b"data")
    assert not x509util.p256_verifies(b"", sig, b"data")


def test_clear_caches() -> None:
    pki = DcapPki.create(now=NOW)
    x509util.verify_chain(_chain(pki), trust=pki.trust(), now=NOW, what="c", step=STEP)
    assert x509util._chain_structure.cache_info().currsize > 0
    x509util.clear_caches()
    assert x509util._chain_structure.cache_info().currsize == 0


@pytest.mark.parametrize("serial", [0, -5])
def test_a_serial_that_is_not_positive_is_a_typed_refusal(serial: int) -> None:
    # Found by the hostile collateral fuzzer: a flipped byte made a serial zero, and
    # cryptography warned (a future release raises) instead of sealpod refusing.
    import ssl

    from asn1crypto import x509 as asn1_x509

    pki = DcapPki.create(now=NOW)
    cert = asn1_x509.Certificate.load(_der(pki.pck))
    cert["tbs_certificate"]["serial_number"] = serial
    der = cert.dump(force=True)
    with pytest.raises(CertificateError, match="expected a positive number"):
        x509util.load_certificate(der, what="PCK", step=STEP)
    pem = ssl.DER_cert_to_PEM_cert(der) + ssl.DER_cert_to_PEM_cert(_der(pki.pck_ca))
    with pytest.raises(CertificateError, match="expected a positive number"):
        x509util.pem_chain_to_der(pem, what="PCK chain", step=STEP)
