"""DCAP quote verification time: sealpod beside Phala's dcap-qvl, same quotes, same run.

Two workloads, N verifications each (default 300):

- ``real``: the real SGX/TDX quotes of ../shared/vectors that both verifiers accept, cycled, each
  with its own Intel collateral at its pinned time.
- ``synthetic``: N distinct quotes (different report data, so a fresh quote signature each
  time) from one simulated platform, as a relying party sees a fleet of enclaves on a host;
  dcap-qvl verifies them against the synthetic root (``verify_with_root_ca``).

For sealpod, "cold" clears every verification cache before each quote (chains, collateral
signatures, parsed documents); "warm" keeps them (the steady state of a long-running verifier).
dcap-qvl has no cache: every call does all the work. Collateral objects are built once, outside
the timed region, for both.

    .venv/bin/python bench/verify_bench.py [--n 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import median, percentile, table

from sealpod.collateral.models import QuoteCollateral
from sealpod.testing import dcap_vectors as dv
from sealpod.testing.dcap_builders import DcapPki
from sealpod.verify.dcap import DcapVerifier, clear_caches
from sealpod.verify.trust import DEFAULT_TRUST, TrustAnchors

Case = tuple[str, bytes, QuoteCollateral, datetime]
REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(os.environ.get("SEALPOD_VECTORS", REPO.parent / "shared" / "vectors"))
# Vectors both verifiers accept with their default behaviour (dcap-qvl refuses debug and a
# non-zero MRSERVICETD, and cannot read TCB Info v2 or go without a PCK CRL).
REAL_IDS = ("Q1", "Q2", "Q3", "Q5", "Q6", "Q8", "Q9", "Q10")


def real_cases() -> list[Case]:
    if not (VECTORS / "README.md").is_file():
        return []
    out: list[Case] = []
    for vector in dv.A1:
        if vector.id in REAL_IDS:
            quote, collateral = vector.load(VECTORS)
            out.append((vector.id, quote, collateral, vector.times[-1]))
    return out


def synthetic_cases(pki: DcapPki, n: int) -> list[Case]:
    collateral = pki.collateral(tee="tdx")
    return [
        (f"syn{i}", pki.quote(tee="tdx", report_data=i.to_bytes(64, "big")).to_bytes(),
         collateral, pki.now)
        for i in range(n)
    ]  # fmt: skip


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / 1000.0  # microseconds


def measure_sealpod(
    cases: Sequence[Case], n: int, trust: TrustAnchors, *, cold: bool
) -> list[float]:
    verifier = DcapVerifier(trust)
    samples: list[float] = []
    if not cold:  # warm up once over every distinct quote
        for _, quote, collateral, now in cases:
            verifier.verify(quote, collateral, now=now)
    for i in range(n):
        _, quote, collateral, now = cases[i % len(cases)]
        if cold:
            clear_caches()
        samples.append(timed(lambda: verifier.verify(quote, collateral, now=now)))  # noqa: B023
    return samples


def measure_dcap_qvl(cases: Sequence[Case], n: int, root_der: bytes | None) -> list[float]:
    import dcap_qvl

    prepared = {
        id(collateral): dcap_qvl.QuoteCollateralV3.from_json(collateral.to_dcap_qvl_json())
        for _, _, collateral, _ in cases
    }
    samples: list[float] = []
    for i in range(n):
        _, quote, collateral, now = cases[i % len(cases)]
        qvl_collateral = prepared[id(collateral)]
        secs = int(now.timestamp())
        if root_der is None:
            samples.append(timed(lambda: dcap_qvl.verify(quote, qvl_collateral, secs)))  # noqa: B023
        else:
            samples.append(
                timed(lambda: dcap_qvl.verify_with_root_ca(quote, qvl_collateral, root_der, secs))  # noqa: B023
            )
    return samples


def row(name: str, samples: Sequence[float]) -> list[object]:
    return [
        name, len(samples), median(samples) / 1000, percentile(samples, 90) / 1000,
        percentile(samples, 99) / 1000, sum(samples) / len(samples) / 1000,
    ]  # fmt: skip


HEADER = ["verifier", "n", "median ms", "p90 ms", "p99 ms", "mean ms"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="verifications per row (>= 300)")
    args = parser.parse_args(argv)
    n = max(300, args.n)

    real = real_cases()
    if real:
        rows = [
            row("sealpod cold", measure_sealpod(real, n, DEFAULT_TRUST, cold=True)),
            row("sealpod warm", measure_sealpod(real, n, DEFAULT_TRUST, cold=False)),
            row("dcap-qvl", measure_dcap_qvl(real, n, None)),
        ]
        ids = ", ".join(c[0] for c in real)
        table(f"DCAP verify, real quotes ({ids}) cycled to n={n}", HEADER, rows)
    else:
        print(f"(real vectors not found at {VECTORS}: real-quote rows skipped)")

    pki = DcapPki.create(now=datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    synthetic = synthetic_cases(pki, n)
    trust = TrustAnchors(intel_roots=frozenset({pki.root_fingerprint()}), amd_arks=frozenset())
    clear_caches()
    rows = [
        row("sealpod cold", measure_sealpod(synthetic, n, trust, cold=True)),
        row("sealpod warm platform", _warm_platform(synthetic, trust)),
        row("sealpod warm", measure_sealpod(synthetic, n, trust, cold=False)),
        row("dcap-qvl", measure_dcap_qvl(synthetic, n, pki.root.public_bytes(Encoding.DER))),
    ]
    table(f"DCAP verify, {n} distinct TDX v4 quotes from one platform", HEADER, rows)


def _warm_platform(cases: Sequence[Case], trust: TrustAnchors) -> list[float]:
    """Chains and collateral already verified, but every quote seen for the first time."""
    clear_caches()
    verifier = DcapVerifier(trust)
    _, quote, collateral, now = cases[0]
    verifier.verify(quote, collateral, now=now)  # primes chains and collateral only
    return [
        timed(lambda: verifier.verify(q, c, now=t))  # noqa: B023
        for _, q, c, t in cases[1:]
    ]


if __name__ == "__main__":
    main()
