"""The evidence envelope (docs/protocol.md, Artifacts and identities) and detection of the format
evidence arrives in.

Evidence reaches a verifier as raw binary, hex text (``0x`` prefix and whitespace allowed),
base64 text, or the envelope JSON ``{tee, evidence, certificates?, runtime_data?}``.
:func:`load_evidence` tells them apart and then tells the TEE format from the bytes themselves:

* DCAP quote: header ``version`` u16 at 0 (3, 4 or 5) and ``att_key_type`` u16 at 2 (2 = ECDSA
  P-256, 3 = P-384); v3 is SGX, v4/v5 name it in ``tee_type`` u32 at 4 (0x00 SGX, 0x81 TDX);
* SEV-SNP report: exactly 0x4A0 bytes whose ``version`` u32 at 0 is 2, 3, 4 or 5 (so bytes 1-3
  are zero, where a DCAP header has its non-zero ``att_key_type``).

``tee`` names the evidence *format*: ``sgx``, ``tdx`` or ``snp``. Simulated evidence uses the same
names and the same formats; whether evidence is simulated is never taken from the envelope (a
host could write anything there) but decided by the verifier from the root its chain ends at,
and then shown in every claim (``tee = "sim"``, ``emulated = "sgx" | "tdx" | "snp"``).

Every size is bounded and every malformed input raises :class:`MalformedEvidence`.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sealpod.errors import MalformedEvidence
from sealpod.evidence.snp_report import REPORT_SIZE as SNP_REPORT_SIZE
from sealpod.evidence.snp_report import SUPPORTED_VERSIONS as SNP_VERSIONS
from sealpod.verify.claims import TeeKind

MAX_INPUT_SIZE = 1024 * 1024  # any one evidence file or request body
MAX_EVIDENCE_SIZE = 256 * 1024  # decoded quote/report (DCAP quotes are ~5-16 KiB)
MAX_CERTIFICATES_SIZE = 64 * 1024
MAX_RUNTIME_DATA_SIZE = 64 * 1024

DCAP_HEADER_SIZE = 48
DCAP_VERSIONS = (3, 4, 5)
DCAP_ATT_KEY_TYPES = (2, 3)
DCAP_TEE_SGX = 0x00
DCAP_TEE_TDX = 0x81

_HEX_DIGITS = frozenset(string.hexdigits)
_WHITESPACE = re.compile(rb"\s+")
_TEXT_BYTES = frozenset(bytes(string.printable, "ascii"))

TeeFormat = Literal["sgx", "tdx", "snp"]


def detect_kind(raw: bytes) -> TeeKind:
    """The TEE format of quote/report bytes: SGX or TDX (DCAP), or SNP.

    Raises:
        MalformedEvidence: neither a DCAP quote header nor an SNP report.
    """
    if len(raw) == SNP_REPORT_SIZE and int.from_bytes(raw[:4], "little") in SNP_VERSIONS:
        return TeeKind.SNP
    if len(raw) >= DCAP_HEADER_SIZE:
        version = int.from_bytes(raw[0:2], "little")
        key_type = int.from_bytes(raw[2:4], "little")
        if version in DCAP_VERSIONS and key_type in DCAP_ATT_KEY_TYPES:
            if version == 3:
                return TeeKind.SGX
            tee_type = int.from_bytes(raw[4:8], "little")
            if tee_type == DCAP_TEE_SGX:
                return TeeKind.SGX
            if tee_type == DCAP_TEE_TDX:
                return TeeKind.TDX
            raise MalformedEvidence(
                f"DCAP quote: field 'tee_type' is {tee_type:#x}, expected 0x0 (SGX) or 0x81 (TDX)",
                field="tee_type",
                offset=4,
            )
    raise MalformedEvidence(
        f"evidence ({len(raw)} bytes) is neither a DCAP quote (version 3-5, ECDSA key type) nor "
        f"an SEV-SNP report ({SNP_REPORT_SIZE} bytes, version 2-5)",
        field="header",
        offset=0,
    )


class EvidenceEnvelope(BaseModel):
    """``{tee, evidence, certificates?, runtime_data?}``: the JSON form of evidence.

    ``evidence`` is the quote or report in base64; ``certificates`` PEM (SNP: VCEK or VLEK, ASK
    or ASVK, ARK); ``runtime_data`` the caller's data whose hash is the report data, verbatim.
    Construction checks that ``evidence`` decodes and that its bytes are of format ``tee``.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    tee: TeeFormat
    evidence: str = Field(repr=False, max_length=(MAX_EVIDENCE_SIZE * 4) // 3 + 4)
    certificates: str | None = Field(default=None, repr=False, max_length=MAX_CERTIFICATES_SIZE)
    runtime_data: str | None = Field(default=None, max_length=MAX_RUNTIME_DATA_SIZE)

    @model_validator(mode="after")
    def _check_evidence(self) -> EvidenceEnvelope:
        raw = _b64decode(self.evidence.encode("ascii", "replace"), what="evidence")
        kind = detect_kind(raw)
        if kind.value != self.tee:
            raise ValueError(f"tee is {self.tee!r} but the evidence is a {kind.value} quote/report")
        if self.certificates is not None and "-----BEGIN" not in self.certificates:
            raise ValueError("certificates must be PEM")
        return self

    @property
    def kind(self) -> TeeKind:
        return TeeKind(self.tee)

    @property
    def raw(self) -> bytes:
        """The decoded quote or report."""
        return _b64decode(self.evidence.encode("ascii"), what="evidence")

    @property
    def certificate_bytes(self) -> bytes | None:
        return None if self.certificates is None else self.certificates.encode("ascii", "replace")

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RawEvidence:
    """Evidence that came without an envelope; ``tee`` is detected from the bytes."""

    tee: TeeKind
    raw: bytes = field(repr=False)
    encoding: str  # "binary", "hex" or "base64": how it arrived

    @property
    def kind(self) -> TeeKind:
        return self.tee


def load_evidence(data: bytes) -> EvidenceEnvelope | RawEvidence:
    """Detect the encoding of ``data`` and return the envelope or the raw evidence.

    Order: JSON envelope (first non-blank byte ``{``), raw binary (a recognised quote/report
    header), hex text (optional ``0x``, whitespace anywhere), base64 text (standard or URL-safe
    alphabet, whitespace anywhere).

    Raises:
        MalformedEvidence: too large, none of the encodings, an invalid envelope, or bytes that
            are neither a DCAP quote nor an SNP report.
    """
    data = bytes(data)
    if len(data) > MAX_INPUT_SIZE:
        raise MalformedEvidence(
            f"evidence input is {len(data)} bytes, expected at most {MAX_INPUT_SIZE}"
        )
    if not data.strip():
        raise MalformedEvidence("evidence input is empty")
    if data.lstrip()[:1] == b"{":
        return _load_envelope(data)
    try:
        return RawEvidence(tee=detect_kind(data), raw=data, encoding="binary")
    except MalformedEvidence:
        if not set(data) <= _TEXT_BYTES:
            raise
    text = _WHITESPACE.sub(b"", data)
    hex_text = text[2:] if text[:2] in (b"0x", b"0X") else text
    if hex_text and len(hex_text) % 2 == 0 and set(hex_text.decode("ascii")) <= _HEX_DIGITS:
        raw = bytes.fromhex(hex_text.decode("ascii"))
        return RawEvidence(tee=detect_kind(raw), raw=raw, encoding="hex")
    raw = _b64decode(text, what="evidence text")
    return RawEvidence(tee=detect_kind(raw), raw=raw, encoding="base64")


def _load_envelope(data: bytes) -> EvidenceEnvelope:
    try:
        return EvidenceEnvelope.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "envelope"
        raise MalformedEvidence(
            f"evidence envelope: {where}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""),
            field=where,
        ) from exc


def _b64decode(text: bytes, *, what: str) -> bytes:
    compact = _WHITESPACE.sub(b"", text)
    if not compact:
        raise MalformedEvidence(f"{what} is empty")
    if len(compact) > (MAX_EVIDENCE_SIZE * 4) // 3 + 4:
        raise MalformedEvidence(f"{what} is larger than {MAX_EVIDENCE_SIZE} bytes")
    if b"-" in compact or b"_" in compact:
        compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEvidence(
            f"{what} is neither hex nor base64 (nor an envelope JSON object)"
        ) from exc
    if not raw:
        raise MalformedEvidence(f"{what} decodes to nothing")
    return raw
