"""Verification of Intel SGX and TDX DCAP quotes against Intel collateral.

``DcapVerifier(trust).verify(raw, collateral, now=...)`` returns :class:`VerifiedClaims` only if
every step below passes; otherwise it raises the typed error of the step that failed, and the
error's ``step`` names it. The steps follow Intel's Quote Verification Library (and Phala's
dcap-qvl, whose numbering they keep):

    Step 0   quote header: ECDSA-P256 attestation key, Intel QE vendor; root CA CRL: signed by
             the root, thisUpdate <= now < nextUpdate
    Step 1   TCB Info: signing chain to the pinned root (not revoked), signature over the exact
             ``tcbInfo`` bytes, issueDate <= now < nextUpdate
    Step 2   QE Identity: the same for ``enclaveIdentity``
    Step 3   PCK certificate chain from the quote to the same pinned root, every certificate valid
             at ``now``; PCK CA not on the root CA CRL; PCK CRL from the PCK CA, in its window,
             not listing the PCK certificate; SGX extensions decoded
    Step 4   QE report signed by the PCK key
    Step 5   QE report data = SHA-256(attestation key || QE auth data), then 32 zero bytes
    Step 6   QE identity: MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES
    Step 7   quote (header || body) signed by the attestation key
    Step 8   platform TCB level: TCB Info type, FMSPC and PCEID match the PCK certificate; TDX
             module identity; highest level met (``sealpod.verify.dcap_tcb``)
    Step 9   QE TCB level from the QE's ISVSVN
    Step 10  status merge and advisory IDs

A platform or QE status of ``Revoked`` is a :class:`TcbError` (never claims); no matching level
is :class:`NoMatchingTcbLevel`. Other statuses are reported in the claims and judged by policy.
Debug mode is reported too (``claims.debug``), not refused here.

Pure: ``now`` is a parameter; every fact that depends only on bytes is cached by content
(``sealpod.verify.x509util``), so warm verification does no repeated public-key work.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography import x509

from sealpod.collateral.models import QeIdentity, QuoteCollateral, TcbInfo
from sealpod.collateral.models import clear_caches as clear_collateral_caches
from sealpod.errors import (
    CertificateError,
    CollateralUnavailable,
    ConfigError,
    EvidenceSignatureError,
    IdentityMismatch,
    MalformedCollateral,
    TcbError,
    ValidityError,
)
from sealpod.evidence.dcap_body import SgxReportBody, Td10ReportBody, Td15ReportBody
from sealpod.evidence.dcap_quote import INTEL_QE_VENDOR_ID, Quote, parse_quote
from sealpod.evidence.dcap_quote import clear_caches as clear_quote_caches
from sealpod.verify import x509util
from sealpod.verify.claims import TcbStatus, TdxFields, TeeKind, VerifiedClaims
from sealpod.verify.dcap_tcb import (
    check_qe_identity,
    check_tcb_info_matches,
    check_tdx_module,
    converge,
    match_platform_level,
    td_relaunch_advised,
    union_advisories,
)
from sealpod.verify.pck import PckExtensions, parse_sgx_extensions, pck_extensions
from sealpod.verify.trust import TrustAnchors

STEP_HEADER = "Step 0: quote header"
STEP_ROOT_CRL = "Step 0: root CA CRL"
STEP_TCB_INFO = "Step 1: TCB Info signature and signing chain"
STEP_QE_IDENTITY_SIG = "Step 2: QE Identity signature and signing chain"
STEP_PCK_CHAIN = "Step 3: PCK certificate chain and PCK CRL"
STEP_QE_REPORT_SIG = "Step 4: QE report signature by the PCK key"
STEP_QE_REPORT_DATA = "Step 5: QE report data binds the attestation key"
STEP_QUOTE_SIG = "Step 7: quote signature by the attestation key"
STEP_STATUS = "Step 10: TCB status"

_SHA256_SIZE = 32


def _utc(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(issue: datetime, next_update: datetime, now: datetime, what: str, step: str) -> None:
    if now < issue:
        raise ValidityError(
            f"{what} is not yet valid: issueDate {_utc(issue)}, now is {_utc(now)}",
            step=step,
            expected=f">= {_utc(issue)}",
            actual=_utc(now),
        )
    if now >= next_update:
        raise ValidityError(
            f"{what} has expired: nextUpdate {_utc(next_update)}, now is {_utc(now)}",
            step=step,
            expected=f"< {_utc(next_update)}",
            actual=_utc(now),
        )


@functools.lru_cache(maxsize=x509util.CACHE_SIZE)
def _pck_extensions_of(leaf_der: bytes) -> PckExtensions:
    return pck_extensions(x509util.load_certificate(leaf_der, what="PCK", step=STEP_PCK_CHAIN))


@functools.lru_cache(maxsize=x509util.CACHE_SIZE)
def _spki(cert_der: bytes) -> bytes:
    return x509util.spki_der(
        x509util.load_certificate(cert_der, what="certificate", step=STEP_PCK_CHAIN)
    )


def _ca_kind(pck_ca: x509.Certificate) -> str:
    names = pck_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else ""
    if "Platform" in cn:
        return "platform"
    if "Processor" in cn:
        return "processor"
    return "unknown"


class DcapVerifier:
    """Verifies SGX and TDX DCAP quotes (v3, v4, v5) against collateral.

    ``unsafe_allow_missing_pck_crl`` lets collateral without a PCK CRL through (the PCK
    certificate's revocation is then NOT checked); it exists for archived evidence whose CRL of
    the period was not kept, and is off by default.
    """

    def __init__(self, trust: TrustAnchors, *, unsafe_allow_missing_pck_crl: bool = False):
        self.trust = trust
        self.unsafe_allow_missing_pck_crl = unsafe_allow_missing_pck_crl

    def verify(
        self,
        raw: bytes,
        collateral: QuoteCollateral,
        *,
        now: datetime,
        parsed: Quote | None = None,
    ) -> VerifiedClaims:
        """Verify a quote and return what it proves (``parsed``: ``raw`` already parsed).

        Raises:
            MalformedEvidence: the quote does not parse.
            MalformedCollateral: signed collateral does not parse (after its signature passed).
            CollateralUnavailable: the collateral lacks the PCK CRL.
            UntrustedRoot, CertificateError, ValidityError, RevokedError: Steps 0-3.
            EvidenceSignatureError: Steps 1, 2, 4, 5 and 7.
            IdentityMismatch: Steps 0, 6 and 8.
            NoMatchingTcbLevel: Steps 8 and 9.
            TcbError: the merged status is Revoked (Step 10).
            ConfigError: ``now`` has no time zone.
        """
        if now.tzinfo is None:
            raise ConfigError("verification time must be timezone-aware (UTC)")
        now = now.astimezone(UTC)
        quote = parsed if parsed is not None else parse_quote(raw)

        # Step 0: the header says ECDSA-P256 (checked by the parser) and Intel's QE.
        if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise IdentityMismatch(
                "QE vendor id is not Intel's",
                step=STEP_HEADER,
                expected=INTEL_QE_VENDOR_ID.hex(),
                actual=quote.header.qe_vendor_id.hex(),
            )
        tee = TeeKind.TDX if quote.is_tdx else TeeKind.SGX

        # Step 1: TCB Info signing chain -> pinned root; the root CA CRL; the signature.
        tcb_chain = x509util.verify_chain(
            x509util.pem_chain_to_der(
                collateral.tcb_info_issuer_chain, what="TCB Info issuer chain", step=STEP_TCB_INFO
            ),
            trust=self.trust,
            now=now,
            what="TCB Info issuer chain",
            step=STEP_TCB_INFO,
        )
        root_der = tcb_chain.root_der
        # Step 0: the root CA CRL, signed by that root and current.
        x509util.check_crl(
            collateral.root_ca_crl, root_der, now=now, what="root CA CRL", step=STEP_ROOT_CRL
        )
        self._not_revoked_by_root(collateral, tcb_chain, STEP_TCB_INFO, "TCB Signing certificate")
        tcb_info = self._signed_json(
            collateral.tcb_info_bytes,
            collateral.tcb_info_signature,
            tcb_chain,
            step=STEP_TCB_INFO,
            what="TCB Info",
        )
        if not isinstance(tcb_info, TcbInfo):
            raise MalformedCollateral("TCB Info did not parse as TCB Info")
        _window(tcb_info.issue_date, tcb_info.next_update, now, "TCB Info", STEP_TCB_INFO)

        # Step 2: QE Identity, the same way and to the same root.
        qe_chain = x509util.verify_chain(
            x509util.pem_chain_to_der(
                collateral.qe_identity_issuer_chain,
                what="QE Identity issuer chain",
                step=STEP_QE_IDENTITY_SIG,
            ),
            trust=self.trust,
            now=now,
            what="QE Identity issuer chain",
            step=STEP_QE_IDENTITY_SIG,
        )
        self._same_root(qe_chain, root_der, "QE Identity issuer chain", STEP_QE_IDENTITY_SIG)
        self._not_revoked_by_root(
            collateral, qe_chain, STEP_QE_IDENTITY_SIG, "QE Identity signing certificate"
        )
        qe_identity = self._signed_json(
            collateral.qe_identity_bytes,
            collateral.qe_identity_signature,
            qe_chain,
            step=STEP_QE_IDENTITY_SIG,
            what="QE Identity",
        )
        if not isinstance(qe_identity, QeIdentity):
            raise MalformedCollateral("QE Identity did not parse as QE Identity")
        _window(
            qe_identity.issue_date,
            qe_identity.next_update,
            now,
            "QE Identity",
            STEP_QE_IDENTITY_SIG,
        )
        expected_qe = "TD_QE" if tee is TeeKind.TDX else "QE"
        if qe_identity.id != expected_qe:
            raise IdentityMismatch(
                f"QE Identity is for {qe_identity.id}, the {tee.value.upper()} quote needs "
                f"{expected_qe}",
                step=STEP_QE_IDENTITY_SIG,
                expected=expected_qe,
                actual=qe_identity.id,
            )

        # Step 3: the PCK chain from the quote, to the same root, with both CRLs.
        sig = quote.signature_data
        pck_chain = x509util.verify_chain(
            sig.certification_data.certificates(),
            trust=self.trust,
            now=now,
            what="PCK certificate chain",
            step=STEP_PCK_CHAIN,
        )
        self._same_root(pck_chain, root_der, "PCK certificate chain", STEP_PCK_CHAIN)
        for ca in pck_chain.certificates[1:-1]:
            x509util.check_not_revoked(
                collateral.root_ca_crl, ca, what="PCK CA", step=STEP_PCK_CHAIN
            )
        pck_ca_der = pck_chain.ders[1]
        if collateral.pck_crl is None:
            if not self.unsafe_allow_missing_pck_crl:
                raise CollateralUnavailable(
                    f"{STEP_PCK_CHAIN}: the collateral has no PCK CRL, so the PCK certificate's "
                    "revocation cannot be checked"
                )
        else:
            x509util.check_crl(
                collateral.pck_crl, pck_ca_der, now=now, what="PCK CRL", step=STEP_PCK_CHAIN
            )
            x509util.check_not_revoked(
                collateral.pck_crl, pck_chain.leaf, what="PCK certificate", step=STEP_PCK_CHAIN
            )
        pck = _pck_extensions_of(pck_chain.ders[0])

        # Step 4: the PCK key signed the QE report.
        if not x509util.p256_verifies(
            _spki(pck_chain.ders[0]), sig.qe_report_signature, sig.qe_report_bytes
        ):
            raise EvidenceSignatureError(
                "QE report signature does not verify with the PCK certificate's key",
                step=STEP_QE_REPORT_SIG,
            )

        # Step 5: the QE report vouches for the attestation key.
        expected = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest()
        report_data = sig.qe_report.report_data
        if report_data[:_SHA256_SIZE] != expected or any(report_data[_SHA256_SIZE:]):
            raise EvidenceSignatureError(
                "QE report data is not SHA-256(attestation key || QE auth data) followed by zeros",
                step=STEP_QE_REPORT_DATA,
                expected=expected.hex() + "00" * _SHA256_SIZE,
                actual=report_data.hex(),
            )

        # Step 6 and Step 9: the QE is Intel's and its TCB level.
        qe_level = check_qe_identity(sig.qe_report, qe_identity)

        # Step 7: the attestation key signed header and body.
        if not x509util.p256_verifies(
            b"\x04" + sig.attestation_key, sig.signature, quote.signed_bytes
        ):
            raise EvidenceSignatureError(
                "quote signature does not verify with the attestation key",
                step=STEP_QUOTE_SIG,
            )

        # Step 8: the platform's TCB level (and, for TDX, the module's).
        check_tcb_info_matches(tcb_info, pck, tee)
        module_level = None
        tee_tcb_svn = None
        if isinstance(quote.body, Td10ReportBody):
            module_level = check_tdx_module(quote.body, tcb_info)
            tee_tcb_svn = quote.body.tee_tcb_svn
        sgx_level, level = match_platform_level(tcb_info, pck, tee_tcb_svn)

        # Step 10: merge as Intel's QVL does; Revoked is never returned as claims.
        status = level.tcb_status
        if module_level is not None:
            status = converge(status, module_level.status)
        relaunch = isinstance(quote.body, Td15ReportBody) and td_relaunch_advised(
            tcb_info,
            quote.body.tee_tcb_svn2,
            sgx_status=sgx_level.tcb_status,
            tdx_status=status,
            module_status=module_level.status if module_level else None,
            qe_status=qe_level.status,
        )
        status = converge(status, qe_level.status)
        advisories = union_advisories(
            level.advisory_ids,
            module_level.advisory_ids if module_level else (),
            qe_level.advisory_ids,
        )
        if status is TcbStatus.REVOKED:
            raise TcbError(
                "TCB status is Revoked (platform "
                f"{level.tcb_status.value}, QE {qe_level.status.value}"
                + (f", TDX module {module_level.status.value}" if module_level else "")
                + ")",
                step=STEP_STATUS,
                actual=TcbStatus.REVOKED.value,
            )

        platform: dict[str, str | int] = {
            "quote_version": quote.header.version,
            "fmspc": pck.fmspc.hex(),
            "pce_id": pck.pce_id.hex(),
            "ca": _ca_kind(pck_chain.certificates[1]),
            "sgx_type": pck.sgx_type,
            "pce_svn": pck.tcb.pce_svn,
            "cpu_svn": pck.tcb.cpu_svn.hex(),
            "tcb_date": _utc(level.tcb_date),
            "tcb_evaluation_data_number": tcb_info.tcb_evaluation_data_number,
            "platform_tcb_status": level.tcb_status.value,
            "qe_svn": sig.qe_report.isv_svn,
            "qe_tcb_status": qe_level.status.value,
            "qe_tcb_date": _utc(qe_level.tcb_date),
            "root_ca": pck_chain.root_fingerprint.hex(),
        }
        if module_level is not None:
            platform["tdx_module_tcb_status"] = module_level.status.value
        if relaunch:
            platform["td_relaunch_advised"] = 1
        return self._claims(quote, tee, pck_chain.simulated, status, advisories, platform)

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _same_root(chain: x509util.VerifiedChain, root_der: bytes, what: str, step: str) -> None:
        if chain.root_der != root_der:
            raise CertificateError(
                f"{what} ends at a different root than the TCB Info issuer chain",
                step=step,
                expected=hashlib.sha256(root_der).hexdigest(),
                actual=chain.root_fingerprint.hex(),
            )

    @staticmethod
    def _not_revoked_by_root(
        collateral: QuoteCollateral, chain: x509util.VerifiedChain, step: str, what: str
    ) -> None:
        for cert in chain.certificates[:-1]:
            x509util.check_not_revoked(collateral.root_ca_crl, cert, what=what, step=step)

    @staticmethod
    def _signed_json(
        raw: bytes,
        signature: bytes,
        chain: x509util.VerifiedChain,
        *,
        step: str,
        what: str,
    ) -> TcbInfo | QeIdentity:
        if not x509util.p256_verifies(_spki(chain.ders[0]), signature, raw):
            raise EvidenceSignatureError(
                f"{what} signature does not verify over the received bytes with the signing "
                "certificate's key",
                step=step,
            )
        # Parsed only after the signature passed; a parse error is MalformedCollateral.
        return TcbInfo.from_raw(raw) if what == "TCB Info" else QeIdentity.from_raw(raw)

    @staticmethod
    def _claims(
        quote: Quote,
        tee: TeeKind,
        simulated: bool,
        status: TcbStatus,
        advisories: tuple[str, ...],
        platform: dict[str, str | int],
    ) -> VerifiedClaims:
        body = quote.body
        kind = TeeKind.SIM if simulated else tee
        emulated = tee if simulated else None
        if isinstance(body, SgxReportBody):
            return VerifiedClaims(
                tee=kind,
                emulated=emulated,
                measurement=body.mr_enclave,
                signer=body.mr_signer,
                product_id=body.isv_prod_id,
                svn=body.isv_svn,
                debug=body.debug,
                report_data=body.report_data,
                tcb_status=status,
                advisory_ids=advisories,
                platform=MappingProxyType(platform),
            )
        if isinstance(body, Td15ReportBody):
            platform["mr_service_td"] = body.mr_service_td.hex()
            platform["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        return VerifiedClaims(
            tee=kind,
            emulated=emulated,
            measurement=body.mr_td,
            signer=None,
            debug=body.debug,
            report_data=body.report_data,
            tcb_status=status,
            advisory_ids=advisories,
            tdx=TdxFields(
                mr_td=body.mr_td,
                mr_config_id=body.mr_config_id,
                mr_owner=body.mr_owner,
                mr_owner_config=body.mr_owner_config,
                rtmrs=body.rtmrs,
                td_attributes=body.td_attributes,
                xfam=body.xfam,
                tee_tcb_svn=body.tee_tcb_svn,
                mr_seam=body.mr_seam,
                mr_signer_seam=body.mr_signer_seam,
            ),
            platform=MappingProxyType(platform),
        )


def clear_caches() -> None:
    """Forget every cached verification fact (cold-cache benchmarks, tests)."""
    x509util.clear_caches()
    _pck_extensions_of.cache_clear()
    parse_sgx_extensions.cache_clear()
    _spki.cache_clear()
    clear_collateral_caches()
    clear_quote_caches()
