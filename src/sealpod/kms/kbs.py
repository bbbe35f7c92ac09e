"""The Trustee KBS attestation protocol (RCAR, ``/kbs/v0/...``) on top of the sealpod KMS, so a
Confidential Containers guest can use a sealpod KMS as its key broker.

    POST /kbs/v0/auth      {version, tee, extra-params}  → {nonce, extra-params} + cookie
    POST /kbs/v0/attest    {runtime-data: {nonce, tee-pubkey}, tee-evidence, init-data?}
                           → {token} + cookie (the token)
    GET  /kbs/v0/resource/<repository>/<type>/<tag>  (cookie or Bearer token)
                           → flattened JWE to tee-pubkey

Same nonces (single use, in the database), same verifier, same release policies and audit as
the native protocol. The evidence binds ``report_data = SHA-384(JCS(runtime-data))`` (RFC 8785
canonical JSON, zero-padded to 64 bytes), as Trustee's attestation service expects. Supported
evidence: SGX and TDX quotes (``{"quote": base64}``) and SEV-SNP reports in Trustee's JSON form
(``{attestation_report, cert_chain}``, see :mod:`sealpod.evidence.trustee_snp`), each optionally
wrapped in ``{"primary_evidence": …}``. Resource ``<repository>/<type>/<tag>`` is the sealpod
secret named ``<repository>.<type>.<tag>``. ``tee-pubkey`` may be EC P-256 (``ECDH-ES+A256KW``)
or RSA of at least 2048 bits (``RSA-OAEP``/``RSA-OAEP-256``); content is ``A256GCM``. A resource
request needs no DPoP proof: KBS clients do not send one, and the JWE is to the attested key
anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

import rfc8785
from joserfc import jwe as jose_jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sealpod.crypto.binding import NONCE_SIZE
from sealpod.errors import (
    AttestationRefused,
    CollateralUnavailable,
    KmsAuthError,
    KmsForbidden,
    MalformedEvidence,
    SealpodError,
    VerificationError,
)
from sealpod.evidence.envelope import EvidenceEnvelope
from sealpod.evidence.trustee_snp import certificates_pem, report_from_trustee
from sealpod.kms.codec import b64decode
from sealpod.kms.keys import SealedValue
from sealpod.kms.models import Finding
from sealpod.kms.release import ReleasePolicy, codes, evaluate_release
from sealpod.kms.service import AttestationService, _finding, _nonce_finding
from sealpod.kms.state import to_ms
from sealpod.verify.claims import TeeKind, VerifiedClaims

KBS_VERSION = "0.4.0"
COOKIE = "kbs-session-id"
KBS_TEES = {"sgx": "sgx", "tdx": "tdx", "snp": "snp"}
_EC_ALG = "ECDH-ES+A256KW"
_RSA_ALGS = ("RSA-OAEP", "RSA-OAEP-256")
_ENC = "A256GCM"


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, populate_by_name=True)


class KbsRequest(_Model):
    version: str = Field(max_length=32)
    tee: str = Field(max_length=32)
    extra_params: Any = Field(default=None, alias="extra-params")


class KbsRuntimeData(_Model):
    nonce: str = Field(max_length=128)
    tee_pubkey: dict[str, Any] = Field(alias="tee-pubkey")


class KbsAttestation(_Model):
    runtime_data: KbsRuntimeData = Field(alias="runtime-data")
    tee_evidence: Any = Field(alias="tee-evidence")
    init_data: Any = Field(default=None, alias="init-data")
    # Raw runtime-data as sent: what is hashed (unknown members included).
    model_config = ConfigDict(strict=True, frozen=True, populate_by_name=True, extra="allow")


def canonical_json(value: object) -> bytes:
    """RFC 8785 (JCS) for the JSON a KBS client sends, by the ``rfc8785`` package: the peer
    (Trustee's client) hashes the same form, numbers and key order included.

    Raises:
        MalformedEvidence: a value JCS cannot represent (NaN, a non-string key, ...).
    """
    try:
        return rfc8785.dumps(value)  # type: ignore[arg-type]  # checked by the package
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedEvidence(f"KBS runtime data has no canonical form: {exc}") from exc


def kbs_report_data(runtime_data: object) -> bytes:
    """SHA-384 of the canonical runtime data, zero-padded to the 64-byte report_data field."""
    return hashlib.sha384(canonical_json(runtime_data)).digest().ljust(64, b"\x00")


def load_tee_pubkey(jwk: dict[str, Any]) -> tuple[ECKey | RSAKey, str]:
    """The client's ephemeral public key and the JWE algorithm to wrap for it.

    Raises:
        MalformedEvidence: not a public EC P-256 or RSA (>= 2048 bits) JWK, or an algorithm
            sealpod refuses (RSA1_5).
    """
    if any(k in jwk for k in ("d", "p", "q")):
        raise MalformedEvidence("tee-pubkey holds private key material", field="tee-pubkey")
    clean = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    try:
        if jwk.get("kty") == "EC":
            if jwk.get("crv") != "P-256":
                raise MalformedEvidence("tee-pubkey EC curve must be P-256", field="tee-pubkey")
            return ECKey.import_key(clean), _EC_ALG
        if jwk.get("kty") == "RSA":
            key = RSAKey.import_key(clean)
            if key.public_key.key_size < 2048:
                raise MalformedEvidence("tee-pubkey RSA key is under 2048 bits", field="tee-pubkey")
            alg = str(jwk.get("alg") or "RSA-OAEP")
            if alg not in _RSA_ALGS:
                raise MalformedEvidence(
                    f"tee-pubkey alg is {alg!r}, expected one of {', '.join(_RSA_ALGS)}",
                    field="tee-pubkey",
                )
            return key, alg
    except (JoseError, ValueError, TypeError) as exc:
        raise MalformedEvidence("tee-pubkey is not a valid JWK", field="tee-pubkey") from exc
    raise MalformedEvidence(f"tee-pubkey kty is {jwk.get('kty')!r}, expected EC or RSA")


def flattened_jwe(key: ECKey | RSAKey, alg: str, plaintext: bytes) -> dict[str, str]:
    """The KBS resource response: flattened JWE JSON (with Trustee's ``aad`` member, which is
    the protected header itself: the AAD of the compact form)."""
    compact = jose_jwe.encrypt_compact(
        {"alg": alg, "enc": _ENC}, plaintext, key, algorithms=[alg, _ENC]
    )
    protected, encrypted_key, iv, ciphertext, tag = compact.split(".")
    return {
        "protected": protected,
        "encrypted_key": encrypted_key,
        "aad": protected,
        "iv": iv,
        "ciphertext": ciphertext,
        "tag": tag,
    }


class KbsService:
    """KBS endpoints over an :class:`AttestationService` (its store, verifier, policies)."""

    def __init__(self, attestation: AttestationService) -> None:
        self.att = attestation

    # -- /kbs/v0/auth -----------------------------------------------------------------------
    def auth(self, req: KbsRequest, *, client: str) -> tuple[dict[str, object], str]:
        """A challenge and its session cookie (the nonce, base64url).

        Raises:
            MalformedEvidence: a TEE whose Trustee evidence format sealpod does not verify.
        """
        self.att.state.keys  # noqa: B018 - 503 while sealed
        if req.tee not in KBS_TEES:
            raise MalformedEvidence(
                f"tee is {req.tee!r}; sealpod's KBS endpoints verify {', '.join(KBS_TEES)} "
                "evidence",
                field="tee",
            )
        now = self.att.clock()
        nonce = secrets.token_bytes(NONCE_SIZE)
        expires = now + timedelta(seconds=self.att.settings.nonce_ttl_secs)
        with self.att.store.transaction() as tx:
            tx.add_nonce(
                nonce=nonce,
                tee=KBS_TEES[req.tee],
                client=client[:64],
                now_ms=to_ms(now),
                expires_ms=to_ms(expires),
            )
        session = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
        return {"nonce": base64.b64encode(nonce).decode(), "extra-params": {}}, session

    # -- /kbs/v0/attest ---------------------------------------------------------------------
    def attest(self, body: dict[str, Any], *, session: str | None, client: str) -> tuple[str, int]:
        """Verify, evaluate, audit; returns (token, max-age seconds).

        Raises:
            KmsAuthError: no session cookie. MalformedEvidence: a malformed payload.
            AttestationRefused: nonce, binding, verification or policy refusal (403).
            CollateralUnavailable: (503).
        """
        self.att.state.refresh_keys()  # sign and issue with the keys the other replicas trust
        keys = self.att.state.keys
        now = self.att.clock()
        if not session:
            raise KmsAuthError(f"missing {COOKIE} cookie: call /kbs/v0/auth first")
        nonce = b64decode(session, field=COOKIE)
        details: dict[str, object] = {"client": client, "protocol": "kbs"}
        try:
            parsed = KbsAttestation.model_validate(body)
            runtime = body["runtime-data"]
            key, alg = load_tee_pubkey(parsed.runtime_data.tee_pubkey)
            envelope = _envelope(parsed.tee_evidence, self._tee_of(nonce))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            failure = MalformedEvidence(f"KBS attestation payload: {loc}: {err['msg']}")
            self.att._refusal_audit(
                "unknown", "malformed", [_finding(failure)], details, nonce=nonce
            )
            raise failure from None
        except MalformedEvidence as failure:
            self.att._refusal_audit(
                "unknown", "malformed", [_finding(failure)], details, nonce=nonce
            )
            raise

        claims: VerifiedClaims | None = None
        failure_exc: SealpodError | None = None
        try:
            claims = self.att.verifier.verify(envelope, now=now)
        except (MalformedEvidence, VerificationError, CollateralUnavailable) as exc:
            failure_exc = exc

        subject = claims.measurement.hex() if claims else "unknown"
        findings: list[Finding] = []
        matched: list[ReleasePolicy] = []
        documents: dict[str, str] = {}
        outcome = "refused"
        with self.att.store.transaction() as tx:
            nonce_result = tx.consume_nonce(nonce, to_ms(now))
            if nonce_result.outcome != "ok":
                findings = [_nonce_finding(nonce_result.outcome)]
            elif not hmac.compare_digest(
                parsed.runtime_data.nonce.encode(), base64.b64encode(nonce)
            ):
                findings = [
                    Finding(
                        code="nonce_mismatch",
                        message="runtime-data.nonce is not the challenge of this session",
                    )
                ]
            elif failure_exc is not None or claims is None:
                findings = [_finding(failure_exc)] if failure_exc else []
            else:
                expected = kbs_report_data(runtime)
                if not hmac.compare_digest(claims.report_data, expected):
                    findings = [
                        Finding(
                            code="report_data_mismatch",
                            message="evidence report_data is not SHA-384(JCS(runtime-data))",
                            expected=expected.hex(),
                            actual=claims.report_data.hex(),
                        )
                    ]
                else:
                    rows = [(r.name, r.document) for r in tx.list_policies()]
                    documents = dict(rows)
                    for rp in self.att._parse_policies(rows):
                        workload = _kbs_workload(claims)
                        found = evaluate_release(rp, claims, workload=workload)
                        if rp.release.workloads is not None and workload is None:
                            found.append(
                                Finding(
                                    code="workload_not_bound",
                                    message="KBS evidence of a CVM binds no container "
                                    "measurement; [release].workloads cannot be checked",
                                    policy=rp.name,
                                )
                            )
                        if found:
                            findings.extend(found)
                        else:
                            matched.append(rp)
                    if matched:
                        outcome = "ok"
                    elif not rows:
                        findings = [Finding(code="no_policy", message="the KMS has no policy")]
            granted = sorted({s for rp in matched for s in rp.release.secrets})
            names = [rp.name for rp in matched]
            versions = {rp.name: self.att.version_of(rp, documents[rp.name]) for rp in matched}
            audit = (
                {**details, "policies": names, "secrets": granted}
                if outcome == "ok"
                else {**details, "codes": codes(findings)}
            )
            self.att.state.audit(
                tx, kind="attest", actor=client, subject=subject, outcome=outcome, details=audit
            )
        self.att.metrics.attestations.labels(outcome=outcome).inc()
        if outcome != "ok" or claims is None:
            if failure_exc is not None and nonce_result.outcome == "ok":
                if not isinstance(failure_exc, VerificationError):
                    raise failure_exc
            raise AttestationRefused(
                "attestation refused: " + ", ".join(codes(findings)), violations=findings
            )
        ttl = min(
            [rp.release.token_ttl_secs for rp in matched] + [self.att.settings.max_token_ttl_secs]
        )
        token, _ = keys.signer.issue(
            jkt=key.thumbprint(),
            subject=subject,
            secrets_granted=granted,
            policies=names,
            claims={
                **claims.to_json(),
                "tee-pubkey": key.as_dict(private=False),
                "jwe-alg": alg,
            },
            now=now,
            ttl_secs=ttl,
            policy_versions=versions,
        )
        return token, ttl

    def _tee_of(self, nonce: bytes) -> str:
        with self.att.store.read() as tx:
            tee = tx.nonce_tee(nonce)
        return tee or "sgx"  # an unknown nonce is refused below anyway

    # -- /kbs/v0/resource -------------------------------------------------------------------
    def resource(
        self, repository: str, kind: str, tag: str, *, token: str | None
    ) -> dict[str, str]:
        """The secret ``repository.kind.tag`` as flattened JWE to the attested tee-pubkey.

        Raises:
            KmsAuthError: no or invalid token. KmsForbidden: not released by the token.
            KmsNotFound: no such secret.
        """
        self.att.state.refresh_keys()
        self.att.state.keys  # noqa: B018 - 503 while sealed
        now = self.att.clock()
        if not token:
            raise KmsAuthError(f"no attestation token: send the {COOKIE} cookie or a Bearer token")
        tc = self.att.state.verify_token(token, now=now)
        jwk = tc.claims.get("tee-pubkey")
        alg = tc.claims.get("jwe-alg")
        if not isinstance(jwk, dict) or not isinstance(alg, str):
            raise KmsAuthError("token was not issued by the KBS endpoints (no tee-pubkey)")
        name = f"{repository}.{kind}.{tag}"
        details: dict[str, object] = {"jti": tc.jti, "policies": list(tc.policies), "kbs": True}
        # The grant is checked against the live policies (a removed or changed one revokes it)
        # in the transaction that reads the value.
        with self.att.store.transaction() as tx:
            refusal = self.att.read_refusal(tx, tc, name)
            if refusal is not None:
                self.att.state.audit(
                    tx, kind="secret.release", actor=tc.subject, subject=name,
                    outcome="refused", details={**details, "codes": [refusal]},
                )  # fmt: skip
            else:
                row = tx.current_value(name)
        if refusal is not None:
            raise KmsForbidden(
                f"resource {repository}/{kind}/{tag} is not released to this token ({refusal})"
            )
        version = int(row.version)
        value = self.att.state.open_version(
            name, version, SealedValue(bytes(row.wrapped_key), bytes(row.ciphertext))
        )
        key, _ = load_tee_pubkey(jwk)
        response = flattened_jwe(key, alg, value)
        with self.att.store.transaction() as tx:
            self.att.state.audit(
                tx,
                kind="secret.release",
                actor=tc.subject,
                subject=name,
                outcome="ok",
                details={**details, "version": version},
            )
        self.att.metrics.releases.labels(outcome="ok").inc()
        return response


def _kbs_workload(claims: VerifiedClaims) -> bytes | None:
    """On SGX the enclave measurement is the workload; a CVM's KBS evidence binds none."""
    if claims.tee is TeeKind.SGX or (
        claims.tee is TeeKind.SIM and claims.emulated in (None, TeeKind.SGX)
    ):
        return claims.measurement
    return None


def _envelope(tee_evidence: object, tee: str) -> EvidenceEnvelope:
    evidence = tee_evidence
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError as exc:
            raise MalformedEvidence("tee-evidence is a string but not JSON") from exc
    if isinstance(evidence, dict) and "primary_evidence" in evidence:
        evidence = evidence["primary_evidence"]
    if tee == "snp":
        return _snp_envelope(evidence)
    if not isinstance(evidence, dict) or not isinstance(evidence.get("quote"), str):
        raise MalformedEvidence(
            "tee-evidence has no base64 'quote' (SGX/TDX evidence as Trustee sends it)",
            field="tee-evidence",
        )
    try:
        return EvidenceEnvelope(tee=tee, evidence=evidence["quote"])  # type: ignore[arg-type]
    except (ValidationError, MalformedEvidence) as exc:
        raise MalformedEvidence(f"tee-evidence quote is not a {tee} quote") from exc


def _snp_envelope(evidence: object) -> EvidenceEnvelope:
    """Trustee's SNP evidence (the report as JSON fields, the VCEK/VLEK in ``cert_chain``)."""
    if not isinstance(evidence, dict):
        raise MalformedEvidence(
            "tee-evidence for snp is not a JSON object {attestation_report, cert_chain}",
            field="tee-evidence",
        )
    raw, certs = report_from_trustee(evidence)
    try:
        return EvidenceEnvelope(
            tee="snp",
            evidence=base64.b64encode(raw).decode(),
            certificates=certificates_pem(certs),
        )
    except ValidationError as exc:
        raise MalformedEvidence("tee-evidence is not an SNP report") from exc
