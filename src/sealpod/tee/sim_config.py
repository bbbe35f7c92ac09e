"""The simulated platform's parameters: fixed platform facts and the persisted, changeable state.

Fixed facts (FMSPCs, TCB component SVNs, QE identities, SNP TCB) are constants here, chosen to be
recognisably fake (the FMSPCs spell "SIM" in ASCII). What a user changes — the TCB status that
the signed collateral reports, its advisories — and what is random per platform (PPID, chip id,
platform secrets live elsewhere, in ``keys/``) is :class:`SimConfig`, stored as
``platform.json`` in the state directory.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sealpod.errors import ConfigError
from sealpod.tee.sim_pki import PckTcb, SnpTcb
from sealpod.verify.claims import TcbStatus

CONFIG_FORMAT = 1

# --- SGX / TDX platform facts -----------------------------------------------------------------
#: FMSPC of the simulated SGX and TDX platforms: "SIM" + 0x00 + kind.
SGX_FMSPC = bytes.fromhex("53494d000001")
TDX_FMSPC = bytes.fromhex("53494d000002")
PCE_ID = bytes.fromhex("0000")
#: The TCB the PCK certificates certify (and the level the TCB Info's chosen status applies to).
SGX_PCK_TCB = PckTcb(
    components=(7, 7, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    pce_svn=13,
    cpu_svn=bytes((7, 7, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
)
TDX_PCK_TCB = PckTcb(
    components=(4, 4, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0),
    pce_svn=11,
    cpu_svn=bytes((4, 4, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)),
)
#: TDX TEE_TCB_SVN: [0] TDX module minor SVN, [1] major version, [2] late microcode, rest 0.
TDX_TEE_TCB_SVN = bytes((5, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
#: The simulated TDX module's signer; Intel's TCB Info lists an all-zero MRSIGNER for its module.
TDX_MR_SIGNER_SEAM = bytes(48)
TDX_MR_SEAM = bytes.fromhex("53494d" + "5345414d" + "00" * 41)  # "SIM" "SEAM"
TDX_SEAM_ATTRIBUTES = bytes(8)
#: XFAM x87/SSE/AVX/AVX-512/PKRU/AMX as a typical TD enables (little-endian u64).
TDX_XFAM = bytes.fromhex("e702060000000000")
#: TD_ATTRIBUTES: bit 0 DEBUG, bit 28 SEPT_VE_DISABLE (set by every production TD).
TDX_ATTR_SEPT_VE_DISABLE = 1 << 28
TDX_ATTR_DEBUG = 1 << 0

#: Intel's ECDSA Quoting Enclave vendor id, a format constant of quote headers.
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


@dataclass(frozen=True, slots=True, kw_only=True)
class QeFacts:
    """The simulated Quoting Enclave's identity, as its QE report and QE Identity state it."""

    identity_id: Literal["QE", "TD_QE"]
    mr_signer: bytes
    mr_enclave: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: bytes  # 16 bytes: flags INIT|PROVISIONKEY, xfrm 0


SGX_QE = QeFacts(
    identity_id="QE",
    mr_signer=bytes.fromhex("53494d" + "5145" + "00" * 27),  # "SIM" "QE"
    mr_enclave=bytes.fromhex("53494d" + "514501" + "00" * 26),
    isv_prod_id=1,
    isv_svn=8,
    attributes=bytes.fromhex("11" + "00" * 15),
)
TDX_QE = QeFacts(
    identity_id="TD_QE",
    mr_signer=bytes.fromhex("53494d" + "54445145" + "00" * 25),  # "SIM" "TDQE"
    mr_enclave=bytes.fromhex("53494d" + "5444514501" + "00" * 24),
    isv_prod_id=2,
    isv_svn=4,
    attributes=bytes.fromhex("11" + "00" * 15),
)

# --- SEV-SNP platform facts -------------------------------------------------------------------
SNP_PRODUCT = "Milan"
SNP_PRODUCT_NAME = "Milan-B0"  # as in the VCEK productName extension
SNP_TCB = SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)
#: PLATFORM_INFO: bit 0 SMT enabled.
SNP_PLATFORM_INFO = 0x1
#: Guest policy: bits 16 (SMT allowed) and 17 (reserved, must be one); bit 19 is DEBUG.
SNP_POLICY_BASE = (1 << 16) | (1 << 17)
SNP_POLICY_DEBUG = 1 << 19

# --- changeable state -------------------------------------------------------------------------
TCB_STATUSES: tuple[str, ...] = tuple(s.value for s in TcbStatus)
_ADVISORY_RE = re.compile(r"[A-Z][A-Z0-9]{0,15}-[A-Z]{1,8}-[0-9]{1,12}")
MAX_ADVISORIES = 64


class SimConfig(BaseModel):
    """``platform.json``: per-platform random identifiers and the status set by ``set-tcb``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format: Literal[1] = 1
    created: Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")]
    ppid: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    chip_id: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]
    qe_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    tcb_status: str = TcbStatus.UP_TO_DATE.value
    advisory_ids: tuple[str, ...] = ()
    #: Bumped on every ``set-tcb`` so collateral versions are distinguishable.
    tcb_evaluation_data_number: int = Field(default=1, ge=1, le=1_000_000)

    @field_validator("tcb_status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in TCB_STATUSES:
            raise ValueError(f"tcb_status is {value!r}, expected one of {', '.join(TCB_STATUSES)}")
        return value

    @field_validator("advisory_ids")
    @classmethod
    def _advisories(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_ADVISORIES:
            raise ValueError(f"{len(value)} advisories, expected at most {MAX_ADVISORIES}")
        for adv in value:
            if not _ADVISORY_RE.fullmatch(adv):
                raise ValueError(f"advisory id {adv!r} is not like INTEL-SA-00615")
        return value

    @property
    def status(self) -> TcbStatus:
        return TcbStatus(self.tcb_status)

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> SimConfig:
        """Parse ``platform.json``.

        Raises:
            ConfigError: not JSON or not a valid simulated platform configuration.
        """
        try:
            obj = json.loads(data)
            if isinstance(obj, dict) and isinstance(obj.get("advisory_ids"), list):
                obj["advisory_ids"] = tuple(obj["advisory_ids"])
            return cls.model_validate(obj)
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"simulated platform: platform.json is invalid: {exc}") from exc


def check_status(value: str) -> TcbStatus:
    """Map a user-given status name to :class:`TcbStatus`, case-insensitively.

    Raises:
        ConfigError: not one of Intel's TCB status names.
    """
    for status in TcbStatus:
        if status.value.lower() == value.strip().lower():
            return status
    raise ConfigError(f"TCB status is {value!r}, expected one of {', '.join(TCB_STATUSES)}")


def check_advisories(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate advisory ids such as ``INTEL-SA-00615``.

    Raises:
        ConfigError: a malformed id or too many.
    """
    out = tuple(v.strip().upper() for v in values)
    if len(out) > MAX_ADVISORIES:
        raise ConfigError(f"{len(out)} advisories given, expected at most {MAX_ADVISORIES}")
    for adv in out:
        if not _ADVISORY_RE.fullmatch(adv):
            raise ConfigError(f"advisory id is {adv!r}, expected a form like INTEL-SA-00615")
    return tuple(dict.fromkeys(out))


def iso_z(when: dt.datetime) -> str:
    """Intel's timestamp form: UTC, whole seconds, ``Z`` suffix."""
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
