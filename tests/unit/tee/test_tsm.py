"""configfs-tsm backend against the fake tree (a thread plays the kernel, the sim makes quotes)."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealpod.errors import EvidenceGenerationError, TeeUnavailable
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.evidence.snp_report import parse_report
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.tee.tsm import TsmBackend, snp_certificates_pem
from sealpod.testing.fake_tsm import FakeTsm, Producer
from sealpod.testing.sim_fakes import sim_tsm_producer
from sealpod.verify.claims import TeeKind
from sealpod.verify.snp import SnpVerifier

pytestmark = pytest.mark.timeout(60)
REPORT_DATA = b"\x5a" * 64


@pytest.fixture
def report_root(tmp_path: Path) -> Path:
    return tmp_path / "tsm" / "report"


def _fake(
    root: Path,
    sim: SimPlatform,
    identity: SimIdentity,
    provider: str = "tdx_guest",
    *,
    races: int = 0,
    omit: frozenset[str] = frozenset(),
) -> FakeTsm:
    producer = sim_tsm_producer(sim, identity, provider)
    return FakeTsm(root, provider=provider, producer=producer, races=races, omit=omit)


@pytest.fixture
def tdx(report_root: Path, sim: SimPlatform, identity: SimIdentity) -> Iterator[FakeTsm]:
    with _fake(report_root, sim, identity) as fake:
        yield fake
    assert fake.errors == []


def test_tdx_quote_through_configfs(tdx: FakeTsm, identity: SimIdentity) -> None:
    evidence = tdx.backend().get_evidence(REPORT_DATA)
    assert evidence.tee is TeeKind.TDX and evidence.source == "tsm"
    quote = parse_quote(evidence.raw)
    assert quote.body.report_data == REPORT_DATA
    assert quote.body.mr_td[:32] == identity.measurement  # type: ignore[union-attr]
    assert tdx.live_entries() == []  # the entry was removed


def test_snp_report_and_certificate_table(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with _fake(report_root, sim, identity, "sev_guest") as fake:
        evidence = fake.backend(privlevel=1).get_evidence(REPORT_DATA)
    assert fake.errors == []
    assert evidence.tee is TeeKind.SNP
    report = parse_report(evidence.raw)
    assert report.vmpl == 1 and report.report_data == REPORT_DATA
    assert evidence.certificates is not None
    certs = x509.load_pem_x509_certificates(evidence.certificates)
    assert [c.subject.rfc4514_string().split("CN=")[1].split(",")[0] for c in certs] == [
        "SIMULATED SEV-VCEK", "SIMULATED SEV-Milan", "SIMULATED ARK-Milan",
    ]  # fmt: skip
    claims = SnpVerifier(sim.trust_anchors()).verify(
        evidence.raw, vcek=certs[0].public_bytes(Encoding.DER),
        chain=evidence.certificates, now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    assert claims.tee is TeeKind.SIM and claims.emulated is TeeKind.SNP
    assert claims.snp is not None and claims.snp.vmpl == 1


def test_generation_race_is_retried(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with _fake(report_root, sim, identity, races=1) as fake:
        evidence = fake.backend().get_evidence(REPORT_DATA)
    # First attempt saw another writer's inblob (generation moved by 2); the retry is clean.
    assert fake.entries_made == 2 and fake.outblob_reads == 2
    assert parse_quote(evidence.raw).body.report_data == REPORT_DATA


def test_endless_race_gives_up_with_a_clear_error(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with _fake(report_root, sim, identity, races=10) as fake:
        with pytest.raises(EvidenceGenerationError, match=r"another writer .* 3 attempts"):
            fake.backend(attempts=3).get_evidence(REPORT_DATA)
        assert fake.live_entries() == []


def test_missing_provider_means_no_tsm_driver(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with FakeTsm(report_root, provider=None, producer=lambda i, p: (b"", b"")) as fake:
        with pytest.raises(TeeUnavailable, match="no TSM provider is registered"):
            fake.backend().get_evidence(REPORT_DATA)


def test_missing_provider_attribute_is_named(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    with _fake(report_root, sim, identity, omit=frozenset({"provider"})) as fake:
        with pytest.raises(TeeUnavailable, match="no 'provider' attribute"):
            fake.backend().get_evidence(REPORT_DATA)
        assert fake.live_entries() == []


def test_unsupported_provider_is_named(report_root: Path) -> None:
    with FakeTsm(report_root, provider="arm_cca_guest", producer=lambda i, p: (b"", b"")) as f:
        with pytest.raises(TeeUnavailable, match="'arm_cca_guest', expected one of sev_guest"):
            f.backend().get_evidence(REPORT_DATA)


def _truncating(inner: Producer, size: int) -> Producer:
    def producer(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        out, aux = inner(inblob, privlevel)
        return out[:size], aux

    return producer


@pytest.mark.parametrize(
    ("provider", "size"), [("tdx_guest", 600), ("sev_guest", 1000), ("tdx_guest", 0)]
)
def test_short_outblob(
    report_root: Path, sim: SimPlatform, identity: SimIdentity, provider: str, size: int
) -> None:
    producer = _truncating(sim_tsm_producer(sim, identity, provider), size)
    with FakeTsm(report_root, provider=provider, producer=producer) as fake:
        with pytest.raises(EvidenceGenerationError, match=f"outblob is {size} bytes, expected"):
            fake.backend().get_evidence(REPORT_DATA)


def test_outblob_for_other_report_data_is_refused(
    report_root: Path, sim: SimPlatform, identity: SimIdentity
) -> None:
    def liar(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
        return sim.tdx_quote(identity, b"\x00" * 64), b""

    with FakeTsm(report_root, producer=liar) as fake:
        with pytest.raises(EvidenceGenerationError, match="other report data"):
            fake.backend().get_evidence(REPORT_DATA)


def test_no_configfs_names_the_missing_directory(tmp_path: Path) -> None:
    backend = TsmBackend(tmp_path / "absent" / "report")
    with pytest.raises(TeeUnavailable, match=r"absent/report is absent .*CONFIG_TSM_REPORTS"):
        backend.get_evidence(REPORT_DATA)


def test_concurrent_requests_each_get_their_own_entry(tdx: FakeTsm) -> None:
    backend = tdx.backend()
    results: dict[int, bytes] = {}

    def worker(i: int) -> None:
        results[i] = parse_quote(backend.get_evidence(bytes([i]) * 64).raw).body.report_data

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: bytes([i]) * 64 for i in range(6)}
    assert tdx.live_entries() == []


def test_malformed_certificate_table_is_an_error() -> None:
    with pytest.raises(EvidenceGenerationError, match="certificate table"):
        snp_certificates_pem(b"\x01" * 30)
    assert snp_certificates_pem(b"") is None
    assert snp_certificates_pem(bytes(24)) is None


def test_entry_names_are_unique_and_ours(tdx: FakeTsm) -> None:
    names: list[str] = []
    original = tdx.mkdir

    def spy(path: Path) -> None:
        names.append(path.name)
        original(path)

    tdx.mkdir = spy  # type: ignore[method-assign]
    backend = tdx.backend()
    for _ in range(3):
        backend.get_evidence(REPORT_DATA)
    assert len(set(names)) == 3
    assert all(n.startswith(f"sealpod-{os.getpid()}-") for n in names)


class _StuckRmdir:
    """ConfigfsOps whose rmdir fails (a busy entry), over a real fake tree."""

    def __init__(self, fake: FakeTsm) -> None:
        self.fake = fake

    def mkdir(self, path: Path) -> None:
        self.fake.mkdir(path)

    def rmdir(self, path: Path) -> None:
        raise OSError(16, "Device or resource busy", str(path))


def test_rmdir_failure_is_reported_after_success(tdx: FakeTsm) -> None:
    backend = TsmBackend(tdx.root, ops=_StuckRmdir(tdx))
    with pytest.raises(EvidenceGenerationError, match="could not remove report entry"):
        backend.get_evidence(REPORT_DATA)


def test_rmdir_failure_does_not_hide_the_first_error(report_root: Path) -> None:
    with FakeTsm(report_root, provider="arm_cca_guest", producer=lambda i, p: (b"", b"")) as fake:
        backend = TsmBackend(fake.root, ops=_StuckRmdir(fake))
        with pytest.raises(TeeUnavailable, match="arm_cca_guest"):
            backend.get_evidence(REPORT_DATA)
