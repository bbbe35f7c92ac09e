"""Choosing an evidence backend by name: ``auto``, ``sim``, ``gramine`` or ``tsm``.

``auto`` picks hardware only — Gramine's ``/dev/attestation`` when it offers DCAP, else
configfs-tsm when its report directory exists — and never the simulator: simulation is always an
explicit choice (``--tee sim``), so a misconfigured production host fails loudly instead of
silently producing evidence that protects nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sealpod.errors import ConfigError, TeeUnavailable
from sealpod.tee.base import TeeBackend
from sealpod.tee.detect import probe_gramine, probe_tsm
from sealpod.tee.gramine import GRAMINE_ROOT, GramineBackend
from sealpod.tee.sim import Emulated, SimBackend, SimIdentity, SimPlatform
from sealpod.tee.tsm import TSM_REPORT_ROOT, TsmBackend

BackendName = Literal["auto", "sim", "gramine", "tsm"]
BACKEND_NAMES: tuple[str, ...] = ("auto", "sim", "gramine", "tsm")


def open_backend(
    name: str = "auto",
    *,
    emulate: Emulated = "sgx",
    identity: SimIdentity | None = None,
    home: Path | None = None,
    gramine_root: Path = GRAMINE_ROOT,
    tsm_root: Path = TSM_REPORT_ROOT,
    privlevel: int | None = None,
) -> TeeBackend:
    """Open the backend ``name``.

    ``emulate`` and ``identity`` apply to ``sim`` only (the simulated platform is loaded from
    ``home``, default ``$SEALPOD_HOME``, and must have been initialised); ``privlevel`` to
    ``tsm`` on SEV-SNP.

    Raises:
        ConfigError: an unknown name, or ``emulate``/``identity`` given for hardware.
        TeeUnavailable: ``auto`` found no hardware backend (the message lists why each is
            absent), or the simulated platform is not initialised.
    """
    if name not in BACKEND_NAMES:
        raise ConfigError(f"TEE backend is {name!r}, expected one of {', '.join(BACKEND_NAMES)}")
    if name == "sim":
        return SimBackend(SimPlatform.load(home), identity, emulate)
    if emulate != "sgx" and name != "auto":
        raise ConfigError(f"--emulate applies to --tee sim only, not {name!r}")
    if name == "gramine":
        return GramineBackend(gramine_root)
    if name == "tsm":
        return TsmBackend(tsm_root, privlevel=privlevel)
    gramine = probe_gramine(gramine_root)
    if gramine.available:
        return GramineBackend(gramine_root)
    tsm = probe_tsm(tsm_root)
    if tsm.available:
        return TsmBackend(tsm_root, privlevel=privlevel)
    raise TeeUnavailable(
        "no TEE backend on this machine: gramine: "
        f"{gramine.reason}; tsm: {tsm.reason}. For development use --tee sim (NO hardware "
        "protection)"
    )
