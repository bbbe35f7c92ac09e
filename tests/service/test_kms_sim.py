"""The KMS with the real verifier and real simulated evidence (DCAP quotes, SNP reports signed
by this test's simulated platform), through the ASGI transport."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from kms_data import SECRET_VALUES, policy_toml

from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.errors import AttestationRefused, UntrustedRoot
from sealpod.kms.store import Store
from sealpod.kms.verifier import (
    AppraisalVerifier,
    CachingCollateralProvider,
    WouldBlock,
    build_verifier,
    no_blocking_io,
)
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform
from sealpod.tee.sim_config import SGX_FMSPC
from sealpod.verify.claims import TcbStatus, TeeKind
from sealpod.verify.trust import DEFAULT_TRUST

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio

IDENTITY = SimIdentity(
    measurement=hashlib.sha256(b"sim workload").digest(),
    signer=hashlib.sha256(b"sim author").digest(),
    product_id=7,
    svn=3,
)


@pytest.fixture
def platform(sim_home: Path) -> SimPlatform:
    return SimPlatform.load(sim_home)


def real_verifier(home: Path) -> AppraisalVerifier:
    return build_verifier(trust_sim=True, home=home)


@pytest.fixture
async def sim_kms(kms_sqlite_store: Store, sim_home: Path) -> AsyncIterator[KmsHarness]:
    from kms_harness import running_kms

    policy = policy_toml(measurements=[IDENTITY.measurement], ttl=120)
    async with running_kms(
        kms_sqlite_store,
        policy=policy,
        verifier=real_verifier(sim_home),
        start=datetime.now(UTC),
    ) as harness:
        yield harness


async def test_release_with_simulated_sgx_quote(sim_kms: KmsHarness, platform: SimPlatform) -> None:
    backend = SimBackend(platform, IDENTITY, "sgx")
    got = await sim_kms.workload.fetch_secrets(
        backend, IDENTITY.measurement, ["db-password", "api-key"]
    )
    assert got["db-password"].value == SECRET_VALUES["db-password"]
    session = await sim_kms.workload.attest(backend, IDENTITY.measurement)
    assert session.claims["tee"] == "sim" and session.claims["emulated"] == "sgx"
    assert session.claims["svn"] == 3 and session.claims["product_id"] == 7


async def test_sim_evidence_refused_without_allow_simulation(
    sim_kms: KmsHarness, platform: SimPlatform
) -> None:
    await sim_kms.put_policy(
        "workload-a", policy_toml(measurements=[IDENTITY.measurement], allow_simulation=False)
    )
    with pytest.raises(AttestationRefused) as info:
        await sim_kms.workload.attest(SimBackend(platform, IDENTITY, "sgx"), IDENTITY.measurement)
    assert {getattr(v, "code", "") for v in info.value.violations} == {"simulation_not_allowed"}


async def test_sim_quote_for_another_bundle_refused(
    sim_kms: KmsHarness, platform: SimPlatform
) -> None:
    other = SimIdentity(measurement=hashlib.sha256(b"tampered").digest(), signer=IDENTITY.signer)
    with pytest.raises(AttestationRefused) as info:
        await sim_kms.workload.attest(SimBackend(platform, other, "sgx"), other.measurement)
    assert {getattr(v, "code", "") for v in info.value.violations} == {"measurement_not_allowed"}


async def test_sim_debug_enclave_refused(sim_kms: KmsHarness, platform: SimPlatform) -> None:
    debug = SimIdentity(
        measurement=IDENTITY.measurement, signer=IDENTITY.signer, product_id=7, svn=3, debug=True
    )
    with pytest.raises(AttestationRefused) as info:
        await sim_kms.workload.attest(SimBackend(platform, debug, "sgx"), debug.measurement)
    assert {getattr(v, "code", "") for v in info.value.violations} == {"debug_not_allowed"}


async def test_sim_out_of_date_tcb_refused(
    kms_sqlite_store: Store, platform: SimPlatform, sim_home: Path
) -> None:
    from kms_harness import running_kms

    outdated = platform.set_tcb(TcbStatus.OUT_OF_DATE, ("INTEL-SA-00615",))
    policy = policy_toml(measurements=[IDENTITY.measurement])
    try:
        async with running_kms(
            kms_sqlite_store,
            policy=policy,
            verifier=real_verifier(sim_home),
            start=datetime.now(UTC),
        ) as kms:
            with pytest.raises(AttestationRefused) as info:
                await kms.workload.attest(
                    SimBackend(outdated, IDENTITY, "sgx"), IDENTITY.measurement
                )
    finally:
        outdated.set_tcb(TcbStatus.UP_TO_DATE)
    assert {getattr(v, "code", "") for v in info.value.violations} == {"tcb_status_not_accepted"}


async def test_sim_snp_report_with_workload_allow_list(
    sim_kms: KmsHarness, platform: SimPlatform
) -> None:
    # A CVM: the policy pins the VM's launch measurement (48 bytes); the container measurement
    # is bound in report_data and checked against [release].workloads.
    backend = SimBackend(platform, IDENTITY, "snp")
    vm_measurement = IDENTITY.measurement + bytes(16)
    await sim_kms.put_policy(
        "cvm",
        policy_toml(
            measurements=[vm_measurement],
            secrets=["other"],
            extra="",
        ).replace("[release]\n", f'[release]\nworkloads = ["{IDENTITY.measurement.hex()}"]\n'),
    )
    session = await sim_kms.workload.attest(backend, IDENTITY.measurement, tee="snp")
    assert session.policies == ("cvm",) and session.claims["emulated"] == "snp"
    assert (await sim_kms.workload.fetch(session, "other")).value == SECRET_VALUES["other"]
    stranger = hashlib.sha256(b"another container").digest()
    with pytest.raises(AttestationRefused) as info:
        await sim_kms.workload.attest(backend, stranger, tee="snp")
    codes = {getattr(v, "code", "") for v in info.value.violations}
    assert "workload_not_allowed" in codes


async def test_generated_tls_certificate_chains_to_the_kms_ca(
    sim_kms: KmsHarness, platform: SimPlatform
) -> None:
    r = await sim_kms.http.put(
        "/v1/admin/secrets/tls",
        json={"generate": "tls-cert", "dns": ["app.example", "10.1.2.3"]},
        headers=sim_kms.auth(),
    )
    assert r.status_code == 201, r.text
    await sim_kms.put_policy(
        "workload-a",
        policy_toml(measurements=[IDENTITY.measurement], secrets=["tls", "db-password"]),
    )
    backend = SimBackend(platform, IDENTITY, "sgx")
    first = (await sim_kms.workload.fetch_secrets(backend, IDENTITY.measurement, ["tls"]))["tls"]
    second = (await sim_kms.workload.fetch_secrets(backend, IDENTITY.measurement, ["tls"]))["tls"]
    pems = first.json()
    assert first.content_type == "application/json"
    cert = x509.load_pem_x509_certificate(pems["cert"].encode())
    ca = x509.load_pem_x509_certificate(pems["ca"].encode())
    ca_pub = ca.public_key()
    assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert second.json()["key"] != pems["key"]  # a fresh key per release
    r = await sim_kms.http.get("/v1/ca")
    assert r.text == pems["ca"]


class CountingCollateral:
    """A collateral source that counts fetches and says which thread asked."""

    def __init__(self, inner: DcapCollateralProvider) -> None:
        self.inner = inner
        self.threads: list[str] = []

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        self.threads.append(threading.current_thread().name)
        return self.inner.get(fmspc, ca, tee)


def test_cache_miss_inside_no_blocking_io_would_block(platform: SimPlatform) -> None:
    counting = CountingCollateral(platform.dcap_collateral())
    cache = CachingCollateralProvider(counting)
    key = (SGX_FMSPC.hex(), "platform", TeeKind.SGX)
    with no_blocking_io(), pytest.raises(WouldBlock):
        cache.get(*key)
    assert counting.threads == []  # nothing was fetched on the loop
    first = cache.get(*key)
    with no_blocking_io():
        assert cache.get(*key) is first  # a hit answers inline
    assert len(counting.threads) == 1


async def test_cold_collateral_is_fetched_off_the_loop_then_served_inline(
    kms_sqlite_store: Store, sim_home: Path, platform: SimPlatform
) -> None:
    from kms_harness import running_kms

    sim = SimPlatform.load(sim_home)
    counting = CountingCollateral(sim.dcap_collateral())
    verifier = AppraisalVerifier(
        trust=DEFAULT_TRUST.with_sim_roots(*sim.trust_anchors().sim_roots),
        dcap_collateral=CachingCollateralProvider(counting),
    )
    policy = policy_toml(measurements=[IDENTITY.measurement], ttl=120)
    async with running_kms(
        kms_sqlite_store, policy=policy, verifier=verifier, start=datetime.now(UTC)
    ) as kms:
        backend = SimBackend(platform, IDENTITY, "sgx")
        loop_thread = threading.current_thread().name
        for _ in range(3):
            got = await kms.workload.fetch_secrets(backend, IDENTITY.measurement, ["api-key"])
            assert got["api-key"].value == SECRET_VALUES["api-key"]
        # One fetch, on a worker thread; the two later attestations used the cache inline.
        assert len(counting.threads) == 1 and counting.threads[0] != loop_thread
        records = [r for r in await kms.audit() if r["kind"] == "attest"]
        assert [r["outcome"] for r in records] == ["ok"] * 3  # the retry wrote no extra record


@pytest.mark.parametrize("emulate", ["sgx", "tdx"])
def test_a_kms_without_trust_sim_refuses_simulated_quotes_at_once_naming_the_flag(
    platform: SimPlatform, emulate: str
) -> None:
    # With PCS on, the simulated FMSPC used to go to Intel (17 s of retries, then a bare 503).
    verifier = build_verifier(trust_sim=False, pcs=True)
    evidence = SimBackend(platform, IDENTITY, emulate).get_evidence(b"\x01" * 64)  # type: ignore[arg-type]
    with pytest.raises(UntrustedRoot, match="--trust-sim") as info:
        verifier.verify(evidence.to_envelope(), now=datetime.now(UTC))
    assert "allow_simulation" in info.value.message
