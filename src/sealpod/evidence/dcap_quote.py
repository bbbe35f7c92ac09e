"""Intel DCAP quotes: SGX v3, SGX/TDX v4 and v5 (ECDSA-256-with-P-256 attestation keys).

Layouts (sizes in bytes), from the Intel SGX ECDSA Quote Library API (appendix A, quote v3)
and the Intel TDX DCAP Quoting Library API (quote v4 and v5):

    quote      = header(48) [v5: body_type u16, body_size u32] body signature_data_len(u32)
                 signature_data
    header     = version u16, att_key_type u16, tee_type u32 (v3: reserved, zero), qe_svn u16,
                 pce_svn u16, qe_vendor_id(16), user_data(20)
    body       = SGX report body (384) | TD 1.0 body (584) | TD 1.5 body (648, v5 only)
    v3 sig     = signature(64) attestation_key(64) qe_report(384) qe_report_signature(64)
                 qe_auth_data_size u16, qe_auth_data, certification data (type 5)
    v4/v5 sig  = signature(64) attestation_key(64) certification data type 6 wrapping:
                 qe_report(384) qe_report_signature(64) qe_auth_data_size u16, qe_auth_data,
                 certification data (type 5)
    cert data  = type u16, size u32, data; type 5 = PCK certificate chain, PEM, leaf first

The quote's length comes from ``signature_data_len``: many TDX quotes arrive in fixed-size
buffers, so zero bytes after the signature data are accepted (and counted in ``padding``) and any
other trailing byte is refused. Every reserved range must be zero and every variable length has
an upper bound. ``to_bytes()`` reproduces the parsed input exactly, padding included.

Parsing checks structure only. Whether the versions, keys, signatures, certificates and TCB
levels are acceptable is decided by ``sealpod.verify.dcap``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from sealpod._binary import Reader, Writer
from sealpod.crypto import pem
from sealpod.errors import MalformedEvidence
from sealpod.evidence.dcap_body import (
    SGX_REPORT_BODY_SIZE,
    TD10_REPORT_BODY_SIZE,
    TD15_REPORT_BODY_SIZE,
    ReportBody,
    SgxReportBody,
    Td10ReportBody,
    Td15ReportBody,
)

QUOTE_HEADER_SIZE = 48
QE_VENDOR_ID_SIZE = 16
USER_DATA_SIZE = 20
ECDSA_SIGNATURE_SIZE = 64  # r || s, 32 bytes each, big-endian
ATTESTATION_KEY_SIZE = 64  # x || y of a P-256 point, big-endian
V5_BODY_DESCRIPTOR_SIZE = 6  # body_type u16 + body_size u32

ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
SUPPORTED_VERSIONS = (3, 4, 5)

# Intel's quoting enclave vendor id (QE_VENDOR_ID in the quote header).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# Upper bounds on variable lengths. Real quotes carry ~4 KiB of signature data (a 3-certificate
# PEM chain is ~3.7 KiB) and 32 bytes of QE authentication data.
MAX_QUOTE_INPUT_SIZE = 1 << 20
MAX_SIGNATURE_DATA_SIZE = 32 * 1024
MAX_CERT_DATA_SIZE = 24 * 1024
MAX_QE_AUTH_DATA_SIZE = 1024
MAX_PCK_CHAIN_CERTIFICATES = 8

_BODY_SIZES = {
    BODY_TYPE_SGX: SGX_REPORT_BODY_SIZE,
    BODY_TYPE_TD10: TD10_REPORT_BODY_SIZE,
    BODY_TYPE_TD15: TD15_REPORT_BODY_SIZE,
}


def _bounded(r: Reader, value: int, limit: int, field_name: str) -> int:
    if value > limit:
        r.fail(f"field {field_name!r} is {value}, at most {limit} is accepted", field_name)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteHeader:
    """The 48-byte quote header. For v3 quotes ``tee_type`` is 0 (the field is reserved)."""

    version: int
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def read(cls, r: Reader) -> QuoteHeader:
        """Read the header from the start of a quote.

        Raises:
            MalformedEvidence: short input, unknown version, key type or TEE type.
        """
        version = r.u16("version")
        if version not in SUPPORTED_VERSIONS:
            r.fail(f"field 'version' is {version}, expected 3, 4 or 5", "version")
        att_key_type = r.u16("att_key_type")
        if att_key_type != ATT_KEY_TYPE_ECDSA_P256:
            r.fail(
                f"field 'att_key_type' is {att_key_type}, expected 2 (ECDSA-256-with-P-256)",
                "att_key_type",
            )
        if version == 3:
            r.zeros(4, "reserved")
            tee_type = TEE_TYPE_SGX
        else:
            tee_type = r.u32("tee_type")
            if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
                r.fail(
                    f"field 'tee_type' is {tee_type:#x}, expected 0x0 (SGX) or 0x81 (TDX)",
                    "tee_type",
                )
        qe_svn = r.u16("qe_svn")
        pce_svn = r.u16("pce_svn")
        qe_vendor_id = r.take(QE_VENDOR_ID_SIZE, "qe_vendor_id")
        user_data = r.take(USER_DATA_SIZE, "user_data")
        return cls(
            version=version,
            att_key_type=att_key_type,
            tee_type=tee_type,
            qe_svn=qe_svn,
            pce_svn=pce_svn,
            qe_vendor_id=qe_vendor_id,
            user_data=user_data,
        )

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .u16(self.version)
            .u16(self.att_key_type)
            .u32(self.tee_type)
            .u16(self.qe_svn)
            .u16(self.pce_svn)
            .raw(self.qe_vendor_id, QE_VENDOR_ID_SIZE)
            .raw(self.user_data, USER_DATA_SIZE)
            .getvalue()
        )


@functools.lru_cache(maxsize=1024)
def _split_pem_chain(data: bytes, name: str) -> tuple[bytes, ...]:
    """DER of each certificate of a PEM chain (cached by content; errors are not cached).

    The quoting library may end the chain with NUL bytes (a C string's terminator): those, and
    nothing else, are stripped before the armour is read strictly.
    """
    text = data.rstrip(b"\0")
    if not text:
        raise MalformedEvidence(f"{name}: is empty", field="certification_data")
    try:
        return pem.decode(text, max_blocks=MAX_PCK_CHAIN_CERTIFICATES, strict=True)
    except pem.PemError as exc:
        raise MalformedEvidence(
            f"{name}: is not a sequence of PEM certificates (only PEM blocks, whitespace and "
            f"a trailing NUL terminator are accepted): {exc}",
            field="certification_data",
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class PckCertChain:
    """Certification data type 5: the PCK certificate chain in PEM, leaf first.

    ``pem`` holds the bytes exactly as in the quote, including a NUL terminator if the quoting
    library wrote one; ``certificates()`` returns the DER of each certificate.
    """

    pem: bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "PCK certificate chain") -> PckCertChain:
        """Check that ``data`` is PEM certificates (and trailing NUL bytes) only.

        Raises:
            MalformedEvidence: any other byte, bad base64, or too many certificates.
        """
        _split_pem_chain(bytes(data), name)
        return cls(pem=bytes(data))

    def certificates(self) -> tuple[bytes, ...]:
        """DER of each certificate, in chain order (PCK leaf, PCK CA, root).

        Raises:
            MalformedEvidence: the PEM does not parse (only for chains built in code).
        """
        return _split_pem_chain(self.pem, "PCK certificate chain")

    def to_bytes(self) -> bytes:
        """Certification data: type 5, size, PEM."""
        return Writer().u16(CERT_TYPE_PCK_CHAIN).u32(len(self.pem)).raw(self.pem).getvalue()


@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteSignatureData:
    """The quote's ECDSA signature data, flattened over the v3 and v4/v5 layouts.

    ``nested`` is True for v4/v5, where the QE report, its signature and the QE authentication
    data sit inside certification data of type 6 ("QE report certification data").
    """

    signature: bytes
    attestation_key: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: PckCertChain
    nested: bool
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, *, nested: bool, offset: int = 0) -> QuoteSignatureData:
        """Parse signature data that must be consumed exactly.

        Raises:
            MalformedEvidence: short or long input, unsupported certification data type, or a
                length beyond its bound.
        """
        r = Reader(data, name=f"quote signature data (at offset {offset})")
        signature = r.take(ECDSA_SIGNATURE_SIZE, "signature")
        attestation_key = r.take(ATTESTATION_KEY_SIZE, "attestation_key")
        if nested:
            outer_type = r.u16("certification_data_type")
            if outer_type != CERT_TYPE_QE_REPORT:
                r.fail(
                    f"field 'certification_data_type' is {outer_type}, expected 6 (QE report "
                    "certification data)",
                    "certification_data_type",
                )
            size = _bounded(
                r, r.u32("certification_data_size"), MAX_CERT_DATA_SIZE, "certification_data_size"
            )
            inner = Reader(r.take(size, "certification_data"), name="QE report certification data")
            qe_report, qe_report_signature, qe_auth_data, chain = cls._read_qe_part(inner)
            inner.end()
        else:
            qe_report, qe_report_signature, qe_auth_data, chain = cls._read_qe_part(r)
        r.end()
        return cls(
            signature=signature,
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=qe_report_signature,
            qe_auth_data=qe_auth_data,
            certification_data=chain,
            nested=nested,
            raw=bytes(data),
        )

    @staticmethod
    def _read_qe_part(r: Reader) -> tuple[SgxReportBody, bytes, bytes, PckCertChain]:
        qe_report = SgxReportBody.from_bytes(
            r.take(SGX_REPORT_BODY_SIZE, "qe_report"), name="QE report"
        )
        qe_report_signature = r.take(ECDSA_SIGNATURE_SIZE, "qe_report_signature")
        auth_size = _bounded(
            r, r.u16("qe_auth_data_size"), MAX_QE_AUTH_DATA_SIZE, "qe_auth_data_size"
        )
        qe_auth_data = r.take(auth_size, "qe_auth_data")
        cert_type = r.u16("pck_certification_data_type")
        if cert_type != CERT_TYPE_PCK_CHAIN:
            r.fail(
                f"field 'pck_certification_data_type' is {cert_type}, expected 5 (PCK "
                "certificate chain); types 1-4 need the PCK certificate from elsewhere and are "
                "not supported",
                "pck_certification_data_type",
            )
        cert_size = _bounded(
            r,
            r.u32("pck_certification_data_size"),
            MAX_CERT_DATA_SIZE,
            "pck_certification_data_size",
        )
        chain = PckCertChain.from_bytes(r.take(cert_size, "pck_certification_data"))
        return qe_report, qe_report_signature, qe_auth_data, chain

    def _qe_part(self) -> bytes:
        return (
            Writer()
            .raw(self.qe_report.to_bytes(), SGX_REPORT_BODY_SIZE)
            .raw(self.qe_report_signature, ECDSA_SIGNATURE_SIZE)
            .u16(len(self.qe_auth_data))
            .raw(self.qe_auth_data)
            .raw(self.certification_data.to_bytes())
            .getvalue()
        )

    def to_bytes(self) -> bytes:
        w = Writer().raw(self.signature, ECDSA_SIGNATURE_SIZE)
        w.raw(self.attestation_key, ATTESTATION_KEY_SIZE)
        qe_part = self._qe_part()
        if self.nested:
            w.u16(CERT_TYPE_QE_REPORT).u32(len(qe_part))
        return w.raw(qe_part).getvalue()

    @property
    def qe_report_bytes(self) -> bytes:
        """The QE report as received (what the PCK key signed)."""
        return self.qe_report.raw or self.qe_report.to_bytes()


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """A parsed DCAP quote. ``raw`` holds the quote bytes as received, without padding."""

    header: QuoteHeader
    body: ReportBody
    signature_data: QuoteSignatureData
    padding: int = 0
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    @property
    def body_type(self) -> int:
        """The v5 body type of this body (1 SGX, 2 TD 1.0, 3 TD 1.5), for every version."""
        if isinstance(self.body, Td15ReportBody):
            return BODY_TYPE_TD15
        if isinstance(self.body, Td10ReportBody):
            return BODY_TYPE_TD10
        return BODY_TYPE_SGX

    def _signed_prefix(self) -> bytes:
        w = Writer().raw(self.header.to_bytes(), QUOTE_HEADER_SIZE)
        body = self.body.to_bytes()
        if self.header.version == 5:
            w.u16(self.body_type).u32(len(body))
        elif self.body_type == BODY_TYPE_TD15:
            raise ValueError("a TD 1.5 body needs quote version 5")
        return w.raw(body).getvalue()

    @property
    def signed_bytes(self) -> bytes:
        """What the attestation key signed: header and body (v5: with the body descriptor)."""
        if self.raw:
            return self.raw[: self.signed_size]
        return self._signed_prefix()

    @property
    def signed_size(self) -> int:
        size = QUOTE_HEADER_SIZE + len(self.body.to_bytes())
        return size + V5_BODY_DESCRIPTOR_SIZE if self.header.version == 5 else size

    def to_bytes(self) -> bytes:
        """The quote bytes, padding included: equal to the parsed input."""
        sig = self.signature_data.to_bytes()
        w = Writer().raw(self._signed_prefix()).u32(len(sig)).raw(sig)
        return w.zeros(self.padding).getvalue()


def parse_quote(raw: bytes) -> Quote:
    """Parse a DCAP quote (v3, v4 or v5), tolerating zero padding after the signature data.

    Raises:
        MalformedEvidence: the bytes are not a well-formed quote; the message names the field
            and its offset.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedEvidence(f"quote: expected bytes, got {type(raw).__name__}")
    data = bytes(raw)
    if len(data) > MAX_QUOTE_INPUT_SIZE:
        raise MalformedEvidence(
            f"quote: input is {len(data)} bytes, at most {MAX_QUOTE_INPUT_SIZE} are accepted"
        )
    r = Reader(data, name="quote")
    header = replace(QuoteHeader.read(r), raw=data[:QUOTE_HEADER_SIZE])
    if header.version == 5:
        body_type = r.u16("body_type")
        if body_type not in _BODY_SIZES:
            r.fail(f"field 'body_type' is {body_type}, expected 1, 2 or 3", "body_type")
        if (body_type == BODY_TYPE_SGX) != (header.tee_type == TEE_TYPE_SGX):
            r.fail(
                f"field 'body_type' is {body_type} but tee_type is {header.tee_type:#x}",
                "body_type",
            )
        body_size = r.u32("body_size")
        if body_size != _BODY_SIZES[body_type]:
            r.fail(
                f"field 'body_size' is {body_size}, expected {_BODY_SIZES[body_type]} for "
                f"body type {body_type}",
                "body_size",
            )
    else:
        body_type = BODY_TYPE_SGX if header.tee_type == TEE_TYPE_SGX else BODY_TYPE_TD10
    body_offset = r.offset
    body_bytes = r.take(_BODY_SIZES[body_type], "report_body")
    body_name = f"quote report body (at offset {body_offset})"
    body: ReportBody
    if body_type == BODY_TYPE_SGX:
        body = SgxReportBody.from_bytes(body_bytes, name=body_name)
    elif body_type == BODY_TYPE_TD10:
        body = Td10ReportBody.from_bytes(body_bytes, name=body_name)
    else:
        body = Td15ReportBody.from_bytes(body_bytes, name=body_name)
    sig_len = _bounded(
        r, r.u32("signature_data_len"), MAX_SIGNATURE_DATA_SIZE, "signature_data_len"
    )
    sig_offset = r.offset
    sig_bytes = r.take(sig_len, "signature_data")
    quote_end = r.offset
    r.end(allow_zero_padding=True)
    signature_data = QuoteSignatureData.from_bytes(
        sig_bytes, nested=header.version >= 4, offset=sig_offset
    )
    return Quote(
        header=header,
        body=body,
        signature_data=signature_data,
        padding=len(data) - quote_end,
        raw=data[:quote_end],
    )


def clear_caches() -> None:
    """Forget cached PEM chain decodings (cold-cache benchmarks, tests)."""
    _split_pem_chain.cache_clear()
