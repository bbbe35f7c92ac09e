"""RA-TLS: issue, inspect and verify sim certificates of every kind; refuse another measurement,
simulation without allow_simulation, evidence for another key, swapped claims, expired
certificates; the real Gramine / rats-tls / Intel SGX SDK certificates reach their verdicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import third_party_vector
from sealpod.errors import CollateralUnavailable, KeyBindingError, MalformedEvidence, ValidityError
from sealpod.policy.evaluate import Code
from sealpod.policy.model import Policy
from sealpod.ratls.certificate import (
    OID_GRAMINE_LEGACY_QUOTE,
    OID_TCG_DICE_EVIDENCE,
    parse_ratls_certificate,
)
from sealpod.ratls.evidence import parse_tagged_evidence
from sealpod.ratls.issue import issue_ratls_certificate
from sealpod.ratls.verify import inspect_certificate as _inspect
from sealpod.ratls.verify import verify_ratls_certificate
from sealpod.tee.sim import SimPlatform
from sealpod.verify.claims import TeeKind
from sealpod.verify.trust import DEFAULT_TRUST

from .conftest import IDENTITY, NOW, OTHER, backend


def real(name: str) -> Path:
    """A public third-party vector (see docs/ratls.md); skips when absent."""
    return third_party_vector("ratls", name)


SIM_OK = Policy(allow_simulation=True)


def inspect_certificate(data: bytes) -> Any:
    return _inspect(data)


def verify(sim: SimPlatform, cert: bytes, policy: Policy = SIM_OK, now: dt.datetime = NOW):  # type: ignore[no-untyped-def]
    return verify_ratls_certificate(
        cert, trust=sim.trust_anchors(), policy=policy, now=now,
        dcap_collateral=sim.dcap_collateral(now=now),
    )  # fmt: skip


def forge(cert_pem: bytes, *, oids: tuple[str, ...] = (OID_TCG_DICE_EVIDENCE,)) -> bytes:
    """A certificate for a NEW key carrying ``cert_pem``'s evidence extension(s) unchanged."""
    source = x509.load_pem_x509_certificate(cert_pem)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "forged")])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
    )  # fmt: skip
    for oid in oids:
        ext = source.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid))
        builder = builder.add_extension(ext.value, critical=False)
    return builder.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("emulate", ["sgx", "tdx", "snp"])
def test_issue_inspect_verify_every_kind(sim: SimPlatform, emulate: str) -> None:
    key_pem, cert_pem = issue_ratls_certificate(backend(sim, emulate=emulate), now=NOW)
    key = serialization.load_pem_private_key(key_pem, None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    info = inspect_certificate(cert_pem)
    assert info["binds_key"] is True and info["verified"] is False
    (ev,) = info["evidence"]
    assert ev["kind"] == emulate and ev["extension"] == "tcg-dice"
    assert "simulated" in ev["claimed_identity"]["root"]
    verdict = verify(sim, cert_pem)
    assert verdict.accepted
    assert verdict.claims.tee is TeeKind.SIM and verdict.claims.emulated.value == emulate
    assert verdict.claims.measurement.startswith(IDENTITY.measurement)


def test_sim_certificate_is_refused_without_allow_simulation(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim), now=NOW)
    verdict = verify(sim, cert, Policy())
    assert [v.code for v in verdict.violations] == [Code.SIMULATION_NOT_ALLOWED]


def test_another_measurement_is_refused(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim, OTHER), now=NOW)
    policy = Policy(allow_simulation=True, measurements=[IDENTITY.measurement.hex()])
    codes = [v.code for v in verify(sim, cert, policy).violations]
    assert codes == [Code.MEASUREMENT_NOT_ALLOWED]


def test_evidence_for_another_key_is_refused(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim), now=NOW)
    forged = forge(cert)
    info = inspect_certificate(forged)
    assert info["binds_key"] is False
    assert "another key" in info["evidence"][0]["binding_problem"]
    with pytest.raises(KeyBindingError) as err:
        verify(sim, forged)
    assert err.value.code == "verify.binding" and "step 3" in str(err.value.step)


def test_legacy_gramine_extension_binds_and_a_foreign_one_is_refused(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim), now=NOW, legacy_gramine=True)
    parsed = parse_ratls_certificate(cert)
    assert parsed.legacy_quote is not None and parsed.tcg is not None
    assert [e["extension"] for e in inspect_certificate(cert)["evidence"]] == [
        "tcg-dice", "gramine-legacy"
    ]  # fmt: skip
    assert verify(sim, cert).accepted
    # Only the legacy extension, for another key: refused too.
    with pytest.raises(KeyBindingError, match="gramine-legacy"):
        verify(sim, forge(cert, oids=(OID_GRAMINE_LEGACY_QUOTE,)))


def test_claims_swapped_under_the_quote_are_refused(sim: SimPlatform) -> None:
    import cbor2

    key = ec.generate_private_key(ec.SECP384R1())
    _, cert = issue_ratls_certificate(backend(sim), now=NOW)
    tcg = parse_ratls_certificate(cert).tcg
    assert tcg is not None
    from sealpod.ratls.evidence import encode_claims

    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The quote still binds the original claims; the claims now name the new key.
    value = cbor2.dumps(cbor2.CBORTag(tcg.tag, [tcg.evidence, encode_claims(spki)]))
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "swap")])
    forged = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(2).not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_TCG_DICE_EVIDENCE), value),
            critical=False,
        )
        .sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)
    )  # fmt: skip
    with pytest.raises(KeyBindingError, match="claims were swapped"):
        verify(sim, forged)


def test_expired_or_not_yet_valid_certificate_is_refused(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim), now=NOW, validity=dt.timedelta(hours=1))
    with pytest.raises(ValidityError):
        verify(sim, cert, now=NOW + dt.timedelta(hours=2))
    with pytest.raises(ValidityError):
        verify(sim, cert, now=NOW - dt.timedelta(hours=1))


def test_nonce_claim_is_carried(sim: SimPlatform) -> None:
    _, cert = issue_ratls_certificate(backend(sim), now=NOW, nonce=b"\x01" * 16)
    ev = inspect_certificate(cert)["evidence"][0]
    assert ev["claimed_identity"]["nonce"] == "01" * 16
    assert verify(sim, cert).accepted


# --- real certificates (docs/ratls.md, "Interoperability evidence") ---------------------------
REAL = {
    "gramine-cert.pem": ("0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585",
                         ["tcg-dice", "gramine-legacy"]),
    "rats-tls-cert.pem": ("38e1b40b8c68186f359c97ecb6a89965d9d8638f2df06fbe18e84d79a266c041",
                          ["tcg-dice"]),
    "intel-sgxsdk-cert.pem": ("09e218a4be9dadbf7cdc82c45497d6d4f676d3b75445fc37a376f0b65b47de6a",
                              ["tcg-dice"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_certificates_bind_their_key_and_claim_a_debug_enclave(name: str) -> None:
    mr_enclave, extensions = REAL[name]
    info = inspect_certificate(real(name).read_bytes())
    assert info["binds_key"] is True
    evidence = info["evidence"]
    assert [e["extension"] for e in evidence] == extensions
    for ev in evidence:
        identity = ev["claimed_identity"]
        assert ev["kind"] == "sgx"
        assert identity["mr_enclave"] == mr_enclave
        assert identity["debug"] is True  # DEBUG enclaves, as their sources say
        assert identity["root"] == "Intel SGX Root CA (pinned)"


def test_real_rats_tls_certificate_carries_custom_claims() -> None:
    tcg = parse_ratls_certificate(real("rats-tls-cert.pem").read_bytes()).tcg
    assert tcg is not None and sorted(tcg.claims) == ["key_0", "key_1", "pubkey-hash"]
    assert tcg.claims["key_0"] == b"value_0\x00"


def test_real_intel_sdk_certificate_quote_in_the_pck_oid_is_not_evidence() -> None:
    cert = parse_ratls_certificate(real("intel-sgxsdk-cert.pem").read_bytes())
    ext = cert.extension("1.2.840.113741.1.13.1")
    assert ext is not None and "SGX Extensions" in ext.name
    assert cert.legacy_quote is None  # only Gramine's 0.6.9.42.840.113741.1337.6 counts


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_certificates_need_intel_collateral_to_verify(name: str) -> None:
    cert = parse_ratls_certificate(real(name).read_bytes())
    when = cert.not_before + dt.timedelta(days=1)
    with pytest.raises(CollateralUnavailable):
        verify_ratls_certificate(
            cert, trust=DEFAULT_TRUST, policy=Policy(allow_debug=True), now=when
        )


def test_real_rats_tls_certificate_has_expired() -> None:
    with pytest.raises(ValidityError):
        verify_ratls_certificate(
            real("rats-tls-cert.pem").read_bytes(), trust=DEFAULT_TRUST, policy=Policy(),
            now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        )  # fmt: skip


def test_evidence_round_trips_for_real_certificates() -> None:
    for name in REAL:
        tcg = parse_ratls_certificate(real(name).read_bytes()).tcg
        assert tcg is not None
        assert parse_tagged_evidence(tcg.to_bytes()) == tcg


def test_a_certificate_without_evidence_is_malformed() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "plain")])
    plain = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(3).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )  # fmt: skip
    with pytest.raises(MalformedEvidence, match="no RA-TLS evidence"):
        parse_ratls_certificate(plain)
