"""Which evidence backend ``sealpod run`` attests with, and the evidence format it names to the
KMS.

* ``sim``: the simulated platform, reporting the bundle's own identity (NO hardware
  protection; a KMS accepts it only with a policy that allows simulation).
* ``snp`` / ``tdx``: configfs-tsm inside a confidential VM. The VM's launch measurement covers
  the guest image in which sealpod runs; sealpod binds the container's measurement into
  report_data, and the KMS's policy pins the VM measurement (docs/runtime.md).
* ``sgx``: inside a Gramine enclave, ``/dev/attestation``. Outside one, a pod is started by
  Gramine's loader (docs/sgx.md); without Gramine the start is refused (exit 14).
* ``auto``: hardware only, never the simulator.
"""

from __future__ import annotations

from pathlib import Path

from sealpod.build.bundle import Bundle
from sealpod.errors import ConfigError, TeeUnavailable
from sealpod.runtime.plan import TeeChoice
from sealpod.tee.base import TeeBackend
from sealpod.tee.detect import probe_gramine, probe_tsm
from sealpod.tee.gramine import GRAMINE_ROOT, GramineBackend
from sealpod.tee.tsm import PROVIDERS, TSM_REPORT_ROOT, ConfigfsOps, TsmBackend

EMULATED = ("sgx", "tdx", "snp")


def open_run_backend(
    choice: TeeChoice,
    bundle: Bundle,
    *,
    emulate: str = "sgx",
    gramine_root: Path = GRAMINE_ROOT,
    tsm_root: Path = TSM_REPORT_ROOT,
    tsm_ops: ConfigfsOps | None = None,
) -> tuple[TeeBackend, str]:
    """The backend for ``choice`` and the evidence kind to announce (sgx, tdx or snp).
    ``tsm_ops`` replaces configfs's mkdir/rmdir (the fake tree of the tests).

    Raises:
        ConfigError: ``emulate`` given for hardware, or not sgx/tdx/snp.
        TeeUnavailable: the hardware is absent, is another kind than asked, or the simulated
            platform is not initialised (``sealpod sim init``).
    """
    if emulate not in EMULATED:
        raise ConfigError(f"--emulate is {emulate!r}, expected sgx, tdx or snp")
    if choice is TeeChoice.sim:
        # The simulator's PKI and collateral code is loaded only when simulation is asked for.
        from sealpod.tee.sim import SimBackend, SimPlatform, bundle_identity

        platform = SimPlatform.load(None)
        return SimBackend(platform, bundle_identity(bundle), emulate), emulate  # type: ignore[arg-type]
    if emulate != "sgx":
        raise ConfigError("--emulate applies to --tee sim only")
    if choice in (TeeChoice.sgx, TeeChoice.auto):
        gramine = probe_gramine(gramine_root)
        if gramine.available:
            return GramineBackend(gramine_root), "sgx"
        if choice is TeeChoice.sgx:
            raise TeeUnavailable(
                "--tee sgx: this process is not inside a Gramine enclave"
                f" ({gramine.reason}); SGX pods are started by Gramine's loader with sealpod's"
                " pre-main (docs/sgx.md), and Gramine cannot run on this machine"
            )
    if not tsm_root.is_dir():
        reason = probe_tsm(tsm_root).reason
        raise TeeUnavailable(
            f"--tee {choice.value}: no configfs-tsm report interface ({reason}); this is not a"
            " confidential VM. For development use --tee sim (NO hardware protection)"
        )
    backend = TsmBackend(tsm_root, ops=tsm_ops)
    return backend, _tsm_kind(backend, choice)


def _tsm_kind(backend: TsmBackend, choice: TeeChoice) -> str:
    provider = backend.provider()
    kind = PROVIDERS.get(provider)
    if kind is None:
        raise TeeUnavailable(f"configfs-tsm provider {provider[:40]!r} is not TDX or SEV-SNP")
    name = kind.value
    if choice is not TeeChoice.auto and name != choice.value:
        raise TeeUnavailable(f"--tee {choice.value}, but this VM's TSM provider is {name}")
    return name
