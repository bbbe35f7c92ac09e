"""Local attestation: an SGX REPORT targeted at another enclave on the same platform.

"The CPU takes the role of a trusted auditor": enclave A asks the CPU (EREPORT) for a REPORT
about itself, MAC'd with the *report key of enclave B*, which only B can derive (EGETKEY) on the
same CPU. B checks the MAC and so learns A's identity (MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN,
ATTRIBUTES) and 64 bytes of A's report data, with no network and no collateral.

Formats (Intel SDM vol. 3D, "TARGETINFO", "REPORT"): TARGETINFO is 512 bytes (B's MRENCLAVE,
ATTRIBUTES, CONFIGSVN, MISCSELECT, CONFIGID, reserved); REPORT is 432 bytes (REPORTBODY 384,
KEYID 32, MAC 16, an AES-128-CMAC over the body).

The simulated platform plays the CPU: the report key of a target is HMAC-SHA256 of the platform's
secret (``keys/report-secret.bin``) over a domain label, the target's identity fields and the
KEYID, truncated to 16 bytes; the MAC is AES-CMAC as on hardware. Under Gramine, reports come
from ``/dev/attestation/report``; Gramine gives enclaves no way to derive report keys, so checking
a report works with the simulated platform only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealpod._binary import Reader, Writer
from sealpod.errors import EvidenceSignatureError, MalformedEvidence
from sealpod.evidence.dcap_body import SgxReportBody
from sealpod.tee import sim_config as cfg
from sealpod.tee.base import normalize_report_data
from sealpod.tee.sim import SimIdentity, SimPlatform

TARGET_INFO_SIZE = 512
REPORT_SIZE = 432
KEY_ID_SIZE = 32
MAC_SIZE = 16
_DOMAIN = b"sealpod-sim/report-key/v1\x00"


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetInfo:
    """SGX TARGETINFO: who a REPORT is for."""

    mr_enclave: bytes
    attributes: bytes
    config_svn: int = 0
    misc_select: int = 0
    config_id: bytes = bytes(64)

    @classmethod
    def from_bytes(cls, data: bytes) -> TargetInfo:
        """Parse 512 bytes.

        Raises:
            MalformedEvidence: wrong size or a non-zero reserved byte.
        """
        r = Reader(data, name="target info")
        mr_enclave = r.take(32, "mr_enclave")
        attributes = r.take(16, "attributes")
        r.zeros(2, "reserved1")
        config_svn = r.u16("config_svn")
        misc_select = r.u32("misc_select")
        r.zeros(8, "reserved2")
        config_id = r.take(64, "config_id")
        r.zeros(384, "reserved3")
        r.end()
        return cls(
            mr_enclave=mr_enclave, attributes=attributes, config_svn=config_svn,
            misc_select=misc_select, config_id=config_id,
        )  # fmt: skip

    @classmethod
    def for_identity(cls, identity: SimIdentity) -> TargetInfo:
        return cls(mr_enclave=identity.measurement, attributes=identity.sgx_attributes())

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .raw(self.mr_enclave, 32)
            .raw(self.attributes, 16)
            .zeros(2)
            .u16(self.config_svn)
            .u32(self.misc_select)
            .zeros(8)
            .raw(self.config_id, 64)
            .zeros(384)
            .getvalue()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalReport:
    """SGX REPORT: body, the KEYID the MAC key was derived with, and the MAC."""

    body: SgxReportBody
    key_id: bytes
    mac: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalReport:
        """Parse 432 bytes.

        Raises:
            MalformedEvidence: wrong size or a malformed body.
        """
        if len(data) != REPORT_SIZE:
            raise MalformedEvidence(
                f"SGX report is {len(data)} bytes, expected {REPORT_SIZE}", field="report"
            )
        body = SgxReportBody.from_bytes(data[:384], name="SGX report body")
        return cls(body=body, key_id=data[384:416], mac=data[416:432])

    def to_bytes(self) -> bytes:
        return self.body.to_bytes() + self.key_id + self.mac


class LocalReportFile(BaseModel):
    """What ``sealpod attest --local`` writes: the REPORT and where it came from."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    format: Literal["sealpod-sgx-report/v1"] = "sealpod-sgx-report/v1"
    source: Literal["sim", "gramine"]
    target_mr_enclave: str = Field(pattern=r"^[0-9a-f]{64}$")
    report: str = Field(max_length=1024)

    @property
    def report_bytes(self) -> bytes:
        return base64.b64decode(self.report, validate=True)

    @classmethod
    def parse(cls, data: bytes) -> LocalReportFile:
        """Parse the JSON file.

        Raises:
            MalformedEvidence: not such a file.
        """
        try:
            out = cls.model_validate_json(data)
            out.report_bytes  # noqa: B018 - decodes or raises
        except (ValidationError, ValueError) as exc:
            raise MalformedEvidence(f"local report file is invalid: {exc}") from exc
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalClaims:
    """What a verified local report says about the enclave that made it."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool
    report_data: bytes
    simulated: bool

    def to_json(self) -> dict[str, object]:
        return {
            "tee": "sim" if self.simulated else "sgx",
            "simulated": self.simulated,
            "emulated": "sgx" if self.simulated else None,
            "measurement": self.mr_enclave.hex(),
            "signer": self.mr_signer.hex(),
            "product_id": self.isv_prod_id,
            "svn": self.isv_svn,
            "debug": self.debug,
            "report_data": self.report_data.hex(),
        }


def _report_key(secret: bytes, target: TargetInfo, key_id: bytes) -> bytes:
    material = (
        _DOMAIN + target.mr_enclave + target.attributes + target.config_svn.to_bytes(2, "little")
        + target.misc_select.to_bytes(4, "little") + target.config_id + key_id
    )  # fmt: skip
    return hmac.new(secret, material, hashlib.sha256).digest()[:16]


def _cmac(key: bytes, data: bytes) -> cmac.CMAC:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac


class SimLocalAttester:
    """EREPORT on the simulated platform, for an enclave with ``identity``."""

    def __init__(self, platform: SimPlatform, identity: SimIdentity) -> None:
        self._platform = platform
        self._identity = identity

    def my_target_info(self) -> bytes:
        """This enclave's TARGETINFO (what ``/dev/attestation/my_target_info`` returns)."""
        return TargetInfo.for_identity(self._identity).to_bytes()

    def report(self, target_info: bytes, report_data: bytes) -> bytes:
        """A REPORT about this enclave for the target described by ``target_info``.

        Raises:
            MalformedEvidence: a malformed target info.
            ConfigError: report data longer than 64 bytes.
        """
        target = TargetInfo.from_bytes(target_info)
        ident = self._identity
        body = SgxReportBody(
            cpu_svn=cfg.SGX_PCK_TCB.cpu_svn, misc_select=0, attributes=ident.sgx_attributes(),
            mr_enclave=ident.measurement, mr_signer=ident.signer, isv_prod_id=ident.product_id,
            isv_svn=ident.svn, report_data=normalize_report_data(report_data),
        )  # fmt: skip
        key_id = secrets.token_bytes(KEY_ID_SIZE)
        key = _report_key(self._platform.report_secret(), target, key_id)
        body_bytes = body.to_bytes()
        return body_bytes + key_id + _cmac(key, body_bytes).finalize()


def verify_local_report(platform: SimPlatform, report: bytes, *, target: TargetInfo) -> LocalClaims:
    """Check a REPORT's MAC as the enclave ``target`` would (EGETKEY on the simulated CPU).

    Raises:
        MalformedEvidence: not a 432-byte REPORT.
        EvidenceSignatureError: the MAC does not verify: the report was made for another target,
            on another platform, or altered (deliberately indistinguishable).
    """
    parsed = LocalReport.from_bytes(report)
    key = _report_key(platform.report_secret(), target, parsed.key_id)
    try:
        _cmac(key, report[:384]).verify(parsed.mac)
    except InvalidSignature as exc:
        raise EvidenceSignatureError(
            "local report MAC does not verify: it was made for another enclave, on another "
            "platform, or altered",
            step="local report MAC (EGETKEY report key)",
        ) from exc
    body = parsed.body
    return LocalClaims(
        mr_enclave=body.mr_enclave, mr_signer=body.mr_signer, isv_prod_id=body.isv_prod_id,
        isv_svn=body.isv_svn, debug=body.debug, report_data=body.report_data, simulated=True,
    )  # fmt: skip
