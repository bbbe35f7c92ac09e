"""Which evidence backends this machine offers, and why the others are absent.

Used by ``sealpod tee detect`` and by ``open_backend("auto")``. Each probe only reads, except
the configfs-tsm probe, which must create (and at once remove) a report entry to learn the
provider's name — that attribute exists only inside an entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sealpod.errors import SealpodError
from sealpod.tee.gramine import GRAMINE_ROOT, GramineBackend
from sealpod.tee.tsm import PROVIDERS, TSM_REPORT_ROOT, TsmBackend

#: Device nodes that hint at hardware even when its attestation interface is missing.
SGX_DEVICES = (Path("/dev/sgx_enclave"), Path("/dev/sgx/enclave"))
TDX_GUEST_DEVICE = Path("/dev/tdx_guest")
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
CONFIGFS_ROOT = Path("/sys/kernel/config")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendStatus:
    """One backend: usable or not, and the reason in words."""

    name: str
    available: bool
    reason: str
    details: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "available": self.available,
            "reason": self.reason,
            "details": self.details,
        }


def probe_gramine(root: Path = GRAMINE_ROOT) -> BackendStatus:
    """Gramine's ``/dev/attestation`` and its attestation type."""
    backend = GramineBackend(root)
    try:
        kind = backend.attestation_type()
    except SealpodError as exc:
        hint = ""
        if any(dev.exists() for dev in SGX_DEVICES):
            hint = " (SGX hardware is present: run the workload under gramine-sgx)"
        return BackendStatus(
            name="gramine", available=False, reason=f"{root} is absent: not inside Gramine{hint}",
            details={"root": str(root), "error": exc.message},
        )  # fmt: skip
    if kind == "dcap":
        return BackendStatus(
            name="gramine", available=True, reason="Gramine SGX enclave with DCAP attestation",
            details={"root": str(root), "attestation_type": kind, "emits": "sgx"},
        )  # fmt: skip
    return BackendStatus(
        name="gramine", available=False,
        reason=f"Gramine reports attestation_type {kind!r}; DCAP ('dcap') is required",
        details={"root": str(root), "attestation_type": kind},
    )  # fmt: skip


def probe_tsm(root: Path = TSM_REPORT_ROOT) -> BackendStatus:
    """configfs-tsm: the report directory and its provider."""
    details: dict[str, object] = {"root": str(root)}
    if not root.is_dir():
        if root.is_relative_to(CONFIGFS_ROOT) and not os.path.ismount(CONFIGFS_ROOT):
            reason = (
                f"{root} is absent: configfs is not mounted at {CONFIGFS_ROOT} "
                f"(mount -t configfs none {CONFIGFS_ROOT})"
            )
        elif TDX_GUEST_DEVICE.exists() or SEV_GUEST_DEVICE.exists():
            reason = (
                f"{root} is absent although a guest device exists: the kernel lacks "
                "CONFIG_TSM_REPORTS (Linux >= 6.7 needed)"
            )
        else:
            reason = f"{root} is absent: not a TDX or SEV-SNP guest with configfs-tsm"
        return BackendStatus(name="tsm", available=False, reason=reason, details=details)
    try:
        provider = TsmBackend(root).provider()
    except SealpodError as exc:
        return BackendStatus(name="tsm", available=False, reason=exc.message, details=details)
    details["provider"] = provider
    kind = PROVIDERS.get(provider)
    if kind is None:
        return BackendStatus(
            name="tsm", available=False,
            reason=f"configfs-tsm provider {provider!r} is not supported (tdx_guest, sev_guest)",
            details=details,
        )  # fmt: skip
    details["emits"] = kind.value
    return BackendStatus(
        name="tsm", available=True, reason=f"configfs-tsm with provider {provider}",
        details=details,
    )  # fmt: skip


def probe_sim(home: Path | None = None) -> BackendStatus:
    """The simulated platform: present once ``sealpod sim init`` ran. Never chosen by auto."""
    from sealpod.tee.sim_platform import state_dir_for  # the simulator's PKI: only when asked

    state = state_dir_for(home)
    details: dict[str, object] = {"state_dir": str(state), "emits": "sgx, tdx, snp"}
    if (state / "platform.json").is_file():
        return BackendStatus(
            name="sim", available=True,
            reason="simulated platform initialised (NO hardware protection; only with --tee sim)",
            details=details,
        )  # fmt: skip
    return BackendStatus(
        name="sim", available=False,
        reason=f"no simulated platform at {state}: run 'sealpod sim init'", details=details,
    )  # fmt: skip


def detect_backends(
    *,
    gramine_root: Path = GRAMINE_ROOT,
    tsm_root: Path = TSM_REPORT_ROOT,
    home: Path | None = None,
) -> list[BackendStatus]:
    """Probe gramine, tsm and sim, in the order ``auto`` would consider the first two."""
    return [probe_gramine(gramine_root), probe_tsm(tsm_root), probe_sim(home)]
