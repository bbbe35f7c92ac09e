"""What every evidence source offers: :class:`Evidence` and the :class:`TeeBackend` protocol.

A backend turns 64 bytes of report data into evidence that binds them to the workload's measured
identity: a DCAP quote (SGX, TDX) or an SEV-SNP attestation report, plus the certificates a
verifier needs when the evidence does not carry them itself (SNP's VCEK chain).

The evidence's ``tee`` names its *format* (sgx, tdx, snp): simulated evidence uses the very same
formats, and only the verifier's trust anchors decide that it is simulated (``tee = "sim"`` in
the verified claims). ``simulated`` here is an informational hint for display, never trusted.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sealpod.errors import ConfigError
from sealpod.verify.claims import TeeKind

if TYPE_CHECKING:
    from sealpod.evidence.envelope import EvidenceEnvelope, TeeFormat

#: SGX REPORTDATA, TDX REPORTDATA and SNP REPORT_DATA are all 64 bytes.
REPORT_DATA_SIZE = 64

#: Formats a backend can emit.
EVIDENCE_KINDS = (TeeKind.SGX, TeeKind.TDX, TeeKind.SNP)


def normalize_report_data(report_data: bytes) -> bytes:
    """Return ``report_data`` zero-padded to 64 bytes, as the hardware fields are.

    Raises:
        ConfigError: more than 64 bytes.
    """
    if len(report_data) > REPORT_DATA_SIZE:
        raise ConfigError(
            f"report_data is {len(report_data)} bytes, expected at most {REPORT_DATA_SIZE}"
        )
    return bytes(report_data).ljust(REPORT_DATA_SIZE, b"\x00")


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Evidence as a backend produced it.

    ``raw`` is the quote or report exactly as the TEE returned it; ``certificates`` (PEM) are the
    endorsement certificates that travel with it (SNP: VCEK, ASK, ARK); ``runtime_data`` is the
    optional caller data whose hash is the report data (KBS-style), carried verbatim.
    """

    tee: TeeKind
    raw: bytes = field(repr=False)
    certificates: bytes | None = field(default=None, repr=False)
    runtime_data: str | None = None
    source: str = "unknown"
    simulated: bool = False

    def __post_init__(self) -> None:
        if self.tee not in EVIDENCE_KINDS:
            raise ConfigError(f"evidence format is {self.tee.value!r}, expected sgx, tdx or snp")

    def to_envelope(self) -> EvidenceEnvelope:
        """The JSON envelope (docs/protocol.md, Artifacts and identities) that ``sealpod attest``
        writes and verifiers read."""
        from sealpod.evidence.envelope import EvidenceEnvelope

        tee: TeeFormat = (
            "sgx" if self.tee is TeeKind.SGX else ("tdx" if self.tee is TeeKind.TDX else "snp")
        )
        return EvidenceEnvelope(
            tee=tee,
            evidence=base64.b64encode(self.raw).decode("ascii"),
            certificates=self.certificates.decode("ascii") if self.certificates else None,
            runtime_data=self.runtime_data,
        )

    def summary(self) -> dict[str, object]:
        """A short description for logs and ``--json`` output (no evidence bytes)."""
        return {
            "tee": self.tee.value,
            "source": self.source,
            "simulated": self.simulated,
            "size": len(self.raw),
            "certificates": self.certificates is not None,
        }


@runtime_checkable
class TeeBackend(Protocol):
    """An evidence source: the simulated platform, Gramine's /dev/attestation or configfs-tsm."""

    @property
    def name(self) -> str:
        """Short backend name: ``sim``, ``gramine`` or ``tsm``."""
        ...

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Ask the TEE for evidence binding ``report_data`` (at most 64 bytes, zero-padded).

        Raises:
            ConfigError: report data longer than 64 bytes.
            TeeUnavailable: the TEE interface is absent.
            EvidenceGenerationError: the TEE refused or returned something unusable.
        """
        ...

    def describe(self) -> dict[str, object]:
        """What this backend is and how it is configured (JSON-ready, no secrets)."""
        ...
