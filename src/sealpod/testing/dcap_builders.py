"""Builders for synthetic Intel DCAP evidence: a test PKI, PCK certificates with SGX extensions,
signed TCB Info / QE Identity, CRLs and signed quotes v3/v4/v5.

For tests and for the simulated platform: everything here is real cryptography over keys made
on the spot, so quotes built with it go through every code path of ``sealpod.verify.dcap``.
Nothing here is trusted by default; pass the root's fingerprint in ``TrustAnchors.sim_roots``.

    pki = DcapPki.create(now=now)
    quote = pki.quote(tee="tdx", version=4, report_data=b"...")
    claims = DcapVerifier(pki.trust()).verify(quote, pki.collateral(tee="tdx"), now=now)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from sealpod.collateral.models import QuoteCollateral
from sealpod.evidence.dcap_body import (
    SgxReportBody,
    Td10ReportBody,
    Td15ReportBody,
)
from sealpod.evidence.dcap_quote import (
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    PckCertChain,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
)
from sealpod.tee.sim_pki import issue_crl
from sealpod.verify.pck import SgxEntries, SgxEntry, SgxType
from sealpod.verify.trust import TrustAnchors, fingerprint

SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
# Intel's production QE identities (MRSIGNER of the SGX QE and the TD QE).
QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
TD_QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_ATTRIBUTES_MASK = bytes.fromhex("fbffffffffffffff0000000000000000")
DEFAULT_FMSPC = bytes.fromhex("00906ed50000")
# TD_ATTRIBUTES with SEPT_VE_DISABLE (bit 28) set, as real TDs have.
TD_ATTRIBUTES_DEFAULT = bytes.fromhex("0000001000000000")


# --- keys, signatures, names --------------------------------------------------------------------
def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def raw_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte x || y of a P-256 public key, as quotes carry attestation keys."""
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]


def sign_rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 signature as raw r || s (32 bytes each)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealpod Test"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


# --- certificates -------------------------------------------------------------------------------
def build_certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    serial: int | None = None,
    path_length: int | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """One certificate; ``issuer=None`` makes it self-signed."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _entry(arc: str, value: core.Asn1Value) -> SgxEntry:
    return SgxEntry({"id": arc, "value": core.Any.load(value.dump())})


@dataclass(frozen=True, slots=True, kw_only=True)
class PckFacts:
    """What goes into a PCK certificate's SGX extension."""

    ppid: bytes = bytes(range(16))
    comp_svns: tuple[int, ...] = (2,) * 16
    pce_svn: int = 13
    cpu_svn: bytes = bytes([2] * 16)
    pce_id: bytes = bytes(2)
    fmspc: bytes = DEFAULT_FMSPC
    sgx_type: int = 0
    platform_instance_id: bytes | None = None


def encode_sgx_extensions(facts: PckFacts, *, extra: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """DER of the SGX extension value (asn1crypto); ``extra`` appends raw (oid, DER) entries."""
    base = SGX_EXTENSIONS_OID
    tcb = SgxEntries(
        [_entry(f"{base}.2.{i + 1}", core.Integer(svn)) for i, svn in enumerate(facts.comp_svns)]
        + [
            _entry(f"{base}.2.17", core.Integer(facts.pce_svn)),
            _entry(f"{base}.2.18", core.OctetString(facts.cpu_svn)),
        ]
    )
    entries = [
        _entry(f"{base}.1", core.OctetString(facts.ppid)),
        _entry(f"{base}.2", tcb),
        _entry(f"{base}.3", core.OctetString(facts.pce_id)),
        _entry(f"{base}.4", core.OctetString(facts.fmspc)),
        _entry(f"{base}.5", SgxType(facts.sgx_type)),
    ]
    if facts.platform_instance_id is not None:
        entries.append(_entry(f"{base}.6", core.OctetString(facts.platform_instance_id)))
    for oid, der in extra:
        entries.append(SgxEntry({"id": oid, "value": core.Any.load(der)}))
    return bytes(SgxEntries(entries).dump())


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: datetime,
    next_update: datetime,
    revoked: Sequence[int] = (),
    crl_number: int = 1,
) -> bytes:
    """A DER CRL listing ``revoked`` serial numbers (with CRL number and AKI, RFC 5280)."""
    return issue_crl(
        issuer=issuer,
        issuer_key=issuer_key,
        revoked_serials=revoked,
        this_update=this_update,
        next_update=next_update,
        number=crl_number,
    )


# --- signed JSON --------------------------------------------------------------------------------
def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_json(value: Mapping[str, Any], key: ec.EllipticCurvePrivateKey) -> tuple[str, bytes]:
    """Serialize ``value`` compactly and sign the exact bytes: (raw JSON, r || s)."""
    raw = json.dumps(value, separators=(",", ":"))
    return raw, sign_rs(key, raw.encode())


def pcs_response(member: str, raw: str, signature: bytes) -> bytes:
    """An Intel PCS style body ``{"<member>": <raw>, "signature": "<hex>"}``."""
    return ('{"' + member + '":' + raw + ',"signature":"' + signature.hex() + '"}').encode()


def tcb_component_list(svns: Sequence[int]) -> list[dict[str, Any]]:
    return [{"svn": s} for s in svns]


def tcb_info_document(
    *,
    tee: str,
    issue: datetime,
    next_update: datetime,
    fmspc: bytes = DEFAULT_FMSPC,
    pce_id: bytes = bytes(2),
    levels: Sequence[Mapping[str, Any]] | None = None,
    tdx_module: Mapping[str, Any] | None = None,
    tdx_module_identities: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A TCB Info v3 value (``tee`` "sgx" or "tdx") with one UpToDate level by default."""
    if levels is None:
        tcb: dict[str, Any] = {"sgxtcbcomponents": tcb_component_list([2] * 16), "pcesvn": 13}
        if tee == "tdx":
            tcb["tdxtcbcomponents"] = tcb_component_list([1] * 16)
        levels = [{"tcb": tcb, "tcbDate": _ts(issue), "tcbStatus": "UpToDate"}]
    doc: dict[str, Any] = {
        "id": tee.upper(),
        "version": 3,
        "issueDate": _ts(issue),
        "nextUpdate": _ts(next_update),
        "fmspc": fmspc.hex().upper(),
        "pceId": pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
    }
    if tee == "tdx":
        doc["tdxModule"] = dict(
            tdx_module
            or {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}
        )
        doc["tdxModuleIdentities"] = list(
            tdx_module_identities
            if tdx_module_identities is not None
            else [
                {
                    "id": "TDX_01",
                    "mrsigner": "00" * 48,
                    "attributes": "00" * 8,
                    "attributesMask": "FF" * 8,
                    "tcbLevels": [
                        {"tcb": {"isvsvn": 1}, "tcbDate": _ts(issue), "tcbStatus": "UpToDate"}
                    ],
                }
            ]
        )
    doc["tcbLevels"] = list(levels)
    return doc


def qe_identity_document(
    *,
    tee: str,
    issue: datetime,
    next_update: datetime,
    levels: Sequence[Mapping[str, Any]] | None = None,
    mrsigner: bytes | None = None,
) -> dict[str, Any]:
    """A QE Identity v2 value (``QE`` for sgx, ``TD_QE`` for tdx), ISVSVN >= 1 UpToDate."""
    return {
        "id": "TD_QE" if tee == "tdx" else "QE",
        "version": 2,
        "issueDate": _ts(issue),
        "nextUpdate": _ts(next_update),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": QE_ATTRIBUTES.hex().upper(),
        "attributesMask": QE_ATTRIBUTES_MASK.hex().upper(),
        "mrsigner": (mrsigner or (TD_QE_MRSIGNER if tee == "tdx" else QE_MRSIGNER)).hex().upper(),
        "isvprodid": 2 if tee == "tdx" else 1,
        "tcbLevels": list(
            levels
            if levels is not None
            else [{"tcb": {"isvsvn": 1}, "tcbDate": _ts(issue), "tcbStatus": "UpToDate"}]
        ),
    }


# --- report bodies and quotes -------------------------------------------------------------------
def sgx_body(**fields: Any) -> SgxReportBody:
    """An SGX report body with zero/neutral defaults; override any field."""
    base: dict[str, Any] = {
        "cpu_svn": bytes(16),
        "misc_select": 0,
        "attributes": bytes.fromhex("05000000000000000700000000000000"),
        "mr_enclave": hashlib.sha256(b"enclave").digest(),
        "mr_signer": hashlib.sha256(b"signer").digest(),
        "isv_prod_id": 1,
        "isv_svn": 1,
        "report_data": bytes(64),
    }
    base.update(fields)
    return SgxReportBody(**base)


def td_body(*, td15: bool = False, **fields: Any) -> Td10ReportBody:
    """A TD 1.0 (or 1.5) body with TDX module version 1 (tee_tcb_svn 01 01 ...)."""
    base: dict[str, Any] = {
        "tee_tcb_svn": bytes([1, 1]) + bytes([1] * 14),
        "mr_seam": hashlib.sha384(b"seam").digest(),
        "mr_signer_seam": bytes(48),
        "seam_attributes": bytes(8),
        "td_attributes": TD_ATTRIBUTES_DEFAULT,
        "xfam": bytes.fromhex("e718060000000000"),
        "mr_td": hashlib.sha384(b"td").digest(),
        "mr_config_id": bytes(48),
        "mr_owner": bytes(48),
        "mr_owner_config": bytes(48),
        "rt_mr0": bytes(48),
        "rt_mr1": bytes(48),
        "rt_mr2": bytes(48),
        "rt_mr3": bytes(48),
        "report_data": bytes(64),
    }
    base.update(fields)
    if td15:
        base.setdefault("tee_tcb_svn2", base["tee_tcb_svn"])
        base.setdefault("mr_service_td", bytes(48))
    return Td15ReportBody(**base) if td15 else Td10ReportBody(**base)


def qe_report_for(
    attestation_key: bytes, qe_auth_data: bytes, *, tee: str, **fields: Any
) -> SgxReportBody:
    """A QE report whose report data binds the attestation key (Step 5 of verification)."""
    bound = hashlib.sha256(attestation_key + qe_auth_data).digest() + bytes(32)
    base: dict[str, Any] = {
        "cpu_svn": bytes(16),
        "misc_select": 0,
        "attributes": QE_ATTRIBUTES,
        "mr_enclave": hashlib.sha256(b"qe").digest(),
        "mr_signer": TD_QE_MRSIGNER if tee == "tdx" else QE_MRSIGNER,
        "isv_prod_id": 2 if tee == "tdx" else 1,
        "isv_svn": 8,
        "report_data": bound,
    }
    base.update(fields)
    return SgxReportBody(**base)


def assemble_quote(
    *,
    version: int,
    body: SgxReportBody | Td10ReportBody,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: bytes,
    qe_auth_data: bytes = bytes(range(32)),
    qe_report: SgxReportBody | None = None,
    header: Mapping[str, Any] | None = None,
    padding: int = 0,
) -> Quote:
    """A signed quote (call ``.to_bytes()``): QE report signed by ``pck_key``, header and body
    signed by ``attestation_key``."""
    tee = "sgx" if isinstance(body, SgxReportBody) else "tdx"
    att_pub = raw_point(attestation_key)
    report = qe_report or qe_report_for(att_pub, qe_auth_data, tee=tee)
    head_fields: dict[str, Any] = {
        "version": version,
        "tee_type": TEE_TYPE_SGX if tee == "sgx" else TEE_TYPE_TDX,
        "qe_svn": report.isv_svn,
        "pce_svn": 13,
        "qe_vendor_id": INTEL_QE_VENDOR_ID,
        "user_data": bytes(20),
    }
    head_fields.update(header or {})
    sig_data = QuoteSignatureData(
        signature=bytes(64),
        attestation_key=att_pub,
        qe_report=report,
        qe_report_signature=sign_rs(pck_key, report.to_bytes()),
        qe_auth_data=qe_auth_data,
        certification_data=PckCertChain(pem=pck_chain_pem),
        nested=version >= 4,
    )
    unsigned = Quote(header=QuoteHeader(**head_fields), body=body, signature_data=sig_data)
    signature = sign_rs(attestation_key, unsigned.signed_bytes)
    return replace(unsigned, signature_data=replace(sig_data, signature=signature), padding=padding)


# --- a whole synthetic Intel-like PKI -----------------------------------------------------------
@dataclass(kw_only=True)
class DcapPki:
    """Root CA, PCK CA, PCK leaf and TCB signing certificate, with their keys.

    Validity: certificates from ``now - 1 day`` for ten years; collateral documents and CRLs
    from ``now - 1 hour`` to ``now + 30 days``.
    """

    now: datetime
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey
    pck_ca: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_signer: x509.Certificate
    attestation_key: ec.EllipticCurvePrivateKey
    facts: PckFacts = field(default_factory=PckFacts)

    @classmethod
    def create(
        cls,
        *,
        now: datetime,
        facts: PckFacts | None = None,
        pck_ca_name: str = "Sealpod Test SGX PCK Platform CA",
    ) -> DcapPki:
        facts = facts or PckFacts()
        start, end = now - timedelta(days=1), now + timedelta(days=3650)
        root_key, pck_ca_key, pck_key, tcb_key = new_key(), new_key(), new_key(), new_key()
        root = build_certificate(
            subject="Sealpod Test SGX Root CA",
            key=root_key,
            issuer=None,
            issuer_key=root_key,
            not_before=start,
            not_after=end,
            ca=True,
            path_length=1,
        )
        pck_ca = build_certificate(
            subject=pck_ca_name,
            key=pck_ca_key,
            issuer=root,
            issuer_key=root_key,
            not_before=start,
            not_after=end,
            ca=True,
            path_length=0,
        )
        tcb_signer = build_certificate(
            subject="Sealpod Test SGX TCB Signing",
            key=tcb_key,
            issuer=root,
            issuer_key=root_key,
            not_before=start,
            not_after=end,
            ca=False,
        )
        pki = cls(
            now=now,
            root_key=root_key,
            root=root,
            pck_ca_key=pck_ca_key,
            pck_ca=pck_ca,
            pck_key=pck_key,
            pck=pck_ca,
            tcb_key=tcb_key,
            tcb_signer=tcb_signer,
            attestation_key=new_key(),
            facts=facts,
        )
        pki.pck = pki.issue_pck(facts)
        return pki

    def issue_pck(
        self, facts: PckFacts, *, not_before: datetime | None = None, serial: int | None = None
    ) -> x509.Certificate:
        """A PCK leaf for ``pck_key`` with the given SGX extension facts."""
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSIONS_OID), encode_sgx_extensions(facts)
        )
        return build_certificate(
            subject="Sealpod Test SGX PCK Certificate",
            key=self.pck_key,
            issuer=self.pck_ca,
            issuer_key=self.pck_ca_key,
            not_before=not_before or self.now - timedelta(days=1),
            not_after=self.now + timedelta(days=3650),
            ca=False,
            serial=serial,
            extensions=[ext],
        )

    def root_fingerprint(self) -> bytes:
        return fingerprint(self.root.public_bytes(Encoding.DER))

    def trust(self) -> TrustAnchors:
        """Anchors that trust this PKI's root as a simulated root."""
        return TrustAnchors(
            intel_roots=frozenset(),
            amd_arks=frozenset(),
            sim_roots=frozenset({self.root_fingerprint()}),
        )

    def pck_chain_pem(self, *, nul: bool = True) -> bytes:
        text = (pem(self.pck) + pem(self.pck_ca) + pem(self.root)).encode()
        return text + (b"\0" if nul else b"")

    def quote(
        self,
        *,
        tee: str = "sgx",
        version: int | None = None,
        body: SgxReportBody | Td10ReportBody | None = None,
        report_data: bytes = bytes(64),
        **kwargs: Any,
    ) -> Quote:
        """A signed quote from this platform (SGX v3 / TDX v4 by default)."""
        if body is None:
            body = (
                sgx_body(report_data=report_data)
                if tee == "sgx"
                else td_body(td15=version == 5, report_data=report_data)
            )
        return assemble_quote(
            version=version or (3 if tee == "sgx" else 4),
            body=body,
            attestation_key=self.attestation_key,
            pck_key=self.pck_key,
            pck_chain_pem=kwargs.pop("pck_chain_pem", self.pck_chain_pem()),
            **kwargs,
        )

    def collateral(
        self,
        *,
        tee: str = "sgx",
        tcb_info: Mapping[str, Any] | None = None,
        qe_identity: Mapping[str, Any] | None = None,
        pck_revoked: Sequence[int] = (),
        root_revoked: Sequence[int] = (),
        window: tuple[datetime, datetime] | None = None,
    ) -> QuoteCollateral:
        """Collateral signed by this PKI; documents default to one UpToDate level matching
        the default PCK facts and body."""
        issue, next_update = window or (
            self.now - timedelta(hours=1),
            self.now + timedelta(days=30),
        )
        tcb_doc = tcb_info or tcb_info_document(
            tee=tee,
            issue=issue,
            next_update=next_update,
            fmspc=self.facts.fmspc,
            pce_id=self.facts.pce_id,
        )
        qe_doc = qe_identity or qe_identity_document(tee=tee, issue=issue, next_update=next_update)
        tcb_raw, tcb_sig = sign_json(tcb_doc, self.tcb_key)
        qe_raw, qe_sig = sign_json(qe_doc, self.tcb_key)
        signing_chain = pem(self.tcb_signer) + pem(self.root)
        return QuoteCollateral(
            pck_crl_issuer_chain=pem(self.pck_ca) + pem(self.root),
            root_ca_crl=build_crl(
                issuer=self.root,
                issuer_key=self.root_key,
                this_update=issue,
                next_update=next_update,
                revoked=root_revoked,
            ),
            pck_crl=build_crl(
                issuer=self.pck_ca,
                issuer_key=self.pck_ca_key,
                this_update=issue,
                next_update=next_update,
                revoked=pck_revoked,
            ),
            tcb_info_issuer_chain=signing_chain,
            tcb_info=tcb_raw,
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=signing_chain,
            qe_identity=qe_raw,
            qe_identity_signature=qe_sig,
        )
