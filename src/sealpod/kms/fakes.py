"""In-memory fakes for testing code that talks to the KMS, without any TEE or collateral.

:class:`FakeVerifier` implements :class:`~sealpod.kms.service.AttestationVerifier`;
:class:`FakeBackend` implements :class:`~sealpod.tee.base.TeeBackend`. Fake evidence is a DCAP
v3 header (so the evidence envelope accepts it as ``sgx``) followed by ``FAKE`` and the claims as
JSON. The fake verifier *always* reports ``tee = "sim"``-style claims unless told otherwise, and
it is never wired into ``sealpod kms serve``: it exists for tests only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from datetime import datetime

from sealpod.errors import CollateralUnavailable, EvidenceSignatureError, MalformedEvidence
from sealpod.evidence.envelope import EvidenceEnvelope
from sealpod.tee.base import Evidence, normalize_report_data
from sealpod.verify.claims import TcbStatus, TeeKind, VerifiedClaims

_HEADER = (3).to_bytes(2, "little") + (2).to_bytes(2, "little") + bytes(44)
_MAGIC = b"FAKE"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeIdentity:
    """What a fake enclave claims about itself."""

    measurement: bytes
    signer: bytes = bytes(32)
    product_id: int = 1
    svn: int = 1
    debug: bool = False
    tcb_status: TcbStatus = TcbStatus.UP_TO_DATE
    tee: TeeKind = TeeKind.SIM
    emulated: TeeKind | None = TeeKind.SGX
    advisory_ids: tuple[str, ...] = ()


def make_fake_evidence(identity: FakeIdentity, report_data: bytes) -> bytes:
    body = {
        "measurement": identity.measurement.hex(),
        "signer": identity.signer.hex(),
        "product_id": identity.product_id,
        "svn": identity.svn,
        "debug": identity.debug,
        "tcb_status": identity.tcb_status.value,
        "tee": identity.tee.value,
        "emulated": identity.emulated.value if identity.emulated else None,
        "advisory_ids": list(identity.advisory_ids),
        "report_data": normalize_report_data(report_data).hex(),
    }
    return _HEADER + _MAGIC + json.dumps(body, sort_keys=True).encode()


def fake_envelope(identity: FakeIdentity, report_data: bytes) -> EvidenceEnvelope:
    raw = make_fake_evidence(identity, report_data)
    return EvidenceEnvelope(tee="sgx", evidence=base64.b64encode(raw).decode())


@dataclass
class FakeVerifier:
    """Decodes fake evidence into claims. ``fail_signature`` / ``collateral_down`` simulate a
    forged quote and an unreachable collateral service."""

    fail_signature: bool = False
    collateral_down: bool = False
    calls: list[datetime] = field(default_factory=list)

    def verify(self, evidence: EvidenceEnvelope, *, now: datetime) -> VerifiedClaims:
        self.calls.append(now)
        raw = evidence.raw
        if not raw.startswith(_HEADER + _MAGIC):
            raise MalformedEvidence("not fake evidence", field="header", offset=0)
        if self.collateral_down:
            raise CollateralUnavailable("fake collateral service is down")
        if self.fail_signature:
            raise EvidenceSignatureError(
                "quote signature does not verify", step="Step 4: quote signature by the QE"
            )
        try:
            body = json.loads(raw[len(_HEADER) + len(_MAGIC) :])
            return VerifiedClaims(
                tee=TeeKind(body["tee"]),
                emulated=TeeKind(body["emulated"]) if body["emulated"] else None,
                measurement=bytes.fromhex(body["measurement"]),
                signer=bytes.fromhex(body["signer"]),
                product_id=int(body["product_id"]),
                svn=int(body["svn"]),
                debug=bool(body["debug"]),
                tcb_status=TcbStatus(body["tcb_status"]),
                advisory_ids=tuple(body["advisory_ids"]),
                report_data=bytes.fromhex(body["report_data"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedEvidence("fake evidence body does not parse") from exc


@dataclass
class FakeBackend:
    """A TEE backend that produces fake evidence for ``identity``."""

    identity: FakeIdentity
    name: str = "fake"

    def get_evidence(self, report_data: bytes) -> Evidence:
        return Evidence(
            tee=TeeKind.SGX,
            raw=make_fake_evidence(self.identity, report_data),
            source="fake",
            simulated=True,
        )

    def describe(self) -> dict[str, object]:
        return {"backend": "fake", "measurement": self.identity.measurement.hex()}

    def with_identity(self, **changes: object) -> FakeBackend:
        return FakeBackend(replace(self.identity, **changes))  # type: ignore[arg-type]
