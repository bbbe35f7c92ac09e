"""Reading RA-TLS certificates: the evidence extensions and the key they must bind (pure).

Two evidence extensions are recognised:

* ``2.23.133.5.4.9`` (``tcg-dice-conceptual-message-wrapper``): the interoperable format, see
  :mod:`sealpod.ratls.evidence`;
* Gramine's older SGX-quote extension. Gramine (tools/sgx/ra-tls/ra_tls.h,
  ``NON_STANDARD_INTEL_SGX_QUOTE_OID``) passes the bytes ``06 09 2A 86 48 86 F8 4D 8A 39 06`` to
  mbedTLS as the OID's *content*: its source says the first two bytes (DER tag and length) should
  not be there and are kept for compatibility. Decoded as DER content those bytes are the OID
  **0.6.9.42.840.113741.1337.6** — what appears in every Gramine RA-TLS certificate (and what
  ``openssl x509 -text`` prints). Its value is the raw SGX quote, whose report data starts with
  SHA-256 of the certificate's DER SubjectPublicKeyInfo.

``1.2.840.113741.1.13.1`` is Intel's "SGX Extensions" OID of PCK certificates (FMSPC, TCB...).
The Intel SGX SDK's attested-TLS sample reuses it for a raw quote; sealpod reports it as
``intel-sgx-sdk-quote`` in ``inspect`` but never uses it as evidence.

``2.23.133.5.4.2`` (``tcg-dice-endorsement-manifest``) is optional; sealpod puts the SNP VCEK,
ASK and ARK there (tag 0x1a7504, an array of DER certificates) so SNP certificates verify alone.

Certificates are read with ``asn1crypto`` in strict mode, not ``cryptography``: Gramine's
mbedTLS writes ``ecdsa-with-SHA256`` with a NULL parameter, which ``cryptography`` refuses, and the
self-signature is not what RA-TLS trusts (the evidence and the TLS handshake's proof of
possession of the key are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import cbor2
from asn1crypto import x509 as asn1_x509

from sealpod.crypto import pem
from sealpod.errors import MalformedEvidence
from sealpod.ratls.evidence import (
    CBOR_ERRORS as _CBOR_ERRORS,
)
from sealpod.ratls.evidence import (
    MAX_EVIDENCE_SIZE,
    MAX_EXTENSION_SIZE,
    TAG_SEV_SNP_REPORT,
    TaggedEvidence,
    parse_tagged_evidence,
)

OID_TCG_DICE_EVIDENCE = "2.23.133.5.4.9"
OID_TCG_DICE_ENDORSEMENTS = "2.23.133.5.4.2"
OID_GRAMINE_LEGACY_QUOTE = "0.6.9.42.840.113741.1337.6"
OID_INTEL_SGX_EXTENSIONS = "1.2.840.113741.1.13.1"
EXTENSION_NAMES = {
    OID_TCG_DICE_EVIDENCE: "tcg-dice-conceptual-message-wrapper",
    OID_TCG_DICE_ENDORSEMENTS: "tcg-dice-endorsement-manifest",
    OID_GRAMINE_LEGACY_QUOTE: "gramine-legacy-sgx-quote",
    OID_INTEL_SGX_EXTENSIONS: "intel-sgx-sdk-quote (Intel's PCK 'SGX Extensions' OID)",
}
MAX_CERTIFICATE_SIZE = 512 * 1024
MAX_EXTENSIONS = 64
MAX_ENDORSEMENT_CERTS = 8
_FIELD = "certificate"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertExtension:
    oid: str
    critical: bool
    value: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return EXTENSION_NAMES.get(self.oid, self.oid)


@dataclass(frozen=True, slots=True, kw_only=True)
class RaTlsCertificate:
    """A parsed RA-TLS certificate. ``tcg`` and ``legacy_quote`` are the evidence it carries."""

    der: bytes = field(repr=False)
    spki_der: bytes = field(repr=False)  # DER SubjectPublicKeyInfo: what the evidence binds
    key_algorithm: str
    subject: str
    not_before: datetime
    not_after: datetime
    extensions: tuple[CertExtension, ...] = field(repr=False)
    tcg: TaggedEvidence | None
    legacy_quote: bytes | None = field(repr=False)
    endorsement_certs: tuple[bytes, ...] = field(default=(), repr=False)

    def extension(self, oid: str) -> CertExtension | None:
        return next((e for e in self.extensions if e.oid == oid), None)


def certificate_der(data: bytes) -> bytes:
    """The DER of the (first) certificate in ``data``, which may be PEM or DER.

    Raises:
        MalformedEvidence: PEM that is not a certificate, or oversized input.
    """
    if len(data) > MAX_CERTIFICATE_SIZE * 2:
        raise MalformedEvidence(
            f"certificate input is {len(data)} bytes, expected at most {MAX_CERTIFICATE_SIZE * 2}",
            field=_FIELD,
        )
    if not pem.is_pem(data):
        return data
    try:
        return pem.decode(data, max_blocks=MAX_ENDORSEMENT_CERTS)[0]
    except pem.PemError as exc:
        raise MalformedEvidence(f"certificate PEM {exc}", field=_FIELD) from exc


def parse_ratls_certificate(data: bytes) -> RaTlsCertificate:
    """Parse an RA-TLS certificate (PEM or DER) and decode its evidence extensions.

    Raises:
        MalformedEvidence: not a DER certificate, oversized, more than one extension with the
            same OID, no evidence extension at all, or evidence that does not decode.
    """
    der = certificate_der(data)
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise MalformedEvidence(
            f"certificate is {len(der)} bytes, expected at most {MAX_CERTIFICATE_SIZE}",
            field=_FIELD,
        )
    try:
        # asn1crypto parses lazily: every field is touched inside this block so that a malformed
        # part raises here, once, as our error.
        cert = asn1_x509.Certificate.load(der, strict=True)
        tbs = cert["tbs_certificate"]
        spki = tbs["subject_public_key_info"]
        spki_der = spki.dump()
        key_algorithm = str(spki["algorithm"]["algorithm"].native)
        params = spki["algorithm"]["parameters"].native
        if isinstance(params, str):
            key_algorithm += f" ({params})"
        subject = tbs["subject"].human_friendly
        not_before = tbs["validity"]["not_before"].native
        not_after = tbs["validity"]["not_after"].native
        raw_extensions = tbs["extensions"]
        count = len(raw_extensions)
        if count > MAX_EXTENSIONS:
            raise MalformedEvidence(
                f"certificate has {count} extensions, expected at most {MAX_EXTENSIONS}",
                field="extensions",
            )
        extensions = tuple(
            CertExtension(
                oid=str(ext["extn_id"].dotted),
                critical=bool(ext["critical"].native),
                value=bytes(ext["extn_value"].contents),
            )
            for ext in raw_extensions
        )
    except MalformedEvidence:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        raise MalformedEvidence(f"not a DER X.509 certificate: {exc}", field=_FIELD) from exc
    if not isinstance(not_before, datetime) or not isinstance(not_after, datetime):
        raise MalformedEvidence("certificate validity is not a pair of times", field="validity")
    seen: set[str] = set()
    for ext in extensions:
        if ext.oid in seen:
            # RFC 5280 4.2: "A certificate MUST NOT include more than one instance of a
            # particular extension." Two evidence extensions could also disagree.
            raise MalformedEvidence(
                f"certificate has more than one {ext.name} extension", field="extensions"
            )
        seen.add(ext.oid)
    tcg_ext = next((e for e in extensions if e.oid == OID_TCG_DICE_EVIDENCE), None)
    legacy_ext = next((e for e in extensions if e.oid == OID_GRAMINE_LEGACY_QUOTE), None)
    if tcg_ext is None and legacy_ext is None:
        raise MalformedEvidence(
            "certificate carries no RA-TLS evidence (neither the 2.23.133.5.4.9 extension nor "
            f"Gramine's {OID_GRAMINE_LEGACY_QUOTE})",
            field="extensions",
        )
    tcg = parse_tagged_evidence(tcg_ext.value) if tcg_ext is not None else None
    legacy = None
    if legacy_ext is not None:
        if not legacy_ext.value or len(legacy_ext.value) > MAX_EVIDENCE_SIZE:
            raise MalformedEvidence(
                f"Gramine quote extension is {len(legacy_ext.value)} bytes, expected "
                f"1..{MAX_EVIDENCE_SIZE}",
                field=OID_GRAMINE_LEGACY_QUOTE,
            )
        legacy = legacy_ext.value
    endorsements = next((e for e in extensions if e.oid == OID_TCG_DICE_ENDORSEMENTS), None)
    certs: tuple[bytes, ...] = ()
    if endorsements is not None and tcg is not None and tcg.tag == TAG_SEV_SNP_REPORT:
        certs = parse_snp_endorsements(endorsements.value)
    return RaTlsCertificate(
        der=der, spki_der=spki_der, key_algorithm=key_algorithm, subject=subject,
        not_before=not_before, not_after=not_after, extensions=extensions, tcg=tcg,
        legacy_quote=legacy, endorsement_certs=certs,
    )  # fmt: skip


def encode_snp_endorsements(certs: tuple[bytes, ...]) -> bytes:
    """The endorsement extension value sealpod writes for SNP: ``0x1a7504([vcek, ask, ark])``."""
    return cbor2.dumps(cbor2.CBORTag(TAG_SEV_SNP_REPORT, list(certs)))


def parse_snp_endorsements(data: bytes) -> tuple[bytes, ...]:
    """The DER certificates (VCEK or VLEK first, then ASK/ASVK and ARK) of an SNP endorsement.

    Raises:
        MalformedEvidence: not the tagged array of byte strings sealpod writes.
    """
    if len(data) > MAX_EXTENSION_SIZE:
        raise MalformedEvidence("SNP endorsements are too large", field=OID_TCG_DICE_ENDORSEMENTS)
    try:
        item = cbor2.loads(data)
    except _CBOR_ERRORS as exc:
        raise MalformedEvidence(
            f"SNP endorsements are not valid CBOR: {exc}", field=OID_TCG_DICE_ENDORSEMENTS
        ) from exc
    if (
        not isinstance(item, cbor2.CBORTag)
        or item.tag != TAG_SEV_SNP_REPORT
        or not isinstance(item.value, list | tuple)
        or not 1 <= len(item.value) <= MAX_ENDORSEMENT_CERTS
        or not all(isinstance(c, bytes) and c for c in item.value)
    ):
        raise MalformedEvidence(
            "SNP endorsements are not a tagged array of DER certificates",
            field=OID_TCG_DICE_ENDORSEMENTS,
        )
    return tuple(item.value)
