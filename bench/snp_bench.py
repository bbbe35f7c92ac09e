"""SEV-SNP report verification time, warm and cold, beside the ECDSA floor, in one run.

For each report (the real vectors S1 Milan and S5 Genoa from ../shared/vectors when present,
else a report of a freshly made simulated platform), N times each:

* ``floor: cryptography ECDSA-P384``: the bare report-signature check with a pre-loaded VCEK key
  and a pre-built DER signature — what any verifier must pay at least (the reference);
* ``floor: + chain (cold, naive)``: the same plus loading the three certificates and checking
  ARK, ASK and VCEK signatures with plain ``cryptography``, no caching;
* ``sealpod parse_report``: the codec alone;
* ``sealpod verify warm``: one :class:`SnpVerifier`, so the verified chain is cached by content
  hash and each call does the report checks and one ECDSA verification;
* ``sealpod verify cold``: a new verifier per call (certificates loaded, chain checked).

Usage::

    .venv/bin/python bench/snp_bench.py            # N = 300
    .venv/bin/python bench/snp_bench.py -n 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import median, percentile, table
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealpod.evidence.snp_report import SIGNED_SIZE, parse_report
from sealpod.verify import amd
from sealpod.verify.amd import split_certificates
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import DEFAULT_TRUST, TrustAnchors

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("SEALPOD_VECTORS", REPO.parent / "shared" / "vectors"))
GOAL_WARM_MS = 1.0


@dataclass(frozen=True)
class Case:
    name: str
    report: bytes
    vcek: bytes
    chain: bytes
    trust: TrustAnchors
    now: datetime


def real_cases() -> list[Case]:
    if not (VECTORS / "README.md").is_file():
        return []
    now = datetime(2025, 7, 1, tzinfo=UTC)

    def read(name: str) -> bytes:
        return (VECTORS / name).read_bytes()

    return [
        Case(
            "S1 Milan (go-sev-guest)",
            read("go-sev-guest/attestation.bin"),
            read("go-sev-guest/vcek.testcer"),
            read("go-sev-guest/ask_ark_milan.pem"),
            DEFAULT_TRUST,
            now,
        ),
        Case(
            "S5 Genoa (trustee)",
            read("trustee/snp/derived/e2e_genoa_report.reconstructed.bin"),
            read("trustee/snp/derived/e2e_genoa_vcek.der"),
            read("go-sev-guest/ask_ark_genoa.pem"),
            DEFAULT_TRUST,
            now,
        ),
    ]


def sim_case(home: Path) -> Case:
    from sealpod.tee.sim import SimIdentity, SimPlatform
    from sealpod.verify.claims import TeeKind

    platform = SimPlatform.load_or_init(home)
    evidence = platform.evidence(
        TeeKind.SNP, SimIdentity(measurement=b"\x01" * 32, signer=b"\x02" * 32), b"bench"
    )
    assert evidence.certificates is not None
    vcek, chain = split_certificates(evidence.certificates)
    trust = DEFAULT_TRUST.with_sim_roots(*platform.trust_anchors().sim_roots)
    return Case("simulated Milan", evidence.raw, vcek, chain, trust, datetime.now(UTC))


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm-up: imports, first-call costs
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def naive_chain_and_signature(case: Case) -> Callable[[], None]:
    """Plain cryptography, no caching: load VCEK/ASK/ARK, check 3 PSS + 1 ECDSA signatures."""
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    report = parse_report(case.report)
    signature = encode_dss_signature(*report.signature_rs)

    def run() -> None:
        with warnings.catch_warnings():  # the VCEK's serial 0 (the bench is single-threaded)
            warnings.simplefilter("ignore")
            vcek = x509.load_der_x509_certificate(case.vcek)
        certs = x509.load_pem_x509_certificates(case.chain)
        ask = next(c for c in certs if c.subject == vcek.issuer)
        ark = next(c for c in certs if c.subject == ask.issuer)
        for child, parent in ((ark, ark), (ask, ark), (vcek, ask)):
            key = parent.public_key()
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(child.signature, child.tbs_certificate_bytes, pss, hashes.SHA384())
        vcek_key = vcek.public_key()
        assert isinstance(vcek_key, ec.EllipticCurvePublicKey)
        vcek_key.verify(signature, case.report[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))

    return run


def bench_case(case: Case, n: int) -> list[list[object]]:
    report = parse_report(case.report)
    signature = encode_dss_signature(*report.signature_rs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = x509.load_der_x509_certificate(case.vcek).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    signed = case.report[:SIGNED_SIZE]

    def floor() -> None:
        key.verify(signature, signed, ec.ECDSA(hashes.SHA384()))

    warm_verifier = SnpVerifier(case.trust)

    def warm() -> None:
        warm_verifier.verify(case.report, vcek=case.vcek, chain=case.chain, now=case.now)

    def cold() -> None:
        amd.clear_caches()  # certificates parsed afresh, as for a chain never seen before
        SnpVerifier(case.trust).verify(case.report, vcek=case.vcek, chain=case.chain, now=case.now)

    runs = [
        ("floor: cryptography ECDSA-P384", timed(floor, n)),
        ("floor: + chain (cold, naive)", timed(naive_chain_and_signature(case), n)),
        ("sealpod parse_report", timed(lambda: parse_report(case.report), n)),
        ("sealpod verify warm", timed(warm, n)),
        ("sealpod verify cold", timed(cold, n)),
    ]
    base = median(runs[0][1])
    rows: list[list[object]] = []
    for name, samples in runs:
        med = median(samples)
        rows.append(
            [
                f"{case.name}: {name}",
                n,
                med,
                percentile(samples, 90),
                percentile(samples, 99),
                1000 / med if med else float("nan"),
                med / base if base else float("nan"),
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=300, help="iterations per measurement (>= 300)")
    args = parser.parse_args()
    n = max(300, args.n)
    cases = real_cases()
    with tempfile.TemporaryDirectory(prefix="sealpod-snp-bench-") as tmp:
        if not cases:
            print(f"(no vectors at {VECTORS}: using a simulated platform's report)")
            cases = [sim_case(Path(tmp))]
        rows: list[list[object]] = []
        for case in cases:
            rows += bench_case(case, n)
    table(
        "SEV-SNP report verification (ms per report)",
        ["case", "N", "median ms", "p90 ms", "p99 ms", "per s", "x floor"],
        rows,
    )
    warm = [r for r in rows if str(r[0]).endswith("sealpod verify warm")]
    worst = max(float(str(r[2])) for r in warm)
    verdict = "met" if worst <= GOAL_WARM_MS else "NOT met"
    print(
        f"\ngoal: warm SNP verification <= {GOAL_WARM_MS} ms median -> {verdict} ({worst:.3f} ms)"
    )


if __name__ == "__main__":
    main()
