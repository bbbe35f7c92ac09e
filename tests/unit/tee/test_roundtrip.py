"""Evidence from every backend -> the real verifiers -> claims -> policy.

Simulated evidence must verify through exactly the code that verifies hardware evidence, come
back as ``tee = sim`` with the emulated kind, carry the bundle's identity and the report data,
and be refused by any policy without ``allow_simulation``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from sealpod.build.bundle import Bundle
from sealpod.crypto.binding import attestation_report_data
from sealpod.errors import (
    EvidenceSignatureError,
    MalformedEvidence,
    SealpodError,
    TcbError,
    UntrustedRoot,
)
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.policy.evaluate import evaluate
from sealpod.policy.model import Policy
from sealpod.tee.base import Evidence, TeeBackend
from sealpod.tee.sim import Emulated, SimBackend, SimPlatform, bundle_identity
from sealpod.testing.fake_tsm import FakeTsm
from sealpod.testing.sim_fakes import sim_gramine, sim_tsm_producer
from sealpod.verify.claims import TcbStatus, TeeKind, VerifiedClaims
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.pck import pck_extensions
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import DEFAULT_TRUST

pytestmark = pytest.mark.timeout(120)
NONCE = bytes(range(32))
PUBLIC_KEY = b"0Y0\x13\x06\x07*\x86H\xce=\x02\x01" + bytes(66)  # shape only; it is hashed


def _verify(sim: SimPlatform, evidence: Evidence, *, trust_sim: bool = True) -> VerifiedClaims:
    now = dt.datetime.now(dt.UTC)
    trust = (
        DEFAULT_TRUST.with_sim_roots(*sim.trust_anchors().sim_roots) if trust_sim else DEFAULT_TRUST
    )
    if evidence.tee is TeeKind.SNP:
        assert evidence.certificates is not None
        return SnpVerifier(trust).verify(
            evidence.raw, vcek=sim.vcek_der(), chain=evidence.certificates, now=now
        )
    quote = parse_quote(evidence.raw)
    kind = TeeKind.TDX if quote.is_tdx else TeeKind.SGX
    leaf = quote.signature_data.certification_data.certificates()[0]
    fmspc = pck_extensions(x509.load_der_x509_certificate(leaf)).fmspc.hex()
    collateral = sim.dcap_collateral().get(fmspc, "platform", kind)
    return DcapVerifier(trust).verify(evidence.raw, collateral, now=now)


def _policy(bundle: Bundle, *, allow_simulation: bool = True, **extra: object) -> Policy:
    data: dict[str, object] = {
        "signer": bundle.signer_id.hex(),
        "min_svn": bundle.manifest.identity.svn,
        "allow_simulation": allow_simulation,
        **extra,
    }
    return Policy.model_validate(data)


@pytest.fixture
def report_data(bundle: Bundle) -> bytes:
    return attestation_report_data(NONCE, PUBLIC_KEY, bundle.measurement)


SOURCES: dict[str, TeeKind] = {
    "sim-sgx": TeeKind.SGX,
    "sim-tdx": TeeKind.TDX,
    "sim-snp": TeeKind.SNP,
    "gramine": TeeKind.SGX,
    "tsm-tdx": TeeKind.TDX,
    "tsm-snp": TeeKind.SNP,
}


@pytest.fixture(params=list(SOURCES))
def evidence_source(
    request: pytest.FixtureRequest, sim: SimPlatform, bundle: Bundle, tmp_path: Path
) -> Iterator[tuple[TeeBackend, TeeKind]]:
    name: str = request.param
    kind = SOURCES[name]
    identity = bundle_identity(bundle)
    if name.startswith("sim-"):
        emulate: Emulated = (
            "sgx" if kind is TeeKind.SGX else ("tdx" if kind is TeeKind.TDX else "snp")
        )
        yield SimBackend(sim, identity, emulate), kind
    elif name == "gramine":
        with sim_gramine(sim, identity, tmp_path / "attestation") as fake:
            yield fake.backend(), kind
    else:
        provider = "tdx_guest" if kind is TeeKind.TDX else "sev_guest"
        producer = sim_tsm_producer(sim, identity, provider)
        with FakeTsm(tmp_path / "report", provider=provider, producer=producer) as tsm:
            yield tsm.backend(), kind


def test_every_backend_round_trips(
    sim: SimPlatform,
    bundle: Bundle,
    report_data: bytes,
    evidence_source: tuple[TeeBackend, TeeKind],
) -> None:
    backend, kind = evidence_source
    evidence = backend.get_evidence(report_data)
    claims = _verify(sim, evidence)
    assert claims.tee is TeeKind.SIM
    assert claims.emulated is kind
    assert claims.report_data == report_data
    assert claims.tcb_status is TcbStatus.UP_TO_DATE
    assert claims.debug is False
    if claims.emulated is TeeKind.SGX:
        assert claims.measurement == bundle.measurement
        assert claims.signer == bundle.signer_id
        assert claims.product_id == bundle.manifest.identity.product_id
        assert claims.svn == bundle.manifest.identity.svn
    else:  # CVMs: the launch measurement field holds the workload's, zero-extended (sim_quote)
        assert claims.measurement == bundle.measurement + bytes(16)
    if claims.emulated is TeeKind.SNP:
        assert claims.svn == bundle.manifest.identity.svn
    # The policy a relying party writes for this bundle accepts it, simulation allowed...
    policy = _policy(bundle, measurements=[claims.measurement.hex()])
    if claims.emulated is not TeeKind.SGX:  # CVM claims carry no signer (nor TDX an svn)
        policy = policy.model_copy(update={"signer": None, "min_svn": None})
    assert evaluate(policy, claims, expected_report_data=report_data) == []
    # ...and refuses it, by name, when simulation is not allowed.
    strict = policy.model_copy(update={"allow_simulation": False})
    codes = [v.code for v in evaluate(strict, claims, expected_report_data=report_data)]
    assert codes == ["simulation_not_allowed"]


@pytest.mark.parametrize("kind", ["sgx", "tdx", "snp"])
def test_changed_bundle_is_refused(
    sim: SimPlatform, bundle: Bundle, other_bundle: Bundle, report_data: bytes, kind: Emulated
) -> None:
    claims = _verify(
        sim, SimBackend(sim, bundle_identity(other_bundle), kind).get_evidence(report_data)
    )
    pad = b"" if kind == "sgx" else bytes(16)
    policy = Policy.model_validate(
        {"measurements": [(bundle.measurement + pad).hex()], "allow_simulation": True}
    )
    codes = [v.code for v in evaluate(policy, claims, expected_report_data=report_data)]
    assert codes == ["measurement_not_allowed"]


def test_changed_bundle_breaks_the_report_data_binding(
    sim: SimPlatform, bundle: Bundle, other_bundle: Bundle
) -> None:
    # A CVM runtime binds the container measurement into report_data (docs/protocol.md, CVM
    # binding): evidence
    # bound to another bundle fails the relying party's recomputation.
    bound_elsewhere = attestation_report_data(NONCE, PUBLIC_KEY, other_bundle.measurement)
    expected = attestation_report_data(NONCE, PUBLIC_KEY, bundle.measurement)
    claims = _verify(
        sim, SimBackend(sim, bundle_identity(bundle), "tdx").get_evidence(bound_elsewhere)
    )
    codes = [
        v.code
        for v in evaluate(Policy(allow_simulation=True), claims, expected_report_data=expected)
    ]
    assert codes == ["report_data_mismatch"]


def test_changed_report_data_is_refused(
    sim: SimPlatform, bundle: Bundle, report_data: bytes
) -> None:
    claims = _verify(sim, SimBackend(sim, bundle_identity(bundle)).get_evidence(b"\x00" * 64))
    codes = [v.code for v in evaluate(_policy(bundle), claims, expected_report_data=report_data)]
    assert codes == ["report_data_mismatch"]


def test_older_svn_is_refused(sim: SimPlatform, bundle: Bundle, report_data: bytes) -> None:
    claims = _verify(sim, SimBackend(sim, bundle_identity(bundle)).get_evidence(report_data))
    policy = _policy(bundle, min_svn=bundle.manifest.identity.svn + 1)
    assert [v.code for v in evaluate(policy, claims)] == ["svn_too_low"]


def _flip(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


# Offsets: header (qe_svn), body (mr_enclave / report_data), signature, attestation key,
# QE report, QE report signature, and inside the PEM chain.
@pytest.mark.parametrize(
    "offset", [8, 48 + 64, 48 + 320, 436 + 10, 436 + 70, 436 + 200, 436 + 520, -300]
)
def test_tampered_sgx_quote_is_refused(
    sim: SimPlatform, bundle: Bundle, report_data: bytes, offset: int
) -> None:
    evidence = SimBackend(sim, bundle_identity(bundle)).get_evidence(report_data)
    tampered = Evidence(tee=TeeKind.SGX, raw=_flip(evidence.raw, offset % len(evidence.raw)))
    with pytest.raises(SealpodError) as info:
        _verify(sim, tampered)
    assert isinstance(info.value, (EvidenceSignatureError, MalformedEvidence, SealpodError))
    assert info.value.code.startswith(("verify", "evidence"))


@pytest.mark.parametrize("offset", [0x08, 0x50, 0x90, 0x1A0, 0x2A0, 0x2E8])
def test_tampered_snp_report_is_refused(
    sim: SimPlatform, bundle: Bundle, report_data: bytes, offset: int
) -> None:
    evidence = SimBackend(sim, bundle_identity(bundle), "snp").get_evidence(report_data)
    tampered = Evidence(
        tee=TeeKind.SNP, raw=_flip(evidence.raw, offset), certificates=evidence.certificates
    )
    with pytest.raises(SealpodError) as info:
        _verify(sim, tampered)
    assert info.value.code.startswith(("verify", "evidence"))


@pytest.mark.parametrize("kind", ["sgx", "tdx", "snp"])
def test_sim_roots_are_untrusted_by_default(
    sim: SimPlatform, bundle: Bundle, kind: Emulated
) -> None:
    evidence = SimBackend(sim, bundle_identity(bundle), kind).get_evidence(b"x")
    with pytest.raises(UntrustedRoot):
        _verify(sim, evidence, trust_sim=False)


@pytest.mark.parametrize("status", [s for s in TcbStatus if s is not TcbStatus.REVOKED], ids=str)
@pytest.mark.parametrize("kind", ["sgx", "tdx"])
def test_every_set_tcb_status_comes_back(
    sim: SimPlatform, bundle: Bundle, status: TcbStatus, kind: Emulated
) -> None:
    updated = sim.set_tcb(status, ("INTEL-SA-00615",))
    claims = _verify(updated, SimBackend(updated, bundle_identity(bundle), kind).get_evidence(b"r"))
    assert claims.tcb_status is status
    assert "INTEL-SA-00615" in claims.advisory_ids
    accepted = status in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED)
    codes = [v.code for v in evaluate(Policy(allow_simulation=True), claims)]
    assert codes == ([] if accepted else ["tcb_status_not_accepted"])


@pytest.mark.parametrize("kind", ["sgx", "tdx"])
def test_revoked_tcb_comes_back_as_revoked(
    sim: SimPlatform, bundle: Bundle, kind: Emulated
) -> None:
    updated = sim.set_tcb(TcbStatus.REVOKED)
    evidence = SimBackend(updated, bundle_identity(bundle), kind).get_evidence(b"r")
    with pytest.raises(TcbError, match="Revoked"):
        _verify(updated, evidence)


def test_debug_enclave_is_reported_and_refused(sim: SimPlatform, bundle: Bundle) -> None:
    identity = dataclasses.replace(bundle_identity(bundle), debug=True)
    kinds: tuple[Emulated, ...] = ("sgx", "tdx", "snp")
    for kind in kinds:
        claims = _verify(sim, SimBackend(sim, identity, kind).get_evidence(b"r"))
        assert claims.debug
        assert "debug_not_allowed" in [
            v.code for v in evaluate(Policy(allow_simulation=True), claims)
        ]
