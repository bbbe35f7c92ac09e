"""SEV-SNP attestation report verification: VCEK/VLEK -> ASK/ASVK -> pinned ARK, report signature.

Pure: no I/O, no clock (``now`` is a parameter). The steps are numbered as in the errors:

1. parse the report (structure only);
2. load the endorsement key (VCEK or VLEK) and the chain, read the AMD extensions;
3. find the ARK in the chain and require its SHA-256 fingerprint to be pinned (``amd_arks``, or
   ``sim_roots`` for the simulated platform);
4. ARK self-signature, 5. ASK/ASVK signed by the ARK, 6. VCEK/VLEK signed by the ASK/ASVK — all
   RSASSA-PSS SHA-384 with a 48-byte salt; the product of every certificate agrees;
7. validity of ARK, ASK/ASVK and VCEK/VLEK at ``now``;
8. optional CRL: signed by the ARK, ``this_update <= now < next_update``, and neither the ASK/ASVK
   nor the endorsement key serial revoked;
9. the report's KEY_INFO names the kind of key that the certificate holds;
10. hwID (VCEK) equals CHIP_ID (8-byte Turin hwIDs are CHIP_ID's first 8 bytes, the rest zero);
11. the report's CPUID product (v3+) is the certificate's product;
12. REPORTED_TCB equals the TCB the certificate was issued for (Turin adds FMC);
13. the report signature: ECDSA P-384 / SHA-384 over bytes 0x000-0x29F, r and s little-endian.

Chain results (steps 2-6) are cached by the SHA-256 of the certificate bytes, so a warm
verification costs one ECDSA verification plus the validity comparisons. ``tcb_status`` is
``UpToDate`` on success (see :class:`~sealpod.verify.claims.TcbStatus`); minimum TCB versions,
debug, VMPL and the rest of the guest policy are judged by :mod:`sealpod.policy`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealpod.errors import (
    CertificateError,
    EvidenceSignatureError,
    IdentityMismatch,
    RevokedError,
    TcbError,
    UntrustedRoot,
    ValidityError,
)
from sealpod.evidence.snp_report import (
    SIGNED_SIZE,
    SigningKey,
    SnpProduct,
    SnpReport,
    TcbVersion,
    parse_report,
)
from sealpod.verify.amd import (
    ARK_PRODUCTS,
    PSS_SHA384,
    AmdCertificate,
    EndorsementKey,
    check_signed_by,
    check_validity,
    load_certificate,
    load_chain,
    load_crl,
    parse_endorsement_key,
    product_of_chain_name,
)
from sealpod.verify.claims import SnpFields, TcbStatus, TeeKind, VerifiedClaims
from sealpod.verify.trust import TrustAnchors

DEFAULT_CACHE_SIZE = 256
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chain:
    """A chain whose signatures (steps 2-6) passed: what later calls need from it."""

    ark: AmdCertificate
    intermediate: AmdCertificate
    leaf: AmdCertificate
    key: EndorsementKey
    simulated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Crl:
    this_update: datetime
    next_update: datetime
    revoked: frozenset[int]


class SnpVerifier:
    """Verifies SEV-SNP reports against pinned AMD roots (and simulated roots, if trusted)."""

    def __init__(self, trust: TrustAnchors, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._trust = trust
        self._cache_size = max(0, cache_size)
        self._chains: OrderedDict[bytes, _Chain] = OrderedDict()
        self._crls: OrderedDict[bytes, _Crl] = OrderedDict()
        self._ca_pairs: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def trust(self) -> TrustAnchors:
        return self._trust

    def verify(
        self,
        raw: bytes,
        *,
        vcek: bytes,
        chain: bytes,
        crl: bytes | None = None,
        now: datetime,
    ) -> VerifiedClaims:
        """Verify ``raw`` (a 0x4A0-byte report) with its endorsement key and chain at ``now``.

        ``vcek`` is the VCEK or VLEK certificate (DER, or one PEM block); ``chain`` is PEM with
        the ASK (or ASVK) and the ARK, in any order (extra certificates are ignored); ``crl`` is
        AMD's CRL for the product (DER or PEM), checked when given. A naive ``now`` is UTC.

        Raises:
            MalformedEvidence: the report does not parse.
            UntrustedRoot: the chain's ARK is not pinned.
            CertificateError: a certificate does not load, chain or carry the AMD extensions.
            ValidityError: a certificate or the CRL is outside its validity at ``now``.
            RevokedError: the CRL revokes the ASK/ASVK or the endorsement key.
            IdentityMismatch: key kind, hwID/CHIP_ID or CPUID product disagree.
            TcbError: REPORTED_TCB differs from the certificate's TCB.
            EvidenceSignatureError: the report signature does not verify (or it is unsigned).
        """
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        raw = bytes(raw)
        # Step 1: structure.
        report = parse_report(raw)
        # Steps 2-6 (cached by content): endorsement key, ARK pin, chain signatures.
        ch = self._chain(vcek, chain)
        key = ch.key
        # Step 7: validity at `now`.
        step = "Step 7: certificate validity"
        check_validity(ch.ark, now, role="ARK", step=step)
        check_validity(
            ch.intermediate, now, role="ASVK" if key.kind == "vlek" else "ASK", step=step
        )
        check_validity(ch.leaf, now, role=key.kind.upper(), step=step)
        # Step 8: revocation.
        if crl is not None:
            self._check_crl(crl, ch, now)
        # Step 9: the key kind the report names.
        _check_key_kind(report, key)
        # Step 10: hwID == CHIP_ID.
        _check_chip_id(report, key)
        # Step 11: CPUID product.
        _check_product(report, key)
        # Step 12: REPORTED_TCB == certificate TCB.
        _check_tcb(report, key)
        # Step 13: the report signature over the bytes exactly as received.
        _check_signature(raw, report, key)
        return _claims(report, key, simulated=ch.simulated)

    # --- steps 2-6 ------------------------------------------------------------------------------
    def _chain(self, vcek: bytes, chain: bytes) -> _Chain:
        cache_key = hashlib.sha256(vcek).digest() + hashlib.sha256(chain).digest()
        with self._lock:
            hit = self._chains.get(cache_key)
            if hit is not None:
                self._chains.move_to_end(cache_key)
                return hit
        result = self._build_chain(vcek, chain)
        if self._cache_size:
            with self._lock:
                self._chains[cache_key] = result
                while len(self._chains) > self._cache_size:
                    self._chains.popitem(last=False)
        return result

    def _build_chain(self, vcek: bytes, chain: bytes) -> _Chain:
        # Step 2: load.
        leaf = load_certificate(vcek, role="VCEK/VLEK")
        key = parse_endorsement_key(leaf)
        certs = load_chain(chain)
        # Step 3: the ARK is the self-issued certificate; it must be pinned.
        step = "Step 3: AMD root key (ARK) pin"
        roots = [c for c in certs if c.self_issued]
        if not roots:
            raise CertificateError(
                "certificate chain holds no self-signed ARK certificate",
                step=step,
                expected="ASK/ASVK and ARK (PEM)",
                actual=", ".join(repr(c.common_name) for c in certs),
            )
        pinned = [
            c
            for c in roots
            if c.fingerprint in self._trust.amd_arks or c.fingerprint in self._trust.sim_roots
        ]
        if not pinned:
            raise UntrustedRoot(
                f"ARK {roots[0].common_name!r} is not a pinned AMD root "
                f"(SHA-256 {roots[0].fingerprint.hex()})",
                step=step,
                expected="an AMD ARK pinned in sealpod.verify.trust (Milan, Genoa, Turin)",
                actual=roots[0].fingerprint.hex(),
            )
        simulated = False
        # Step 5 needs the intermediate that issued the leaf; pick the pinned root above it.
        step5 = "Step 5: ASK/ASVK signed by the ARK"
        intermediates = [
            c for c in certs if not c.self_issued and c.cert.subject == leaf.cert.issuer
        ]
        if not intermediates:
            raise CertificateError(
                f"no certificate in the chain issued the {key.kind.upper()}: its issuer is "
                f"{leaf.cert.issuer.rfc4514_string()!r}",
                step="Step 6: VCEK/VLEK signed by the ASK/ASVK",
                expected=leaf.cert.issuer.rfc4514_string(),
                actual=", ".join(repr(c.common_name) for c in certs),
            )
        intermediate = intermediates[0]
        arks = [r for r in pinned if r.cert.subject == intermediate.cert.issuer]
        if not arks:
            raise CertificateError(
                f"{intermediate.common_name!r} was not issued by a pinned ARK in the chain",
                step=step5,
                expected=", ".join(r.cert.subject.rfc4514_string() for r in pinned),
                actual=intermediate.cert.issuer.rfc4514_string(),
            )
        ark = arks[0]
        simulated = ark.fingerprint in self._trust.sim_roots
        # Steps 4 and 5 are shared by every chip of a product: checked once per (ASK, ARK) pair.
        pair = intermediate.fingerprint + ark.fingerprint
        with self._lock:
            known = pair in self._ca_pairs
        if not known:
            # Step 4: the ARK's self-signature (a pinned root, checked for consistency).
            check_signed_by(ark, ark, step="Step 4: ARK self-signature")
            # Step 5: the ASK/ASVK.
            check_signed_by(intermediate, ark, step=step5)
            with self._lock:
                self._ca_pairs[pair] = None
                while len(self._ca_pairs) > self._cache_size:
                    self._ca_pairs.popitem(last=False)
        # Step 6: the VCEK/VLEK.
        check_signed_by(leaf, intermediate, step="Step 6: VCEK/VLEK signed by the ASK/ASVK")
        # Products agree: the pinned ARK's product (real roots), the CA names, the leaf.
        step = "Step 6: certificate products agree"
        ark_product = ARK_PRODUCTS.get(ark.fingerprint)
        if ark_product is not None and ark_product is not key.product:
            raise CertificateError(
                f"{key.kind.upper()} is for {key.product.value} but the chain ends at the "
                f"{ark_product.value} ARK",
                step=step,
                expected=ark_product.value,
                actual=key.product.value,
            )
        if not simulated:
            for ca in (intermediate, ark):
                named = product_of_chain_name(ca.common_name)
                if named is not None and named is not key.product:
                    raise CertificateError(
                        f"{ca.common_name!r} is for {named.value}, the {key.kind.upper()} "
                        f"for {key.product.value}",
                        step=step,
                        expected=key.product.value,
                        actual=named.value,
                    )
        return _Chain(ark=ark, intermediate=intermediate, leaf=leaf, key=key, simulated=simulated)

    # --- step 8 ---------------------------------------------------------------------------------
    def _check_crl(self, data: bytes, ch: _Chain, now: datetime) -> None:
        step = "Step 8: AMD CRL"
        cache_key = hashlib.sha256(data).digest() + ch.ark.fingerprint
        with self._lock:
            parsed = self._crls.get(cache_key)
        if parsed is None:
            parsed = _verify_crl(data, ch.ark, step=step)
            if self._cache_size:
                with self._lock:
                    self._crls[cache_key] = parsed
                    while len(self._crls) > self._cache_size:
                        self._crls.popitem(last=False)
        if now < parsed.this_update:
            raise ValidityError(
                f"CRL is not yet valid at {now.isoformat()} "
                f"(thisUpdate {parsed.this_update.isoformat()})",
                step=step,
                expected=f">= {parsed.this_update.isoformat()}",
                actual=now.isoformat(),
            )
        if now >= parsed.next_update:
            raise ValidityError(
                f"CRL expired at {parsed.next_update.isoformat()} (now {now.isoformat()})",
                step=step,
                expected=f"< {parsed.next_update.isoformat()}",
                actual=now.isoformat(),
            )
        for role, cert in (("ASK/ASVK", ch.intermediate), (ch.key.kind.upper(), ch.leaf)):
            if cert.serial in parsed.revoked:
                raise RevokedError(
                    f"{role} {cert.common_name!r} (serial {cert.serial:#x}) is revoked by the "
                    "AMD CRL",
                    step=step,
                    actual=f"serial {cert.serial:#x}",
                )


def _verify_crl(data: bytes, ark: AmdCertificate, *, step: str) -> _Crl:
    crl = load_crl(data)
    if crl.issuer != ark.cert.subject:
        raise CertificateError(
            f"CRL issuer is {crl.issuer.rfc4514_string()!r}, expected the ARK",
            step=step,
            expected=ark.cert.subject.rfc4514_string(),
            actual=crl.issuer.rfc4514_string(),
        )
    key = ark.cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError("the ARK does not hold an RSA key", step=step)
    try:
        key.verify(crl.signature, crl.tbs_certlist_bytes, PSS_SHA384, hashes.SHA384())
    except InvalidSignature as exc:
        raise CertificateError("CRL signature does not verify with the ARK", step=step) from exc
    next_update = crl.next_update_utc
    if next_update is None:
        raise CertificateError("CRL has no nextUpdate", step=step)
    try:
        revoked = frozenset(entry.serial_number for entry in crl)
    except ValueError as exc:
        raise CertificateError("CRL entries are malformed", step=step) from exc
    return _Crl(this_update=crl.last_update_utc, next_update=next_update, revoked=revoked)


# --- steps 9-13 ---------------------------------------------------------------------------------
def _check_key_kind(report: SnpReport, key: EndorsementKey) -> None:
    step = "Step 9: signing key kind"
    selector = report.signing_key
    if selector is SigningKey.NONE:
        raise EvidenceSignatureError(
            "report is not signed (KEY_INFO.SIGNING_KEY is 7, none)",
            step=step,
            expected=key.kind.upper(),
            actual="none",
        )
    named = "vcek" if selector is SigningKey.VCEK else "vlek"
    if named != key.kind:
        raise IdentityMismatch(
            f"report says it was signed by the {named.upper()}, the certificate is a "
            f"{key.kind.upper()}",
            step=step,
            expected=named.upper(),
            actual=key.kind.upper(),
        )


def _check_chip_id(report: SnpReport, key: EndorsementKey) -> None:
    step = "Step 10: hwID equals CHIP_ID"
    if key.hwid is None:  # a VLEK is not tied to one chip; CHIP_ID may be zero
        return
    if report.mask_chip_key:
        # The host masked CHIP_ID (KEY_INFO.MASK_CHIP_KEY): it must then be zero, and the
        # binding to the chip rests on the VCEK signature alone.
        if any(report.chip_id):
            raise IdentityMismatch(
                "CHIP_ID is not zero although KEY_INFO.MASK_CHIP_KEY is set",
                step=step,
                expected="zero",
                actual=report.chip_id.hex(),
            )
        return
    size = len(key.hwid)
    if report.chip_id[:size] != key.hwid or any(report.chip_id[size:]):
        raise IdentityMismatch(
            "the VCEK belongs to another chip: its hwID differs from the report's CHIP_ID",
            step=step,
            expected=key.hwid.hex() + ("" if size == 64 else f" + {64 - size} zero bytes"),
            actual=report.chip_id.hex(),
        )


def _check_product(report: SnpReport, key: EndorsementKey) -> None:
    step = "Step 11: CPUID product"
    if report.cpuid_fam_id is None:  # v2 reports carry no CPUID
        return
    named = report.product
    if named is not None and named is not key.product:
        raise IdentityMismatch(
            f"report CPUID names a {named.value} processor, the certificate a {key.product.value}",
            step=step,
            expected=key.product.value,
            actual=named.value,
        )
    if report.turin_layout() != (key.product is SnpProduct.TURIN):
        raise IdentityMismatch(
            f"report CPUID family {report.cpuid_fam_id:#x} does not match a "
            f"{key.product.value} certificate",
            step=step,
            expected=key.product.value,
            actual=f"family {report.cpuid_fam_id:#x} model {report.cpuid_mod_id or 0:#x}",
        )


def _check_tcb(report: SnpReport, key: EndorsementKey) -> None:
    expected = key.tcb.to_u64()
    if report.reported_tcb != expected:
        turin = key.product is SnpProduct.TURIN
        actual = TcbVersion.from_u64(report.reported_tcb, turin=turin)
        raise TcbError(
            f"REPORTED_TCB ({actual}; {report.reported_tcb:#018x}) differs from the TCB the "
            f"{key.kind.upper()} was issued for ({key.tcb}; {expected:#018x})",
            step="Step 12: reported TCB equals the certificate TCB",
            expected=str(key.tcb),
            actual=str(actual),
        )


def _check_signature(raw: bytes, report: SnpReport, key: EndorsementKey) -> None:
    step = "Step 13: report signature"
    r, s = report.signature_rs
    if not (0 < r < _P384_ORDER and 0 < s < _P384_ORDER):
        raise EvidenceSignatureError(
            "report signature does not verify (r or s out of range)", step=step
        )
    try:
        key.public_key.verify(
            encode_dss_signature(r, s), raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature as exc:
        raise EvidenceSignatureError(
            f"report signature does not verify with the {key.kind.upper()} key", step=step
        ) from exc


def _claims(report: SnpReport, key: EndorsementKey, *, simulated: bool) -> VerifiedClaims:
    policy = report.guest_policy
    # For display and audit; policy reads the same facts from the typed SnpFields below.
    platform: dict[str, str | int] = {
        "product": key.product.value,
        "signing_key": key.kind,
        "report_version": report.version,
        "firmware": report.firmware_version,
        "firmware_major": report.current_major,
        "firmware_minor": report.current_minor,
        "firmware_build": report.current_build,
        "guest_svn": report.guest_svn,
        "reported_tcb": str(report.tcb("reported", key.product)),
        "chip_id": report.chip_id.hex(),
    }
    if key.csp_id is not None:
        platform["csp_id"] = key.csp_id
    return VerifiedClaims(
        tee=TeeKind.SIM if simulated else TeeKind.SNP,
        emulated=TeeKind.SNP if simulated else None,
        measurement=report.measurement,
        report_data=report.report_data,
        debug=policy.debug,
        tcb_status=TcbStatus.UP_TO_DATE,
        svn=report.guest_svn,
        snp=SnpFields(
            guest_policy=report.policy,
            vmpl=report.vmpl,
            host_data=report.host_data,
            family_id=report.family_id,
            image_id=report.image_id,
            id_key_digest=report.id_key_digest,
            author_key_digest=report.author_key_digest,
            chip_id=report.chip_id,
            reported_tcb=report.reported_tcb,
            current_tcb=report.current_tcb,
            committed_tcb=report.committed_tcb,
            launch_tcb=report.launch_tcb,
            platform_info=report.platform_info,
            signing_key=key.kind,
            product=key.product.value,
            report_version=report.version,
            firmware_major=report.current_major,
            firmware_minor=report.current_minor,
            firmware_build=report.current_build,
        ),
        platform=MappingProxyType(platform),
    )
