"""The one shape of verified claims, shared by every TEE verifier and by policy evaluation.

A verifier returns :class:`VerifiedClaims` only after every cryptographic and collateral check
passed. Deciding whether the claims are *acceptable* (debug, TCB status, measurements) is policy.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class TeeKind(enum.StrEnum):
    SGX = "sgx"
    TDX = "tdx"
    SNP = "snp"
    SIM = "sim"  # simulated: NO hardware protection


class TcbStatus(enum.StrEnum):
    """Intel's TCB status names (PCS TCB Info v3). SNP verification reports ``UpToDate`` when
    the report's reported_tcb equals the VCEK's TCB and the chain (and CRL, if given) pass;
    minimum SNP TCB versions are policy."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class SnpFields:
    """SEV-SNP specific claims (values as in the attestation report)."""

    guest_policy: int
    vmpl: int
    host_data: bytes
    family_id: bytes
    image_id: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    chip_id: bytes
    reported_tcb: int  # raw TCB_VERSION u64
    current_tcb: int
    committed_tcb: int
    launch_tcb: int
    platform_info: int
    signing_key: str  # "vcek" or "vlek"
    product: str  # "Milan", "Genoa", "Turin"
    report_version: int  # VERSION of the attestation report (2, 3, 5 ...)
    firmware_major: int  # CURRENT_MAJOR: the SNP firmware that produced the report
    firmware_minor: int  # CURRENT_MINOR
    firmware_build: int  # CURRENT_BUILD


@dataclass(frozen=True, slots=True, kw_only=True)
class TdxFields:
    """TDX specific claims."""

    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    td_attributes: bytes
    xfam: bytes
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedClaims:
    """What a verifier vouches for.

    ``measurement``: MRENCLAVE (SGX), MRTD (TDX), MEASUREMENT (SNP); ``signer``: MRSIGNER (SGX),
    None where the TEE has no signer identity. For ``tee == SIM`` the claims describe a simulated
    platform and ``emulated`` names which kind it imitates.
    """

    tee: TeeKind
    measurement: bytes
    report_data: bytes
    debug: bool
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    signer: bytes | None = None
    product_id: int | None = None
    svn: int | None = None
    emulated: TeeKind | None = None
    tdx: TdxFields | None = None
    snp: SnpFields | None = None
    # Platform facts for display and audit (fmspc, pce_id, tcb date, chip id...), not for policy:
    # policy reads only typed fields (``snp.firmware_major`` etc.), never this mapping.
    platform: Mapping[str, str | int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def simulated(self) -> bool:
        return self.tee is TeeKind.SIM

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict; bytes become lower-case hex."""
        out: dict[str, object] = {
            "tee": self.tee.value,
            "simulated": self.simulated,
            "emulated": self.emulated.value if self.emulated else None,
            "measurement": self.measurement.hex(),
            "signer": self.signer.hex() if self.signer is not None else None,
            "product_id": self.product_id,
            "svn": self.svn,
            "debug": self.debug,
            "tcb_status": self.tcb_status.value,
            "advisory_ids": list(self.advisory_ids),
            "report_data": self.report_data.hex(),
            "platform": dict(self.platform),
        }
        for name in ("tdx", "snp"):
            sub = getattr(self, name)
            if sub is not None:
                out[name] = {
                    k: (v.hex() if isinstance(v, bytes) else [x.hex() for x in v])
                    if isinstance(v, bytes | tuple)
                    else v
                    for k, v in ((f, getattr(sub, f)) for f in sub.__slots__)
                }
        return out
