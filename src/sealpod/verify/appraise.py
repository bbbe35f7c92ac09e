"""Appraise evidence of any TEE: detect its format and hand it to the right verifier.

Pure: the collateral for DCAP quotes comes from an injected provider (or a fixed
:class:`QuoteCollateral`), SEV-SNP certificates from the envelope or the caller, and ``now`` is a
parameter. Policy is not applied here (see :mod:`sealpod.policy`): the result is what the
evidence proves, with ``tee = SIM`` whenever its chain ends at a simulated root.

:class:`Appraiser` keeps one verifier per TEE family so that their content-keyed caches stay warm
across calls; :func:`appraise` is the one-shot form (it reuses an appraiser per trust set).
"""

from __future__ import annotations

import threading
from datetime import datetime

from cryptography import x509 as _x509

from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
from sealpod.errors import CollateralUnavailable, MalformedEvidence
from sealpod.evidence.dcap_quote import Quote, parse_quote
from sealpod.evidence.envelope import EvidenceEnvelope, RawEvidence, detect_kind
from sealpod.verify import x509util
from sealpod.verify.amd import split_certificates
from sealpod.verify.claims import TeeKind, VerifiedClaims
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.pck import pck_extensions
from sealpod.verify.snp import SnpVerifier
from sealpod.verify.trust import TrustAnchors

Evidence = EvidenceEnvelope | RawEvidence | bytes
_STEP = "collateral"


class Appraiser:
    """Verifiers for every TEE under one set of trust anchors (thread-safe, caches shared)."""

    def __init__(self, trust: TrustAnchors) -> None:
        self.trust = trust
        self.snp = SnpVerifier(trust)
        self.dcap = DcapVerifier(trust)

    def appraise(
        self,
        evidence: Evidence,
        *,
        dcap_collateral: DcapCollateralProvider | QuoteCollateral | None = None,
        snp_vcek: bytes | None = None,
        snp_chain: bytes | None = None,
        snp_crl: bytes | None = None,
        tee: TeeKind | None = None,
        now: datetime,
    ) -> VerifiedClaims:
        """Verify ``evidence`` and return its claims.

        ``tee`` (SGX, TDX or SNP), when given, is the format the caller expects: other evidence
        is refused. SNP evidence needs its VCEK/VLEK and ASK/ARK: ``snp_vcek`` + ``snp_chain``,
        or the envelope's ``certificates``; ``snp_crl`` is checked when given. DCAP evidence needs
        ``dcap_collateral``: a fixed collateral set, or a provider asked for the quote's FMSPC and
        PCK CA.

        Raises:
            MalformedEvidence: unknown format, or not the expected ``tee``.
            CollateralUnavailable: the certificates or collateral the evidence needs are missing.
            CollateralError: the provider failed.
            VerificationError: any verification step failed (its ``step`` says which).
        """
        raw, kind, certificates = _unwrap(evidence)
        if tee is not None and tee is not kind:
            raise MalformedEvidence(
                f"evidence is a {kind.value} quote/report, but {tee.value} was requested",
                field="tee",
            )
        if kind is TeeKind.SNP:
            vcek, chain = snp_vcek, snp_chain
            if (vcek is None or chain is None) and certificates is not None:
                leaf, rest = split_certificates(certificates)
                vcek = vcek if vcek is not None else leaf
                chain = chain if chain is not None else rest
            if vcek is None or chain is None:
                raise CollateralUnavailable(
                    "SNP evidence needs its VCEK (or VLEK) and the ASK/ARK certificate chain: "
                    "give them (sealpod verify --vcek F --cert-chain F) or use an evidence "
                    "envelope that carries them"
                )
            return self.snp.verify(raw, vcek=vcek, chain=chain, crl=snp_crl, now=now)
        quote = parse_quote(raw)  # once, for the collateral lookup and the verification
        collateral = _collateral(quote, kind, dcap_collateral)
        return self.dcap.verify(raw, collateral, now=now, parsed=quote)


_APPRAISERS: dict[TrustAnchors, Appraiser] = {}
_APPRAISERS_LOCK = threading.Lock()
_MAX_APPRAISERS = 16


def appraiser_for(trust: TrustAnchors) -> Appraiser:
    """The shared :class:`Appraiser` for ``trust`` (created on first use)."""
    with _APPRAISERS_LOCK:
        found = _APPRAISERS.get(trust)
        if found is None:
            if len(_APPRAISERS) >= _MAX_APPRAISERS:
                _APPRAISERS.pop(next(iter(_APPRAISERS)))
            found = _APPRAISERS[trust] = Appraiser(trust)
        return found


def appraise(
    evidence: Evidence,
    *,
    trust: TrustAnchors,
    dcap_collateral: DcapCollateralProvider | QuoteCollateral | None = None,
    snp_vcek: bytes | None = None,
    snp_chain: bytes | None = None,
    snp_crl: bytes | None = None,
    tee: TeeKind | None = None,
    now: datetime,
) -> VerifiedClaims:
    """Verify evidence of any TEE with the verifiers for ``trust`` (see :meth:`Appraiser.appraise`).

    Raises:
        MalformedEvidence, CollateralError, VerificationError: see :meth:`Appraiser.appraise`.
    """
    return appraiser_for(trust).appraise(
        evidence,
        dcap_collateral=dcap_collateral,
        snp_vcek=snp_vcek,
        snp_chain=snp_chain,
        snp_crl=snp_crl,
        tee=tee,
        now=now,
    )


def _unwrap(evidence: Evidence) -> tuple[bytes, TeeKind, bytes | None]:
    if isinstance(evidence, EvidenceEnvelope):
        return evidence.raw, evidence.kind, evidence.certificate_bytes
    if isinstance(evidence, RawEvidence):
        return evidence.raw, evidence.tee, None
    raw = bytes(evidence)
    return raw, detect_kind(raw), None


def dcap_platform(raw: bytes | Quote) -> tuple[str, str]:
    """The FMSPC (12 lower-case hex digits) and PCK CA ("platform" or "processor") of a quote,
    read from the PCK certificate it carries: what a collateral provider is asked for.

    Raises:
        MalformedEvidence: the quote does not parse.
        CertificateError: its PCK certificate does not load or lacks the SGX extensions.
    """
    quote = raw if isinstance(raw, Quote) else parse_quote(raw)
    ders = quote.signature_data.certification_data.certificates()
    if len(ders) < 2:
        raise MalformedEvidence(
            f"quote PCK chain holds {len(ders)} certificate(s), expected leaf, CA and root",
            field="certification_data",
        )
    step = "Step 3: PCK certificate chain and PCK CRL"
    leaf = x509util.load_certificate(ders[0], what="PCK certificate", step=step)
    ca = x509util.load_certificate(ders[1], what="PCK CA certificate", step=step)
    names = ca.subject.get_attributes_for_oid(_x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    kind = "platform" if "Platform" in cn else "processor" if "Processor" in cn else "unknown"
    return pck_extensions(leaf).fmspc.hex(), kind


def _collateral(
    quote: Quote, kind: TeeKind, source: DcapCollateralProvider | QuoteCollateral | None
) -> QuoteCollateral:
    if source is None:
        raise CollateralUnavailable(
            f"{kind.value} quote needs DCAP collateral (TCB Info, QE Identity, CRLs): give "
            "--collateral FILE or the separate collateral files"
        )
    if isinstance(source, QuoteCollateral):
        return source
    fmspc, ca = dcap_platform(quote)
    return source.get(fmspc, ca, kind)
