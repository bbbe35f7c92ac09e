"""Checking an RA-TLS certificate: offline inspection and full verification (pure).

:func:`inspect_certificate` reads what a certificate *claims* without trusting it: which evidence
extensions it carries, the evidence kind, the identity in the evidence (MRENCLAVE/MRSIGNER/product
id/svn, or MRTD/RTMRs, or the SNP measurement), which root its evidence chains to, and whether the
evidence binds the certificate's key.

:func:`verify_ratls_certificate` decides, in numbered steps:

1. the certificate parses, with exactly one instance of each extension
   (:func:`~sealpod.ratls.certificate.parse_ratls_certificate`);
2. ``now`` lies in the certificate's validity window;
3. the evidence binds the certificate's key — interoperable format: the TEE report data is
   SHA-256(claims-buffer) followed by 32 zero bytes, and the claims' ``pubkey-hash`` is the hash of
   the certificate's DER SubjectPublicKeyInfo; Gramine's legacy extension: the report data is
   SHA-256(DER SubjectPublicKeyInfo) followed by 32 zero bytes. When a certificate carries both,
   the interoperable one is verified and the legacy one must bind the same key too;
4. the evidence verifies (:class:`~sealpod.verify.appraise.Appraiser`: signatures, chains to the
   pinned roots, collateral, TCB) — simulated evidence verifies as ``tee = sim``;
5. the policy is applied (:func:`~sealpod.policy.evaluate.evaluate`): every violation is returned.

The TLS layer (:mod:`sealpod.ratls.client`) adds the last link: the handshake proves that the
server holds the private key of this certificate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.crypto import pem
from sealpod.errors import KeyBindingError, MalformedEvidence, ValidityError
from sealpod.evidence.dcap_body import SGX_ATTRIBUTES_DEBUG, TD_ATTRIBUTES_DEBUG, SgxReportBody
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.evidence.envelope import RawEvidence, detect_kind
from sealpod.evidence.snp_report import GuestPolicy, parse_report
from sealpod.policy.evaluate import Violation, evaluate
from sealpod.policy.model import Policy
from sealpod.ratls.certificate import (
    OID_GRAMINE_LEGACY_QUOTE,
    OID_TCG_DICE_EVIDENCE,
    RaTlsCertificate,
    parse_ratls_certificate,
)
from sealpod.ratls.evidence import REPORT_DATA_SIZE
from sealpod.verify.appraise import Appraiser
from sealpod.verify.claims import TeeKind, VerifiedClaims
from sealpod.verify.trust import (
    AMD_ARK_GENOA_SHA256,
    AMD_ARK_MILAN_SHA256,
    AMD_ARK_TURIN_SHA256,
    INTEL_SGX_ROOT_CA_SHA256,
    TrustAnchors,
    fingerprint,
)

STEP_VALIDITY = "RA-TLS step 2: certificate validity"
STEP_BINDING = "RA-TLS step 3: evidence binds the certificate key"
_AMD_ARKS = frozenset({AMD_ARK_MILAN_SHA256, AMD_ARK_GENOA_SHA256, AMD_ARK_TURIN_SHA256})


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceView:
    """One evidence extension as read (not verified)."""

    extension: str  # "tcg-dice" or "gramine-legacy"
    oid: str
    kind: TeeKind
    evidence: bytes = field(repr=False)
    report_data: bytes
    expected_report_data: bytes
    binds_key: bool
    reason: str | None  # why it does not bind, when it does not
    identity: dict[str, object]


def _root_label(
    root: bytes, vendor: frozenset[bytes], vendor_name: str, sim: frozenset[bytes]
) -> str:
    if root in vendor:
        return f"{vendor_name} (pinned)"
    if root in sim:
        return "sealpod SIMULATED platform of this host: NO hardware protection"
    return f"not {vendor_name}: simulated or untrusted"


def _identity(
    kind: TeeKind, raw: bytes, sim_roots: frozenset[bytes] = frozenset()
) -> tuple[bytes, dict[str, object]]:
    """(report data, claimed identity) of raw evidence, parsed but not verified.

    Raises:
        MalformedEvidence: the quote or report does not parse.
    """
    if kind is TeeKind.SNP:
        report = parse_report(raw)
        policy = GuestPolicy.from_u64(report.policy)
        return report.report_data, {
            "measurement": report.measurement.hex(),
            "host_data": report.host_data.hex(),
            "guest_svn": report.guest_svn,
            "vmpl": report.vmpl,
            "debug": policy.debug,
            "policy": f"0x{report.policy:x}",
        }
    quote = parse_quote(raw)
    body = quote.body
    ders = quote.signature_data.certification_data.certificates()
    root = fingerprint(ders[-1]) if ders else b""
    chain = {
        "root_sha256": root.hex() or None,
        "root": _root_label(root, frozenset({INTEL_SGX_ROOT_CA_SHA256}), "Intel SGX Root CA",
                            sim_roots),
    }  # fmt: skip
    if isinstance(body, SgxReportBody):
        return body.report_data, {
            "mr_enclave": body.mr_enclave.hex(),
            "mr_signer": body.mr_signer.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "debug": bool(body.attributes[0] & SGX_ATTRIBUTES_DEBUG),
            "quote_version": quote.header.version,
            **chain,
        }
    return body.report_data, {
        "mr_td": body.mr_td.hex(),
        "rtmrs": [r.hex() for r in body.rtmrs],
        "mr_config_id": body.mr_config_id.hex(),
        "debug": bool(body.td_attributes[0] & TD_ATTRIBUTES_DEBUG),
        "quote_version": quote.header.version,
        **chain,
    }


def evidence_views(
    cert: RaTlsCertificate, *, sim_roots: frozenset[bytes] = frozenset()
) -> list[EvidenceView]:
    """Each evidence extension of ``cert`` with its binding status (interoperable first).

    Raises:
        MalformedEvidence: a quote or report inside an extension does not parse.
    """
    views: list[EvidenceView] = []
    if cert.tcg is not None:
        tcg = cert.tcg
        report_data, identity = _identity(tcg.kind, tcg.evidence, sim_roots)
        expected = tcg.expected_report_data()
        reason = None
        if not tcg.pubkey_hash.matches(cert.spki_der):
            reason = (
                f"the claims' pubkey-hash ({tcg.pubkey_hash.alg_name}) is not the hash of this "
                "certificate's SubjectPublicKeyInfo: the evidence was made for another key"
            )
        elif report_data != expected:
            reason = "the report data is not SHA-256 of the claims buffer (claims were swapped)"
        if cert.endorsement_certs and tcg.kind is TeeKind.SNP:
            ark = fingerprint(cert.endorsement_certs[-1])
            identity["root_sha256"] = ark.hex()
            identity["root"] = _root_label(ark, _AMD_ARKS, "AMD ARK", sim_roots)
        if tcg.nonce is not None:
            identity["nonce"] = tcg.nonce.hex()
        extra = sorted(k for k in tcg.claims if k not in ("pubkey-hash", "nonce"))
        if extra:
            identity["custom_claims"] = extra
        views.append(
            EvidenceView(
                extension="tcg-dice", oid=OID_TCG_DICE_EVIDENCE, kind=tcg.kind,
                evidence=tcg.evidence, report_data=report_data, expected_report_data=expected,
                binds_key=reason is None, reason=reason, identity=identity,
            )
        )  # fmt: skip
    if cert.legacy_quote is not None:
        raw = cert.legacy_quote
        kind = detect_kind(raw)
        if kind is not TeeKind.SGX:
            raise MalformedEvidence(
                f"Gramine's quote extension holds a {kind.value} quote, expected SGX",
                field=OID_GRAMINE_LEGACY_QUOTE,
            )
        report_data, identity = _identity(kind, raw, sim_roots)
        expected = hashlib.sha256(cert.spki_der).digest().ljust(REPORT_DATA_SIZE, b"\x00")
        reason = None
        if report_data != expected:
            reason = (
                "the quote's report data is not SHA-256 of this certificate's "
                "SubjectPublicKeyInfo: the evidence was made for another key"
            )
        views.append(
            EvidenceView(
                extension="gramine-legacy", oid=OID_GRAMINE_LEGACY_QUOTE, kind=kind, evidence=raw,
                report_data=report_data, expected_report_data=expected,
                binds_key=reason is None, reason=reason, identity=identity,
            )
        )  # fmt: skip
    return views


def inspect_certificate(
    data: bytes, *, sim_roots: frozenset[bytes] = frozenset()
) -> dict[str, object]:
    """What an RA-TLS certificate carries and claims (JSON-ready; nothing is verified).

    ``sim_roots`` are the local simulated platform's roots, so its evidence is labelled as such.

    Raises:
        MalformedEvidence: not an RA-TLS certificate, or evidence that does not parse.
    """
    cert = parse_ratls_certificate(data)
    views = evidence_views(cert, sim_roots=sim_roots)
    return {
        "subject": cert.subject,
        "key_algorithm": cert.key_algorithm,
        "spki_sha256": hashlib.sha256(cert.spki_der).hexdigest(),
        "not_before": cert.not_before.isoformat(),
        "not_after": cert.not_after.isoformat(),
        "extensions": [
            {"oid": e.oid, "name": e.name, "critical": e.critical, "size": len(e.value)}
            for e in cert.extensions
        ],
        "evidence": [
            {
                "extension": v.extension,
                "oid": v.oid,
                "kind": v.kind.value,
                "size": len(v.evidence),
                "binds_key": v.binds_key,
                "binding_problem": v.reason,
                "report_data": v.report_data.hex(),
                "claimed_identity": v.identity,
            }
            for v in views
        ],
        "binds_key": bool(views) and all(v.binds_key for v in views),
        "verified": False,
        "note": "offline inspection: the evidence is NOT verified (use `sealpod ratls verify`)",
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class RaTlsVerdict:
    """The outcome of :func:`verify_ratls_certificate`: verified claims and policy violations."""

    claims: VerifiedClaims
    violations: tuple[Violation, ...]
    extension: str
    spki_sha256: bytes

    @property
    def accepted(self) -> bool:
        return not self.violations


def check_binding(cert: RaTlsCertificate) -> EvidenceView:
    """Step 3: the evidence to verify, after checking every evidence extension binds the key.

    Raises:
        MalformedEvidence: evidence that does not parse.
        KeyBindingError: an evidence extension that binds another key.
    """
    views = evidence_views(cert)
    for view in views:
        if not view.binds_key:
            raise KeyBindingError(
                f"RA-TLS {view.extension} evidence does not bind the certificate key: "
                f"{view.reason}",
                step=STEP_BINDING,
                expected=view.expected_report_data.hex(),
                actual=view.report_data.hex(),
            )
    return views[0]


def verify_ratls_certificate(
    data: bytes | RaTlsCertificate,
    *,
    trust: TrustAnchors | Appraiser,
    policy: Policy,
    now: datetime,
    dcap_collateral: DcapCollateralProvider | QuoteCollateral | None = None,
    snp_vcek: bytes | None = None,
    snp_chain: bytes | None = None,
    snp_crl: bytes | None = None,
) -> RaTlsVerdict:
    """Steps 1-5 (see the module docstring); policy violations are returned, not raised.

    Raises:
        MalformedEvidence: step 1, or evidence that does not parse.
        ValidityError: step 2.
        KeyBindingError: step 3.
        CollateralError, VerificationError: step 4.
    """
    cert = data if isinstance(data, RaTlsCertificate) else parse_ratls_certificate(data)
    if not cert.not_before <= now <= cert.not_after:
        raise ValidityError(
            f"RA-TLS certificate is valid {cert.not_before.isoformat()} .. "
            f"{cert.not_after.isoformat()}, not at {now.isoformat()}",
            step=STEP_VALIDITY,
            expected=f"{cert.not_before.isoformat()} .. {cert.not_after.isoformat()}",
            actual=now.isoformat(),
        )
    view = check_binding(cert)
    appraiser = trust if isinstance(trust, Appraiser) else Appraiser(trust)
    vcek, chain = snp_vcek, snp_chain
    if view.kind is TeeKind.SNP and cert.endorsement_certs and (vcek is None or chain is None):
        vcek = vcek if vcek is not None else cert.endorsement_certs[0]
        chain = (
            chain
            if chain is not None
            else pem.encode_certificates(cert.endorsement_certs[1:]).encode("ascii")
        )
    claims = appraiser.appraise(
        RawEvidence(tee=view.kind, raw=view.evidence, encoding="binary"),
        dcap_collateral=dcap_collateral,
        snp_vcek=vcek,
        snp_chain=chain,
        snp_crl=snp_crl,
        tee=view.kind,
        now=now,
    )
    if claims.report_data != view.report_data:  # the verifier saw other bytes: never accept
        raise KeyBindingError(
            "verified report data differs from the bound report data", step=STEP_BINDING
        )
    violations = tuple(evaluate(policy, claims))
    return RaTlsVerdict(
        claims=claims,
        violations=violations,
        extension=view.extension,
        spki_sha256=hashlib.sha256(cert.spki_der).digest(),
    )
