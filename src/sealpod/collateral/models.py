"""DCAP collateral: the models, and loaders from dcap-qvl JSON and Intel PCS raw responses.

Intel's collateral for a quote (Intel PCS API v4, https://api.portal.trustedservices.intel.com)
is a TCB Info (per FMSPC; SGX or TDX; versions 2 and 3), a QE Identity (``QE`` for SGX,
``TD_QE`` for TDX; version 2), the PCK CRL of the quote's PCK CA, the Intel root CA CRL and the
issuer chains of each. TCB Info and QE Identity are JSON documents signed by Intel's TCB Signing
key: the signature (raw r || s, hex) covers the exact bytes of the ``tcbInfo`` /
``enclaveIdentity`` value as they appear in the response, so those bytes are kept verbatim
(:attr:`QuoteCollateral.tcb_info` is that value as a string) and the parsed models below are
only read after the signature has been checked.

Pure: parses bytes and strings handed to it, never opens files or the network
(``sealpod.collateral.sources`` does).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, Protocol, Self, runtime_checkable

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from sealpod.crypto import pem
from sealpod.errors import MalformedCollateral
from sealpod.verify.claims import TcbStatus, TeeKind

ECDSA_SIGNATURE_SIZE = 64
MAX_SIGNED_JSON_SIZE = 256 * 1024
CACHE_SIZE = 256

QE_TCB_STATUSES = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED})


def _hex_decoder(size: int) -> Callable[[object], object]:
    def decode(value: object) -> object:
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]*", value):
            raise ValueError("expected a hex string")
        if len(value) != 2 * size:
            raise ValueError(f"expected {size} bytes ({2 * size} hex digits), got {len(value)}")
        return bytes.fromhex(value)

    return decode


def _upper_hex(b: bytes) -> str:
    return b.hex().upper()


_HEX_OUT = PlainSerializer(_upper_hex, return_type=str)
Hex2 = Annotated[bytes, BeforeValidator(_hex_decoder(2)), _HEX_OUT]
Hex4 = Annotated[bytes, BeforeValidator(_hex_decoder(4)), _HEX_OUT]
Hex6 = Annotated[bytes, BeforeValidator(_hex_decoder(6)), _HEX_OUT]
Hex8 = Annotated[bytes, BeforeValidator(_hex_decoder(8)), _HEX_OUT]
Hex16 = Annotated[bytes, BeforeValidator(_hex_decoder(16)), _HEX_OUT]
Hex32 = Annotated[bytes, BeforeValidator(_hex_decoder(32)), _HEX_OUT]
Hex48 = Annotated[bytes, BeforeValidator(_hex_decoder(48)), _HEX_OUT]


Svn8 = Annotated[int, Field(ge=0, le=0xFF)]
Svn16 = Annotated[int, Field(ge=0, le=0xFFFF)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", populate_by_name=True)


# --- TCB Info -----------------------------------------------------------------------------------
class TcbComponent(_Model):
    svn: Svn8
    category: str | None = None
    type: str | None = None


class TcbV3(_Model):
    """A TCB level's TCB in TCB Info v3 (component lists)."""

    sgxtcbcomponents: tuple[TcbComponent, ...] = Field(min_length=16, max_length=16)
    pcesvn: Svn16
    tdxtcbcomponents: tuple[TcbComponent, ...] | None = Field(
        default=None, min_length=16, max_length=16
    )


class TcbV2(_Model):
    """A TCB level's TCB in TCB Info v2 (flat ``sgxtcbcompNNsvn`` fields)."""

    sgxtcbcomp01svn: Svn8
    sgxtcbcomp02svn: Svn8
    sgxtcbcomp03svn: Svn8
    sgxtcbcomp04svn: Svn8
    sgxtcbcomp05svn: Svn8
    sgxtcbcomp06svn: Svn8
    sgxtcbcomp07svn: Svn8
    sgxtcbcomp08svn: Svn8
    sgxtcbcomp09svn: Svn8
    sgxtcbcomp10svn: Svn8
    sgxtcbcomp11svn: Svn8
    sgxtcbcomp12svn: Svn8
    sgxtcbcomp13svn: Svn8
    sgxtcbcomp14svn: Svn8
    sgxtcbcomp15svn: Svn8
    sgxtcbcomp16svn: Svn8
    pcesvn: Svn16


class TcbLevel(_Model):
    tcb: TcbV3 | TcbV2
    tcb_date: AwareDatetime = Field(alias="tcbDate")
    tcb_status: TcbStatus = Field(alias="tcbStatus")
    advisory_ids: tuple[str, ...] = Field(default=(), alias="advisoryIDs", max_length=256)

    @property
    def sgx_svns(self) -> tuple[int, ...]:
        """SGX TCB component SVNs 1..16."""
        if isinstance(self.tcb, TcbV3):
            return tuple(c.svn for c in self.tcb.sgxtcbcomponents)
        return tuple(getattr(self.tcb, f"sgxtcbcomp{i:02d}svn") for i in range(1, 17))

    @property
    def pce_svn(self) -> int:
        return self.tcb.pcesvn

    @property
    def tdx_svns(self) -> tuple[int, ...] | None:
        """TDX TCB component SVNs 0..15 (TDX TCB Info only)."""
        if isinstance(self.tcb, TcbV3) and self.tcb.tdxtcbcomponents is not None:
            return tuple(c.svn for c in self.tcb.tdxtcbcomponents)
        return None


class TdxModule(_Model):
    mrsigner: Hex48
    attributes: Hex8
    attributes_mask: Hex8 = Field(alias="attributesMask")


class IsvSvnTcb(_Model):
    isvsvn: Svn16


class IdentityTcbLevel(_Model):
    """A TCB level of a QE identity or a TDX module identity (by ISV SVN)."""

    tcb: IsvSvnTcb
    tcb_date: AwareDatetime = Field(alias="tcbDate")
    tcb_status: TcbStatus = Field(alias="tcbStatus")
    advisory_ids: tuple[str, ...] = Field(default=(), alias="advisoryIDs", max_length=256)

    @field_validator("tcb_status")
    @classmethod
    def _identity_status(cls, v: TcbStatus) -> TcbStatus:
        if v not in QE_TCB_STATUSES:
            raise ValueError(f"identity TCB status {v.value} is not UpToDate/OutOfDate/Revoked")
        return v


class TdxModuleIdentity(_Model):
    id: str = Field(pattern=r"^(?i:TDX)_[0-9A-Fa-f]{2}$")
    mrsigner: Hex48
    attributes: Hex8
    attributes_mask: Hex8 = Field(alias="attributesMask")
    tcb_levels: tuple[IdentityTcbLevel, ...] = Field(alias="tcbLevels", min_length=1)


class TcbInfo(_Model):
    """Intel TCB Info v2 (SGX) or v3 (SGX or TDX): the value of ``tcbInfo``."""

    id: Literal["SGX", "TDX"] | None = None
    version: Literal[2, 3]
    issue_date: AwareDatetime = Field(alias="issueDate")
    next_update: AwareDatetime = Field(alias="nextUpdate")
    fmspc: Hex6
    pce_id: Hex2 = Field(alias="pceId")
    tcb_type: int = Field(alias="tcbType", ge=0)
    tcb_evaluation_data_number: int = Field(alias="tcbEvaluationDataNumber", ge=0)
    tdx_module: TdxModule | None = Field(default=None, alias="tdxModule")
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None = Field(
        default=None, alias="tdxModuleIdentities"
    )
    tcb_levels: tuple[TcbLevel, ...] = Field(alias="tcbLevels", min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        v3_levels = all(isinstance(level.tcb, TcbV3) for level in self.tcb_levels)
        v2_levels = all(isinstance(level.tcb, TcbV2) for level in self.tcb_levels)
        if self.version == 2:
            if self.id is not None or not v2_levels:
                raise ValueError("TCB Info v2 has no id and flat sgxtcbcompNNsvn levels")
            if self.tdx_module is not None or self.tdx_module_identities is not None:
                raise ValueError("TCB Info v2 cannot describe TDX")
            return self
        if self.id is None or not v3_levels:
            raise ValueError("TCB Info v3 needs an id and sgxtcbcomponents levels")
        tdx_levels = [level.tdx_svns is not None for level in self.tcb_levels]
        if self.id == "TDX":
            if self.tdx_module is None or not all(tdx_levels):
                raise ValueError("TDX TCB Info needs tdxModule and tdxtcbcomponents everywhere")
        elif any(tdx_levels) or self.tdx_module or self.tdx_module_identities:
            raise ValueError("SGX TCB Info cannot carry TDX fields")
        return self

    @property
    def tee(self) -> TeeKind:
        return TeeKind.TDX if self.id == "TDX" else TeeKind.SGX

    @classmethod
    def from_raw(cls, raw: bytes | str) -> TcbInfo:
        """Parse the exact ``tcbInfo`` value (cached by content).

        Raises:
            MalformedCollateral: not JSON of the TCB Info shape.
        """
        return _parse_tcb_info(raw.encode("utf-8") if isinstance(raw, str) else bytes(raw))


# --- QE Identity --------------------------------------------------------------------------------
class QeIdentity(_Model):
    """Intel Enclave Identity v2 for the quoting enclave (``QE``, ``TD_QE``; ``QVE`` parses)."""

    id: Literal["QE", "TD_QE", "QVE"]
    version: Literal[2]
    issue_date: AwareDatetime = Field(alias="issueDate")
    next_update: AwareDatetime = Field(alias="nextUpdate")
    tcb_evaluation_data_number: int = Field(alias="tcbEvaluationDataNumber", ge=0)
    miscselect: Hex4
    miscselect_mask: Hex4 = Field(alias="miscselectMask")
    attributes: Hex16
    attributes_mask: Hex16 = Field(alias="attributesMask")
    mrsigner: Hex32
    isvprodid: Svn16
    tcb_levels: tuple[IdentityTcbLevel, ...] = Field(alias="tcbLevels", min_length=1)

    @classmethod
    def from_raw(cls, raw: bytes | str) -> QeIdentity:
        """Parse the exact ``enclaveIdentity`` value (cached by content).

        Raises:
            MalformedCollateral: not JSON of the Enclave Identity shape.
        """
        return _parse_qe_identity(raw.encode("utf-8") if isinstance(raw, str) else bytes(raw))


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top)"
    return f"field {where}: {first['msg']} ({exc.error_count()} error(s))"


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_tcb_info(raw: bytes) -> TcbInfo:
    if len(raw) > MAX_SIGNED_JSON_SIZE:
        raise MalformedCollateral(f"TCB Info is {len(raw)} bytes, at most {MAX_SIGNED_JSON_SIZE}")
    try:
        return TcbInfo.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedCollateral(f"TCB Info: {_validation_message(exc)}") from exc


@functools.lru_cache(maxsize=CACHE_SIZE)
def _parse_qe_identity(raw: bytes) -> QeIdentity:
    if len(raw) > MAX_SIGNED_JSON_SIZE:
        raise MalformedCollateral(
            f"QE Identity is {len(raw)} bytes, at most {MAX_SIGNED_JSON_SIZE}"
        )
    try:
        return QeIdentity.model_validate_json(raw)
    except ValidationError as exc:
        raise MalformedCollateral(f"QE Identity: {_validation_message(exc)}") from exc


# --- signed responses ---------------------------------------------------------------------------
_WS = " \t\r\n"


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def split_signed_json(body: bytes, key: str, *, what: str) -> tuple[str, bytes]:
    """Split an Intel PCS response ``{"<key>": {...}, "signature": "<hex>"}``.

    Returns the ``key`` value exactly as it appears in ``body`` (what Intel signed) and the
    64-byte signature. The top-level object is walked with the standard JSON decoder, one member
    at a time, to find where the value starts and ends; duplicate or unknown members are refused.

    Raises:
        MalformedCollateral: not UTF-8 JSON of that shape, or the signature is not 64 bytes.
    """
    if len(body) > MAX_SIGNED_JSON_SIZE:
        raise MalformedCollateral(f"{what}: response is {len(body)} bytes, too large")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedCollateral(f"{what}: response is not UTF-8") from exc
    decoder = json.JSONDecoder(parse_constant=_no_constants)
    members: dict[str, tuple[int, int, object]] = {}

    def skip(i: int) -> int:
        while i < len(text) and text[i] in _WS:
            i += 1
        return i

    def expect(i: int, char: str) -> int:
        if i >= len(text) or text[i] != char:
            found = repr(text[i]) if i < len(text) else "end of input"
            raise MalformedCollateral(f"{what}: expected {char!r} at {i}, found {found}")
        return i + 1

    try:
        i = expect(skip(0), "{")
        i = skip(i)
        while True:
            if i < len(text) and text[i] == "}" and not members:
                i += 1
                break
            expect(i, '"')
            name, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = expect(skip(i), ":")
            start = skip(i)
            value, end = decoder.raw_decode(text, start)
            if name in members:
                raise MalformedCollateral(f"{what}: member {name!r} appears twice")
            members[name] = (start, end, value)
            i = skip(end)
            if i < len(text) and text[i] == ",":
                i = skip(i + 1)
                continue
            i = expect(i, "}")
            break
    except (json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, MalformedCollateral):
            raise
        raise MalformedCollateral(f"{what}: not JSON ({exc})") from exc
    if skip(i) != len(text):
        raise MalformedCollateral(f"{what}: trailing data after the JSON object")
    if set(members) != {key, "signature"}:
        raise MalformedCollateral(
            f"{what}: members are {sorted(members)}, expected ['{key}', 'signature']"
        )
    start, end, value = members[key]
    if not isinstance(value, dict):
        raise MalformedCollateral(f"{what}: {key!r} is not an object")
    signature = members["signature"][2]
    return text[start:end], _signature_from_hex(signature, f"{what} signature")


def _signature_from_hex(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]*", value):
        raise MalformedCollateral(f"{what} is not a hex string")
    sig = bytes.fromhex(value)
    if len(sig) != ECDSA_SIGNATURE_SIZE:
        raise MalformedCollateral(f"{what} is {len(sig)} bytes, expected {ECDSA_SIGNATURE_SIZE}")
    return sig


def crl_to_der(data: bytes | str, *, what: str = "CRL") -> bytes:
    """Normalize a CRL given as DER, PEM or hex text (PCS serves each) to DER.

    Raises:
        MalformedCollateral: none of the three.
    """
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    # Text forms first: hex text of a CRL starts with "30" (ASCII 0x33), and "0x..." with
    # ASCII "0" = 0x30, which a DER check alone would mistake for a SEQUENCE tag.
    if pem.is_pem(stripped):
        # Lenient, as OpenSSL reads PEM: PCS and mirrors serve CRLs on one line or indented,
        # and the DER is signature-checked by the verifier whatever its armour looked like.
        try:
            return pem.decode(stripped, label=pem.X509_CRL, max_blocks=1)[0]
        except pem.PemError as exc:
            raise MalformedCollateral(f"{what} is not DER, PEM or hex: PEM {exc}") from exc
    try:
        if stripped and re.fullmatch(rb"(0x)?[0-9A-Fa-f]+", stripped):
            decoded = bytes.fromhex(stripped.removeprefix(b"0x").decode())
            if decoded[:1] == b"\x30":
                return decoded
            raise MalformedCollateral(f"{what} is hex but not a DER SEQUENCE")
    except ValueError as exc:
        raise MalformedCollateral(f"{what} is not DER, PEM or hex") from exc
    if raw[:1] == b"\x30":
        return raw
    raise MalformedCollateral(f"{what} is not DER, PEM or hex")


# --- the collateral for one quote ----------------------------------------------------------------
class QuoteCollateral(_Model):
    """Everything besides the quote needed to verify it; fields as dcap-qvl QuoteCollateralV3.

    ``tcb_info`` and ``qe_identity`` are the signed JSON values exactly as Intel served them.
    ``pck_crl`` may be None only when the verifier is told ``unsafe_allow_missing_pck_crl``.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes | None
    tcb_info_issuer_chain: str
    tcb_info: str = Field(min_length=2, max_length=MAX_SIGNED_JSON_SIZE)
    tcb_info_signature: bytes = Field(min_length=64, max_length=64)
    qe_identity_issuer_chain: str
    qe_identity: str = Field(min_length=2, max_length=MAX_SIGNED_JSON_SIZE)
    qe_identity_signature: bytes = Field(min_length=64, max_length=64)

    @property
    def tcb_info_bytes(self) -> bytes:
        """The signed bytes of the TCB Info."""
        return self.tcb_info.encode("utf-8")

    @property
    def qe_identity_bytes(self) -> bytes:
        return self.qe_identity.encode("utf-8")

    def digest(self) -> bytes:
        """SHA-256 over every field (length-prefixed): a content key for caches."""
        h = hashlib.sha256()
        for name in type(self).model_fields:
            value = getattr(self, name)
            data = (
                b"\xff"
                if value is None
                else (value if isinstance(value, bytes) else value.encode())
            )
            h.update(len(data).to_bytes(8, "big") + data)
        return h.digest()

    @classmethod
    def from_dcap_qvl_json(cls, data: bytes | str) -> QuoteCollateral:
        """Load dcap-qvl's ``QuoteCollateralV3`` JSON (CRLs and signatures as hex).

        Raises:
            MalformedCollateral: not that shape.
        """
        try:
            doc = json.loads(data, parse_constant=_no_constants)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise MalformedCollateral(f"dcap-qvl collateral: not JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise MalformedCollateral("dcap-qvl collateral: not a JSON object")
        known = set(cls.model_fields) | {"pck_certificate_chain"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise MalformedCollateral(f"dcap-qvl collateral: unknown fields {unknown}")
        missing = sorted(set(cls.model_fields) - set(doc) - {"pck_crl"})
        if missing:
            raise MalformedCollateral(f"dcap-qvl collateral: missing fields {missing}")
        pck_crl = doc.get("pck_crl")
        try:
            return cls(
                pck_crl_issuer_chain=doc["pck_crl_issuer_chain"],
                root_ca_crl=crl_to_der(_text(doc["root_ca_crl"]), what="root_ca_crl"),
                pck_crl=None
                if pck_crl in (None, "")
                else crl_to_der(_text(pck_crl), what="pck_crl"),
                tcb_info_issuer_chain=doc["tcb_info_issuer_chain"],
                tcb_info=doc["tcb_info"],
                tcb_info_signature=_signature_from_hex(
                    doc["tcb_info_signature"], "tcb_info_signature"
                ),
                qe_identity_issuer_chain=doc["qe_identity_issuer_chain"],
                qe_identity=doc["qe_identity"],
                qe_identity_signature=_signature_from_hex(
                    doc["qe_identity_signature"], "qe_identity_signature"
                ),
            )
        except ValidationError as exc:
            raise MalformedCollateral(f"dcap-qvl collateral: {_validation_message(exc)}") from exc

    def to_dcap_qvl_json(self) -> str:
        """Serialize as dcap-qvl ``QuoteCollateralV3`` JSON (round-trips with the loader)."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex() if self.pck_crl is not None else "",
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            }
        )

    @classmethod
    def from_pcs(
        cls,
        *,
        tcb_info_response: bytes,
        tcb_info_issuer_chain: str,
        qe_identity_response: bytes,
        qe_identity_issuer_chain: str,
        root_ca_crl: bytes | str,
        pck_crl: bytes | str | None,
        pck_crl_issuer_chain: str,
    ) -> QuoteCollateral:
        """Assemble collateral from Intel PCS v4 responses, taken verbatim.

        ``tcb_info_response``/``qe_identity_response`` are the response bodies
        (``{"tcbInfo": ..., "signature": ...}``); the issuer chains come from the
        ``TCB-Info-Issuer-Chain`` / ``SGX-Enclave-Identity-Issuer-Chain`` /
        ``SGX-PCK-CRL-Issuer-Chain`` headers (URL-decoded PEM); CRLs may be DER, PEM or hex.

        Raises:
            MalformedCollateral: a response is not of the expected shape.
        """
        tcb_info, tcb_sig = split_signed_json(tcb_info_response, "tcbInfo", what="TCB Info")
        qe_id, qe_sig = split_signed_json(
            qe_identity_response, "enclaveIdentity", what="QE Identity"
        )
        try:
            return cls(
                pck_crl_issuer_chain=pck_crl_issuer_chain,
                root_ca_crl=crl_to_der(root_ca_crl, what="root CA CRL"),
                pck_crl=None if pck_crl is None else crl_to_der(pck_crl, what="PCK CRL"),
                tcb_info_issuer_chain=tcb_info_issuer_chain,
                tcb_info=tcb_info,
                tcb_info_signature=tcb_sig,
                qe_identity_issuer_chain=qe_identity_issuer_chain,
                qe_identity=qe_id,
                qe_identity_signature=qe_sig,
            )
        except ValidationError as exc:
            raise MalformedCollateral(f"PCS collateral: {_validation_message(exc)}") from exc


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedCollateral(f"expected a string, got {type(value).__name__}")
    return value


@runtime_checkable
class DcapCollateralProvider(Protocol):
    """Where DCAP collateral comes from (files, Intel PCS, a simulated platform)."""

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """Collateral for a platform: ``fmspc`` as 12 hex digits, ``ca`` "platform" or
        "processor", ``tee`` SGX or TDX.

        Raises:
            CollateralUnavailable: it cannot be obtained.
            MalformedCollateral: what was obtained does not parse.
        """
        ...


def clear_caches() -> None:
    """Forget parsed TCB Info / QE Identity documents (cold-cache benchmarks, tests)."""
    _parse_tcb_info.cache_clear()
    _parse_qe_identity.cache_clear()


def utc_text(t: datetime) -> str:
    """Intel's timestamp format, for messages."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
