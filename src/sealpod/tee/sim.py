"""The simulated TEE platform: NO hardware protection, real evidence formats, real verifier paths.

``SimPlatform`` is one simulated machine (keys, certificates and settings under
``$SEALPOD_HOME/sim``, see :mod:`sealpod.tee.sim_platform`). It produces SGX DCAP v3 quotes, TDX
v4 quotes and SEV-SNP reports (:mod:`sealpod.tee.sim_quote`), signs DCAP collateral on demand
(:mod:`sealpod.tee.sim_collateral`), and tells a verifier which roots are its own
(:meth:`SimPlatform.trust_anchors`): evidence chaining to them verifies with ``tee = "sim"`` and
``emulated`` = the imitated kind, and policy refuses it unless ``allow_simulation = true``.

``SimBackend`` is the :class:`~sealpod.tee.base.TeeBackend` over a platform. Setting
``SEALPOD_SIM_QUOTE_DELAY_MS`` makes every quote or report take that long, to imitate real
hardware (configfs-tsm on TDX takes about a second) when testing callers' timeouts and caches.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from sealpod.errors import CollateralUnavailable, ConfigError
from sealpod.tee import sim_config as cfg
from sealpod.tee.base import Evidence, normalize_report_data
from sealpod.tee.sim_collateral import kind_for_fmspc
from sealpod.tee.sim_platform import SimPlatformState, state_dir_for
from sealpod.tee.sim_quote import (
    UNNAMED,
    SimIdentity,
    build_sgx_quote,
    build_snp_report,
    build_tdx_quote,
)
from sealpod.verify.claims import TcbStatus, TeeKind

if TYPE_CHECKING:
    from sealpod.build.bundle import Bundle
    from sealpod.collateral.models import QuoteCollateral

__all__ = [
    "DELAY_ENV",
    "UNNAMED",
    "SimBackend",
    "SimDcapCollateralProvider",
    "SimIdentity",
    "SimPlatform",
    "bundle_identity",
    "state_dir_for",
]

DELAY_ENV = "SEALPOD_SIM_QUOTE_DELAY_MS"
MAX_DELAY_MS = 60_000
Emulated = Literal["sgx", "tdx", "snp"]
_KINDS: dict[str, TeeKind] = {"sgx": TeeKind.SGX, "tdx": TeeKind.TDX, "snp": TeeKind.SNP}


def quote_delay_secs() -> float:
    """The injected latency from ``SEALPOD_SIM_QUOTE_DELAY_MS`` (0 when unset).

    Raises:
        ConfigError: not an integer in 0..60000.
    """
    text = os.environ.get(DELAY_ENV, "").strip()
    if not text:
        return 0.0
    if not text.isdigit() or int(text) > MAX_DELAY_MS:
        raise ConfigError(f"{DELAY_ENV} is {text!r}, expected milliseconds in 0..{MAX_DELAY_MS}")
    return int(text) / 1000


def bundle_identity(bundle: Bundle) -> SimIdentity:
    """What a simulated enclave running ``bundle`` reports: its measurement, signer id,
    product id, svn and debug flag (from the pod spec's ``[identity]`` and ``[tee]``)."""
    return SimIdentity(
        measurement=bundle.measurement,
        signer=bundle.signer_id,
        product_id=bundle.manifest.identity.product_id,
        svn=bundle.manifest.identity.svn,
        debug=bundle.manifest.tee.debug,
    )


class SimPlatform(SimPlatformState):
    """One simulated machine: SGX, TDX and SNP evidence, collateral and trust anchors.

    Create with :meth:`init`, open with :meth:`load` or :meth:`load_or_init` (all take the
    sealpod home; default ``$SEALPOD_HOME``).
    """

    @classmethod
    def load_or_init(cls, home: Path | None = None) -> Self:
        """Load the platform, creating it first if there is none.

        Raises:
            ConfigError: the state directory is unusable.
        """
        if (state_dir_for(home) / "platform.json").is_file():
            return cls.load(home)
        return cls.init(home)

    # --- evidence -------------------------------------------------------------------------------
    def _delay(self) -> None:
        delay = quote_delay_secs()
        if delay:
            time.sleep(delay)

    def sgx_quote(self, identity: SimIdentity, report_data: bytes) -> bytes:
        """A DCAP v3 quote: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, DEBUG from ``identity``."""
        data = normalize_report_data(report_data)
        self._delay()
        return build_sgx_quote(
            identity, data, qe_id=bytes.fromhex(self.config.qe_id),
            attestation_key=self.ec_key("ak-sgx"), pck_key=self.ec_key("pck-sgx"),
            pck_chain_pem=self.pck_chain_pem(TeeKind.SGX),
        )  # fmt: skip

    def tdx_quote(self, identity: SimIdentity, report_data: bytes) -> bytes:
        """A DCAP v4 TDX quote (see :mod:`sealpod.tee.sim_quote` for the field mapping)."""
        data = normalize_report_data(report_data)
        self._delay()
        return build_tdx_quote(
            identity, data, qe_id=bytes.fromhex(self.config.qe_id),
            attestation_key=self.ec_key("ak-tdx"), pck_key=self.ec_key("pck-tdx"),
            pck_chain_pem=self.pck_chain_pem(TeeKind.TDX),
        )  # fmt: skip

    def snp_report(self, identity: SimIdentity, report_data: bytes, *, vmpl: int = 0) -> bytes:
        """An SNP report (v3, Milan) signed by the simulated VCEK."""
        if not 0 <= vmpl <= 3:
            raise ConfigError(f"vmpl is {vmpl}, expected 0..3")
        data = normalize_report_data(report_data)
        self._delay()
        return build_snp_report(
            identity, data, chip_id=bytes.fromhex(self.config.chip_id),
            vcek_key=self.ec_key("vcek"), vmpl=vmpl,
        )  # fmt: skip

    def evidence(self, kind: TeeKind, identity: SimIdentity, report_data: bytes) -> Evidence:
        """Evidence of format ``kind`` with its certificates (SNP: VCEK, ASK, ARK)."""
        if kind is TeeKind.SGX:
            raw = self.sgx_quote(identity, report_data)
        elif kind is TeeKind.TDX:
            raw = self.tdx_quote(identity, report_data)
        elif kind is TeeKind.SNP:
            raw = self.snp_report(identity, report_data)
            return Evidence(
                tee=kind, raw=raw, certificates=self.snp_certificates(), source="sim",
                simulated=True,
            )  # fmt: skip
        else:
            raise ConfigError(f"the simulator emulates sgx, tdx or snp, not {kind.value!r}")
        return Evidence(tee=kind, raw=raw, source="sim", simulated=True)

    # --- verifier side --------------------------------------------------------------------------
    def dcap_collateral(self, *, now: dt.datetime | None = None) -> SimDcapCollateralProvider:
        """A collateral provider serving this platform's freshly signed collateral."""
        return SimDcapCollateralProvider(self, now=now)

    def set_tcb(self, status: TcbStatus | str, advisories: tuple[str, ...] = ()) -> SimPlatform:
        """Make future collateral give the platform's TCB level ``status``; returns the update.

        Raises:
            ConfigError: an unknown status or malformed advisory id, or the state is unwritable.
        """
        chosen = cfg.check_status(status.value if isinstance(status, TcbStatus) else status)
        return self.with_tcb(chosen, cfg.check_advisories(advisories))


class SimDcapCollateralProvider:
    """:class:`~sealpod.collateral.models.DcapCollateralProvider` for the simulated platform.

    Serves collateral only for the simulator's own FMSPCs and the ``platform`` CA, so it can
    never stand in for Intel's collateral.
    """

    def __init__(self, platform: SimPlatform, *, now: dt.datetime | None = None) -> None:
        self._platform = platform
        self._now = now

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """Signed collateral for ``fmspc`` (the simulated SGX or TDX platform).

        Raises:
            CollateralUnavailable: another FMSPC, a CA other than ``platform``, or a TEE kind
                that contradicts the FMSPC.
        """
        kind = kind_for_fmspc(fmspc)
        if ca.strip().lower() != "platform":
            raise CollateralUnavailable(
                f"simulated collateral: ca is {ca!r}, expected 'platform' (the simulated PCK "
                "certificates are issued by a Platform CA)"
            )
        if tee not in (kind, TeeKind.SIM):
            raise CollateralUnavailable(
                f"simulated collateral: fmspc {fmspc} is the simulated {kind.value} platform, "
                f"not {tee.value}"
            )
        return self._platform.collateral(kind, now=self._now).to_model()


class SimBackend:
    """The simulated platform as a :class:`~sealpod.tee.base.TeeBackend`."""

    def __init__(
        self,
        platform: SimPlatform,
        identity: SimIdentity | None = None,
        emulate: Emulated = "sgx",
    ) -> None:
        if emulate not in _KINDS:
            raise ConfigError(f"emulate is {emulate!r}, expected sgx, tdx or snp")
        self._platform = platform
        self._identity = identity or UNNAMED
        self._kind = _KINDS[emulate]

    @property
    def name(self) -> str:
        return "sim"

    @property
    def platform(self) -> SimPlatform:
        return self._platform

    @property
    def identity(self) -> SimIdentity:
        return self._identity

    def describe(self) -> dict[str, object]:
        return {
            "backend": "sim",
            "emulate": self._kind.value,
            "simulated": True,
            "warning": "simulation: NO hardware protection",
            "state_dir": str(self._platform.state_dir),
            "tcb_status": self._platform.config.tcb_status,
            "identity": self._identity.to_json(),
        }

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Simulated evidence of the emulated kind for this backend's identity.

        Raises:
            ConfigError: report data longer than 64 bytes, or a bad delay setting.
        """
        return self._platform.evidence(self._kind, self._identity, report_data)
