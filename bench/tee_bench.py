"""Evidence generation and verification on the simulated platform, beside references.

In one run, on one machine:

* generation: ``SimPlatform.sgx_quote`` / ``tdx_quote`` / ``snp_report`` beside the raw
  signatures they cannot avoid (two ECDSA P-256 signs for a quote: QE report and quote; one
  ECDSA P-384 sign for an SNP report) — the difference is sealpod's building and encoding;
* the configfs-tsm and Gramine paths through the fake trees (FIFOs served by a thread) beside the
  direct call, i.e. the cost of the file protocol;
* verification: sealpod's ``DcapVerifier`` (warm caches) beside dcap-qvl's
  ``verify_with_root_ca`` (Rust) on the same quote and collateral; ``SnpVerifier`` beside one raw
  ECDSA P-384 verify.

Medians of ``--n`` runs (after one warm-up). Usage::

    .venv/bin/python bench/tee_bench.py            # n=50
    .venv/bin/python bench/tee_bench.py --n 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dcap_qvl
from _report import median, percentile, table
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.testing.fake_tsm import FakeTsm
from sealpod.testing.sim_fakes import sim_gramine, sim_tsm_producer
from sealpod.verify.claims import TeeKind
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.snp import SnpVerifier

IDENTITY = SimIdentity(measurement=b"\x11" * 32, signer=b"\x22" * 32, product_id=1, svn=1)
REPORT_DATA = b"\x5a" * 64


def timed(fn: Callable[[], object], n: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def row(name: str, samples: list[float], reference: str, ref: list[float]) -> list[object]:
    m, r = median(samples), median(ref)
    return [name, m, percentile(samples, 95), reference, r, m / r if r else float("nan")]


def _dcap_row(
    sim: SimPlatform, kind: TeeKind, quote: bytes, now: dt.datetime, n: int
) -> list[object]:
    """DcapVerifier (warm) beside dcap-qvl on the same quote, collateral and root."""
    collateral = sim.collateral(kind, now=now)
    model = collateral.to_model()
    qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_dcap_qvl_json())
    root, secs = sim.cert_der("sgx-root"), int(now.timestamp())
    verifier = DcapVerifier(sim.trust_anchors())

    def ours() -> object:
        return verifier.verify(quote, model, now=now)

    def theirs() -> object:
        return dcap_qvl.verify_with_root_ca(quote, qvl_collateral, root, secs)

    return row(
        f"DcapVerifier {kind.value} (warm)", timed(ours, n), "dcap-qvl (Rust)", timed(theirs, n)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    n: int = args.n
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        start = time.perf_counter()
        sim = SimPlatform.init(home)
        init_ms = (time.perf_counter() - start) * 1000
        p256 = ec.generate_private_key(ec.SECP256R1())
        p384 = ec.generate_private_key(ec.SECP384R1())

        def two_p256_signs() -> None:
            p256.sign(b"x" * 432, ec.ECDSA(hashes.SHA256()))
            p256.sign(b"y" * 384, ec.ECDSA(hashes.SHA256()))

        def one_p384_sign() -> None:
            p384.sign(b"x" * 672, ec.ECDSA(hashes.SHA384()))

        ref_quote = timed(two_p256_signs, n)
        ref_snp = timed(one_p384_sign, n)
        sgx = timed(lambda: sim.sgx_quote(IDENTITY, REPORT_DATA), n)
        tdx = timed(lambda: sim.tdx_quote(IDENTITY, REPORT_DATA), n)
        snp = timed(lambda: sim.snp_report(IDENTITY, REPORT_DATA), n)
        producer = sim_tsm_producer(sim, IDENTITY, "tdx_guest")
        with FakeTsm(home / "tsm" / "report", producer=producer) as tsm:
            backend = tsm.backend()
            via_tsm = timed(lambda: backend.get_evidence(REPORT_DATA), n)
        with sim_gramine(sim, IDENTITY, home / "attestation") as fake:
            gramine = fake.backend()
            via_gramine = timed(lambda: gramine.get_evidence(REPORT_DATA), n)
        table(
            "evidence generation, ms",
            ["sealpod", "median", "p95", "reference", "ref median", "ratio"],
            [
                row("sim sgx_quote", sgx, "2x ECDSA P-256 sign", ref_quote),
                row("sim tdx_quote", tdx, "2x ECDSA P-256 sign", ref_quote),
                row("sim snp_report", snp, "1x ECDSA P-384 sign", ref_snp),
                row("tsm fake (FIFOs) tdx", via_tsm, "sim tdx_quote direct", tdx),
                row("gramine fake (FIFOs) sgx", via_gramine, "sim sgx_quote direct", sgx),
            ],
        )

        now = dt.datetime.now(dt.UTC)
        anchors = sim.trust_anchors()
        rows = [
            _dcap_row(sim, kind, quote, now, n)
            for kind, quote in (
                (TeeKind.SGX, sim.sgx_quote(IDENTITY, REPORT_DATA)),
                (TeeKind.TDX, sim.tdx_quote(IDENTITY, REPORT_DATA)),
            )
        ]
        report = sim.snp_report(IDENTITY, REPORT_DATA)
        snp_verifier = SnpVerifier(anchors)
        vcek, chain = sim.vcek_der(), sim.snp_chain()
        ours = timed(lambda: snp_verifier.verify(report, vcek=vcek, chain=chain, now=now), n)
        sig = p384.sign(b"x" * 672, ec.ECDSA(hashes.SHA384()))
        pub = p384.public_key()
        raw_verify = timed(lambda: pub.verify(sig, b"x" * 672, ec.ECDSA(hashes.SHA384())), n)
        rows.append(row("SnpVerifier (warm)", ours, "1x ECDSA P-384 verify", raw_verify))
        table(
            "verification of simulated evidence, ms",
            ["sealpod", "median", "p95", "reference", "ref median", "ratio"],
            rows,
        )
        print(f"\nsim init (8 EC keys, 2 RSA-4096 keys, 8 certificates): {init_ms:.0f} ms")


if __name__ == "__main__":
    main()
