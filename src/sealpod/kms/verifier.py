"""The KMS's real :class:`~sealpod.kms.service.AttestationVerifier`: evidence is appraised by
:func:`sealpod.verify.appraise` (DCAP for SGX/TDX, the SNP verifier for SEV-SNP) under pinned
vendor roots, plus — only when the operator asks for it — this host's simulated platform.

DCAP collateral comes from a chain of providers, each cached for a few minutes (collateral is
signed by Intel and changes rarely; re-fetching it per attestation would make the KMS as slow as
the network). Trusting the simulated platform adds its root fingerprints to the trust anchors:
its evidence then verifies with ``tee = "sim"`` and every policy still refuses it unless it says
``allow_simulation = true``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.errors import CollateralUnavailable, UntrustedRoot
from sealpod.evidence.envelope import EvidenceEnvelope
from sealpod.verify.appraise import Appraiser
from sealpod.verify.claims import TeeKind, VerifiedClaims
from sealpod.verify.trust import DEFAULT_TRUST, TrustAnchors

COLLATERAL_CACHE_SECS = 300.0
_NO_BLOCKING = ContextVar("sealpod_kms_no_blocking_io", default=False)


class WouldBlock(Exception):
    """Raised inside :func:`no_blocking_io` where collateral would have to be fetched (a cache
    miss): the caller runs the verification again on a worker thread instead."""


@contextlib.contextmanager
def no_blocking_io() -> Iterator[None]:
    """Within this block, a collateral cache miss raises :class:`WouldBlock` instead of fetching.

    The KMS verifies on its event loop when all it needs is cached (no thread hand-off, which
    costs more than the verification itself) and on a worker thread otherwise.
    """
    token = _NO_BLOCKING.set(True)
    try:
        yield
    finally:
        _NO_BLOCKING.reset(token)


class CachingCollateralProvider:
    """Remembers each (fmspc, ca, tee) answer of ``inner`` for ``ttl_secs``."""

    def __init__(
        self,
        inner: DcapCollateralProvider,
        *,
        ttl_secs: float = COLLATERAL_CACHE_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner, self.ttl_secs, self.clock = inner, ttl_secs, clock
        self._cache: dict[tuple[str, str, TeeKind], tuple[float, QuoteCollateral]] = {}
        self._lock = threading.Lock()

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        key = (fmspc.lower(), ca.lower(), tee)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.ttl_secs:
                return hit[1]
        if _NO_BLOCKING.get():
            raise WouldBlock
        collateral = self.inner.get(fmspc, ca, tee)
        with self._lock:
            self._cache[key] = (now, collateral)
        return collateral


class ChainedCollateralProvider:
    """Asks each provider in turn; the first that has collateral for the platform answers."""

    def __init__(self, providers: Sequence[DcapCollateralProvider]) -> None:
        self.providers = tuple(providers)

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        reasons: list[str] = []
        for provider in self.providers:
            try:
                return provider.get(fmspc, ca, tee)
            except CollateralUnavailable as exc:
                reasons.append(exc.message)
        raise CollateralUnavailable(
            f"no DCAP collateral for fmspc {fmspc} ({ca} CA, {tee.value}): "
            + ("; ".join(reasons) if reasons else "no collateral source configured")
        )


@dataclass
class AppraisalVerifier:
    """Evidence → verified claims, with the trust anchors and collateral the KMS was given."""

    trust: TrustAnchors
    dcap_collateral: DcapCollateralProvider | None = None

    def __post_init__(self) -> None:
        self._appraiser = Appraiser(self.trust)

    def verify(self, evidence: EvidenceEnvelope, *, now: datetime) -> VerifiedClaims:
        """Raises: MalformedEvidence, VerificationError, CollateralError (see appraise)."""
        return self._appraiser.appraise(evidence, dcap_collateral=self.dcap_collateral, now=now)


class SimulatorNotTrusted:
    """A KMS that does not trust the simulator refuses its quotes at once, naming the flag.

    Without it, a simulated quote's (made-up) FMSPC went to Intel PCS: 17 s of retries, then a
    503 that did not say why. The simulated FMSPCs ("SIM" + a number) are no real platform's.
    """

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """Raises: UntrustedRoot for the simulator's FMSPCs; CollateralUnavailable otherwise."""
        from sealpod.tee.sim_config import SGX_FMSPC, TDX_FMSPC

        if bytes.fromhex(fmspc) in (SGX_FMSPC, TDX_FMSPC):
            raise UntrustedRoot(
                "the evidence comes from sealpod's SIMULATED TEE (no hardware protection), "
                "which this KMS does not trust: start it with `sealpod kms serve --trust-sim` "
                "(and give the policy allow_simulation = true)",
                step="Step 3: PCK certificate chain and PCK CRL",
            )
        raise CollateralUnavailable(f"fmspc {fmspc} is not the simulator's")


class LazyPcsProvider:
    """Intel PCS collateral (through sealpod's disk cache), set up on first use only, so a KMS
    that never sees hardware evidence never touches the network or the cache directory."""

    def __init__(self) -> None:
        self._inner: DcapCollateralProvider | None = None
        self._lock = threading.Lock()

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        with self._lock:
            if self._inner is None:
                from sealpod.collateral.intel import PcsCollateralProvider

                self._inner = PcsCollateralProvider()
            inner = self._inner
        return inner.get(fmspc, ca, tee)


def build_verifier(
    *,
    trust_sim: bool = False,
    pcs: bool = False,
    home: Path | None = None,
    extra_collateral: Sequence[DcapCollateralProvider] = (),
) -> AppraisalVerifier:
    """The verifier ``sealpod kms serve`` uses.

    ``trust_sim`` loads (or creates) the simulated platform under ``home`` and trusts its roots
    and collateral; ``pcs`` fetches hardware DCAP collateral from Intel PCS; ``extra_collateral``
    are further sources (asked first).

    Raises:
        ConfigError: the simulated platform's state is unusable.
    """
    trust = DEFAULT_TRUST
    providers: list[DcapCollateralProvider] = list(extra_collateral)
    if not trust_sim:
        providers.insert(0, SimulatorNotTrusted())
    if trust_sim:
        from sealpod.tee.sim import SimPlatform

        platform = SimPlatform.load_or_init(home)
        sim_trust = platform.trust_anchors()
        trust = trust.with_sim_roots(*sim_trust.sim_roots)
        providers.append(platform.dcap_collateral())
    if pcs:
        providers.append(LazyPcsProvider())
    chained = ChainedCollateralProvider([CachingCollateralProvider(p) for p in providers])
    return AppraisalVerifier(trust=trust, dcap_collateral=chained)
