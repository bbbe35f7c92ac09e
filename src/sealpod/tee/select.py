"""Choosing an evidence backend by the project's one vocabulary: ``auto|sim|sgx|snp|tdx``.

``--tee`` means the same on every command (attest, kms fetch, verify): ``sim`` is the simulated
TEE (``--emulate sgx|tdx|snp`` picks the format it imitates), ``sgx`` is SGX hardware through
Gramine's ``/dev/attestation``, ``tdx`` and ``snp`` are confidential VMs through configfs-tsm
(the registered provider must be the one asked for), and ``auto`` picks hardware only: Gramine
when it offers DCAP, else configfs-tsm. ``auto`` never picks the simulator: simulation is always
an explicit choice, so a misconfigured production host fails loudly instead of silently
producing evidence that protects nothing.

The older backend names ``gramine`` and ``tsm`` are refused with the name that replaced them.
"""

from __future__ import annotations

from pathlib import Path

from sealpod.errors import ConfigError, TeeUnavailable
from sealpod.tee.base import TeeBackend
from sealpod.tee.detect import probe_gramine, probe_tsm
from sealpod.tee.gramine import GRAMINE_ROOT, GramineBackend
from sealpod.tee.names import RENAMED, TeeName
from sealpod.tee.sim import Emulated, SimBackend, SimIdentity, SimPlatform
from sealpod.tee.tsm import PROVIDERS, TSM_REPORT_ROOT, TsmBackend


def tee_name(value: str) -> TeeName:
    """``value`` as a :class:`TeeName`.

    Raises:
        ConfigError: an unknown name (a renamed one says what replaced it).
    """
    if value in RENAMED:
        raise ConfigError(f"--tee {value} was renamed: use {RENAMED[value]}")
    try:
        return TeeName(value)
    except ValueError:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ConfigError(
            f"--tee is {shown!r}, expected one of {', '.join(t.value for t in TeeName)}"
        ) from None


def open_backend(
    name: TeeName | str = TeeName.AUTO,
    *,
    emulate: Emulated = "sgx",
    identity: SimIdentity | None = None,
    home: Path | None = None,
    gramine_root: Path = GRAMINE_ROOT,
    tsm_root: Path = TSM_REPORT_ROOT,
    privlevel: int | None = None,
) -> TeeBackend:
    """Open the backend for ``name`` (a :class:`TeeName` or its value).

    ``emulate`` and ``identity`` apply to ``sim`` only (the simulated platform is loaded from
    ``home``, default ``$SEALPOD_HOME``, and must have been initialised); ``privlevel`` to
    ``snp``.

    Raises:
        ConfigError: an unknown name, or ``emulate`` given for hardware.
        TeeUnavailable: the TEE asked for is not on this machine (``auto``: none is; the
            message lists why each is absent), or the simulated platform is not initialised.
    """
    tee = tee_name(str(name))
    if tee is TeeName.SIM:
        return SimBackend(SimPlatform.load(home), identity, emulate)
    if emulate != "sgx":
        raise ConfigError(f"--emulate applies to --tee sim only, not --tee {tee.value}")
    if tee is TeeName.SGX:
        return GramineBackend(gramine_root)
    if tee in (TeeName.TDX, TeeName.SNP):
        return tsm_for(TsmBackend(tsm_root, privlevel=privlevel), tee)
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


def tsm_for(backend: TsmBackend, tee: TeeName) -> TsmBackend:
    """``backend`` if its configfs-tsm provider produces ``tee`` evidence (tdx or snp).

    Raises:
        TeeUnavailable: no configfs-tsm, or its provider produces another kind of evidence.
    """
    provider = backend.provider()
    kind = PROVIDERS.get(provider)
    if kind is None or kind.value != tee.value:
        raise TeeUnavailable(
            f"--tee {tee.value}: configfs-tsm's provider here is {provider!r}, which does not "
            f"produce {tee.value} evidence; use --tee auto or the TEE this machine has"
        )
    return backend
