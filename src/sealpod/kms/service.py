"""Attested secret release (docs/protocol.md, Attested secret release): challenge, attestation,
secret fetch.

1. ``challenge``: 32 random bytes, stored with a short TTL (replicas share the store).
2. ``attest``: consume the nonce (one conditional UPDATE: exactly one of two racing attempts
   wins), verify the evidence, recompute report_data from the nonce, the ephemeral key's DER and
   the claimed workload measurement, evaluate every release policy, audit the outcome (accepted
   or refused, with violation codes), and sign a short-lived token bound to the ephemeral key.
3. ``release``: check the token, the DPoP-style proof by the ephemeral key, and — in the
   transaction that reads the value — that a policy the token was issued under is still stored
   unchanged and releases this secret (:meth:`AttestationService.read_refusal`: removing or
   changing a policy revokes the reads of tokens already issued, at once) and that the proof
   was not used before; return the secret as JWE to that key; audit it.

Every refusal raises a typed error carrying :class:`Finding` codes; nothing here logs or raises
a secret value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.crypto.binding import NONCE_SIZE, attestation_report_data
from sealpod.errors import (
    AttestationRefused,
    CollateralUnavailable,
    CryptoError,
    KmsAuthError,
    KmsForbidden,
    MalformedEvidence,
    SealpodError,
    VerificationError,
)
from sealpod.evidence.envelope import EvidenceEnvelope
from sealpod.kms import jwe
from sealpod.kms.audit import AuditEntry
from sealpod.kms.codec import RELEASE_BUNDLE_CTY, b64decode, b64encode
from sealpod.kms.generate import GenerateSpec
from sealpod.kms.keys import SealedValue
from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.models import (
    AttestationRequest,
    AttestationResponse,
    ChallengeResponse,
    Finding,
    PolicyTestRequest,
    PolicyTestResult,
    ReleasedInfo,
    SecretRelease,
)
from sealpod.kms.release import (
    VOLUME_KEY_SIZE,
    ReleasePolicy,
    binding_findings,
    codes,
    evaluate_release,
    parse_release_policy,
    policy_version,
)
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import Keys, SealState, iso, to_ms
from sealpod.kms.store import Tx
from sealpod.kms.store.proofs import purge_proofs, record_proof
from sealpod.kms.store.volumes import insert_secret_once
from sealpod.kms.tokens import ProofVerifier, TokenClaims, VerifiedProof, new_jti, thumbprint
from sealpod.verify.claims import VerifiedClaims

log = logging.getLogger("sealpod.kms")
_PURGE_EVERY_SECS = 30
_GRANTS_CACHE_SIZE = 4096
_REFUSALS = {
    "secret_not_released": "secret {name!r} is not released by the token's policies",
    "policy_revoked": "secret {name!r} is no longer released to this token: the policy that "
    "granted it was removed or changed after the token was issued (attest again)",
    "proof_replayed": "DPoP proof was already used (replay): each request needs a fresh proof",
}


class AttestationVerifier(Protocol):
    """Turns evidence into verified claims (or raises). The KMS's only view of verification.

    Raises (from ``verify``):
        MalformedEvidence: the evidence does not parse (400).
        VerificationError: a signature, chain, validity or TCB step failed (403).
        CollateralUnavailable: collateral could not be fetched (503).
    """

    def verify(self, evidence: EvidenceEnvelope, *, now: datetime) -> VerifiedClaims: ...


@dataclass(frozen=True, slots=True)
class _Opened:
    """A secret's current version, decrypted inside the transaction that audits its release."""

    name: str
    version: int
    kind: str
    params: dict[str, object]
    value: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Authorized:
    """A workload request that passed :meth:`AttestationService.authorize`."""

    claims: TokenClaims
    proof: VerifiedProof  # by the token's ephemeral key
    now: datetime
    details: dict[str, object]  # what its audit records say about the token

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The token's ephemeral key, which proved possession (answers are encrypted to it)."""
        return self.proof.public_key


@dataclass(frozen=True, slots=True)
class _CachedPolicy:
    document: str
    policy: ReleasePolicy


class AttestationService:
    def __init__(
        self,
        settings: KmsSettings,
        state: SealState,
        verifier: AttestationVerifier,
        metrics: KmsMetrics,
    ) -> None:
        self.settings = settings
        self.state = state
        self.store = state.store
        self.verifier = verifier
        self.metrics = metrics
        self._policies: dict[str, _CachedPolicy] = {}
        self._grants: dict[str, frozenset[str]] = {}  # policy version -> secrets it releases
        self._proofs = ProofVerifier()
        self._lock = threading.Lock()
        self._last_purge = 0.0
        self._last_proof_purge = 0.0

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.state.clock

    # -- step 1 -------------------------------------------------------------------------------
    def challenge(self, tee: str, *, client: str) -> ChallengeResponse:
        self.state.keys  # noqa: B018 - raises 503 while sealed
        now = self.clock()
        nonce = secrets.token_bytes(NONCE_SIZE)
        expires = now + timedelta(seconds=self.settings.nonce_ttl_secs)
        with self.store.transaction() as tx:
            tx.add_nonce(
                nonce=nonce,
                tee=tee,
                client=client[:64],
                now_ms=to_ms(now),
                expires_ms=to_ms(expires),
            )
            if now.timestamp() - self._last_purge > _PURGE_EVERY_SECS:
                self._last_purge = now.timestamp()
                tx.purge_nonces(to_ms(now) - 1000 * self.settings.nonce_ttl_secs)
        return ChallengeResponse(
            nonce=b64encode(nonce),
            expires_at=iso(to_ms(expires)),
            expires_at_unix=int(expires.timestamp()),
        )

    # -- step 2 -------------------------------------------------------------------------------
    def attest(self, req: AttestationRequest, *, client: str) -> AttestationResponse:
        """Verify, evaluate, audit and issue a token.

        The evidence is verified first (no database work while the CPU does); then one write
        transaction consumes the nonce (every attempt uses it up, accepted or not), reads the
        policies, decides, and appends the audit record. The token is signed only after that
        transaction committed. A ``volume.<name>`` secret asked for, granted and missing is
        generated in that transaction when a matched policy says ``generate_volume_keys``.

        Raises:
            MalformedEvidence: nonce, key or evidence malformed (400).
            AttestationRefused: nonce unknown/replayed/expired, verification failed, binding
                wrong or no policy matched — with every finding (403).
            CollateralUnavailable: (503).
        """
        self.state.refresh_keys()  # sign and issue with the keys the other replicas trust
        keys = self.state.keys
        now = self.clock()
        details: dict[str, object] = {"client": client, "tee": req.evidence.tee}
        nonce: bytes | None = None
        try:
            nonce = b64decode(req.nonce, field="nonce")
            if len(nonce) != NONCE_SIZE:
                raise MalformedEvidence(
                    f"field nonce is {len(nonce)} bytes, expected {NONCE_SIZE}", field="nonce"
                )
            pub_der = b64decode(req.public_key, field="public_key")
            public_key = jwe.load_ephemeral_public_key(pub_der)
            workload = bytes.fromhex(req.workload)
        except MalformedEvidence as exc:
            # A well-formed nonce is used up by a malformed attempt too.
            used = nonce if nonce is not None and len(nonce) == NONCE_SIZE else None
            self._refusal_audit("unknown", "malformed", [_finding(exc)], details, nonce=used)
            raise

        claims: VerifiedClaims | None = None
        failure: SealpodError | None = None
        try:
            claims = self.verifier.verify(req.evidence, now=now)
        except (MalformedEvidence, VerificationError, CollateralUnavailable) as exc:
            failure = exc

        subject = "unknown"
        findings: list[Finding] = []
        outcome = "refused"
        matched: list[ReleasePolicy] = []
        wanted = list(dict.fromkeys(req.release))  # in order, once each
        documents: dict[str, str] = {}
        opened: list[_Opened] = []
        crypto_failure: CryptoError | None = None
        jti = new_jti()
        if claims is not None:
            subject = claims.measurement.hex()
            details.update(
                tee=claims.tee.value,
                emulated=claims.emulated.value if claims.emulated else None,
                workload=workload.hex(),
                tcb_status=claims.tcb_status.value,
                debug=claims.debug,
            )
        with self.store.transaction() as tx:
            nonce_result = tx.consume_nonce(nonce, to_ms(now))
            if nonce_result.outcome != "ok":
                findings = [_nonce_finding(nonce_result.outcome)]
            elif failure is not None or claims is None:
                findings = [_finding(failure)] if failure else []
                if isinstance(failure, MalformedEvidence):
                    outcome = "malformed"
                elif isinstance(failure, CollateralUnavailable):
                    outcome = "error"
            else:
                expected = attestation_report_data(nonce, pub_der, workload)
                findings = binding_findings(
                    claims, expected_report_data=expected, workload=workload
                )
                if not findings:
                    rows = [(r.name, r.document) for r in tx.list_policies()]
                    documents = dict(rows)
                    policies = self._parse_policies(rows)
                    if not policies:
                        findings = [Finding(code="no_policy", message="the KMS has no policy")]
                    for rp in policies:
                        found = evaluate_release(rp, claims, workload=workload)
                        if found:
                            findings.extend(found)
                        else:
                            matched.append(rp)
                    if matched:
                        outcome = "ok"
            granted = sorted({s for rp in matched for s in rp.release.secrets})
            names = [rp.name for rp in matched]
            versions = {rp.name: self.version_of(rp, documents[rp.name]) for rp in matched}
            generated: list[str] = []
            if outcome == "ok" and wanted:
                if set(wanted) <= set(granted):  # nothing is made for a refused request
                    generated = self._generate_missing(
                        tx,
                        keys,
                        {n for n in wanted if any(rp.release.generates(n) for rp in matched)},
                    )
                findings, opened, crypto_failure = self._open_for_release(tx, keys, wanted, granted)
                if crypto_failure is not None:
                    outcome = "error"
                elif findings:
                    outcome = "refused"
            ts_ms = to_ms(self.clock())
            entries = [
                AuditEntry(
                    ts_ms=ts_ms, kind="attest", actor=client, subject=subject, outcome=outcome,
                    details=(
                        {**details, "policies": names, "secrets": granted, "jti": jti}
                        if outcome == "ok"
                        else {**details, "codes": codes(findings)}
                    ),
                )
            ]  # fmt: skip
            # A key generated here stays even if the attestation is then refused (another
            # secret is missing): its record says so either way.
            entries.extend(
                AuditEntry(
                    ts_ms=ts_ms, kind="secret.generate", actor=subject, subject=n,
                    outcome="ok",
                    details={"jti": jti, "policies": names, "version": 1, "kind": "bytes",
                             "size": VOLUME_KEY_SIZE},
                )
                for n in generated
            )  # fmt: skip
            if outcome == "ok":
                entries.extend(
                    AuditEntry(
                        ts_ms=ts_ms, kind="secret.release", actor=subject, subject=o.name,
                        outcome="ok",
                        details={"jti": jti, "policies": names, "version": o.version},
                    )
                    for o in opened
                )  # fmt: skip
            self.state.audit_many(tx, entries)

        if crypto_failure is not None:
            self.metrics.attestations.labels(outcome="error").inc()
            log.error("attest error client=%s measurement=%s code=%s", client, subject,
                      crypto_failure.code)  # fmt: skip
            raise crypto_failure
        if outcome != "ok" or claims is None:
            self.metrics.attestations.labels(outcome=outcome).inc()
            log.info(
                "attest %s client=%s measurement=%s codes=%s",
                outcome, client, subject, ",".join(codes(findings)),
            )  # fmt: skip
            if failure is not None and nonce_result.outcome == "ok":
                if not isinstance(failure, VerificationError):
                    raise failure  # malformed (400) or collateral unavailable (503)
            raise AttestationRefused(
                "attestation refused: " + ", ".join(codes(findings)), violations=findings
            )

        ttl = min(
            [rp.release.token_ttl_secs for rp in matched] + [self.settings.max_token_ttl_secs]
        )
        claims_json = {**claims.to_json(), "workload": workload.hex()}
        jkt = thumbprint(public_key)
        token, exp = keys.signer.issue(
            jkt=jkt,
            subject=subject,
            secrets_granted=granted,
            policies=names,
            claims=claims_json,
            now=now,
            ttl_secs=ttl,
            jti=jti,
            policy_versions=versions,
        )
        released: list[ReleasedInfo] = []
        values: list[dict[str, object]] = []
        for o in opened:
            payload, cty = self._payload(keys, o, subject=subject, now=now)
            released.append(ReleasedInfo(name=o.name, version=o.version, content_type=cty))
            values.append({"name": o.name, "version": o.version, "content_type": cty,
                           "value": b64encode(payload)})  # fmt: skip
        bundle = (
            jwe.encrypt_to(
                public_key,
                json.dumps({"secrets": values}).encode(),
                kid=jkt,
                cty=RELEASE_BUNDLE_CTY,
            )
            if values
            else None
        )
        self.metrics.attestations.labels(outcome="accepted").inc()
        if released:
            self.metrics.releases.labels(outcome="ok").inc(len(released))
        log.info("attest accepted client=%s measurement=%s policies=%s released=%d", client,
                 subject, names, len(released))  # fmt: skip
        return AttestationResponse(
            token=token,
            expires_at=iso(exp * 1000),
            expires_at_unix=exp,
            secrets=granted,
            policies=names,
            claims=claims_json,
            released=released,
            released_jwe=bundle,
        )

    def _generate_missing(self, tx: Tx, keys: Keys, names: set[str]) -> list[str]:
        """Create each of ``names`` (volume keys a matched policy generates) that does not exist
        yet, as 32 random bytes at version 1; the names this call created, in order. A name a
        concurrent first release created meanwhile is left as that one made it."""
        if not names:
            return []
        absent = sorted(names - set(tx.current_values(sorted(names))))
        made: list[str] = []
        now_ms = to_ms(self.clock())
        params = GenerateSpec(kind="bytes", size=VOLUME_KEY_SIZE).params()
        for name in absent:
            sealed = keys.master.encrypt_version(name, 1, secrets.token_bytes(VOLUME_KEY_SIZE))
            if insert_secret_once(
                tx, name=name, kind="bytes", params=params, sealed=sealed, now_ms=now_ms
            ):
                made.append(name)
        return made

    def _open_for_release(
        self, tx: Tx, keys: Keys, wanted: list[str], granted: list[str]
    ) -> tuple[list[Finding], list[_Opened], CryptoError | None]:
        """Read and decrypt ``wanted`` in ``tx`` for release with an attestation: findings if
        a name is not granted or does not exist; the error if a stored value does not open."""
        refused = [n for n in wanted if n not in granted]
        if refused:
            return (
                [
                    Finding(
                        code="secret_not_released",
                        message=f"secret {n!r} is not released by the matched policies",
                        expected="one of " + ", ".join(granted) if granted else "none granted",
                        actual=n,
                    )
                    for n in refused
                ],
                [],
                None,
            )
        rows = tx.current_values(wanted)
        absent = [n for n in wanted if n not in rows]
        if absent:
            return (
                [
                    Finding(code="secret_missing", message=f"secret {n!r} does not exist", actual=n)
                    for n in absent
                ],
                [],
                None,
            )
        opened: list[_Opened] = []
        for n in wanted:
            row = rows[n]
            version = int(row.version)
            try:
                value = keys.master.decrypt_version(
                    n, version, SealedValue(bytes(row.wrapped_key), bytes(row.ciphertext))
                )
            except CryptoError as exc:
                return [_finding(exc)], [], exc
            opened.append(_Opened(n, version, str(row.kind), json.loads(row.params), value))
        return [], opened, None

    def _payload(
        self, keys: Keys, opened: _Opened, *, subject: str, now: datetime
    ) -> tuple[bytes, str]:
        """The bytes released for a secret and their content type (a tls-cert is issued now)."""
        if opened.kind == "tls-cert":
            params = opened.params
            dns = params.get("dns", [])
            issued = keys.ca.issue(
                dns=tuple(str(d) for d in dns) if isinstance(dns, list) else (),
                validity_days=int(str(params.get("validity_days", 30))),
                now=now,
                subject_note=subject[:16],
            )
            return json.dumps(issued).encode(), "application/json"
        return opened.value, "application/octet-stream"

    def _refusal_audit(
        self,
        subject: str,
        outcome: str,
        findings: list[Finding],
        details: dict[str, object],
        *,
        nonce: bytes | None = None,
    ) -> None:
        with self.store.transaction() as tx:
            if nonce is not None:
                tx.consume_nonce(nonce, to_ms(self.clock()))
            self.state.audit(
                tx,
                kind="attest",
                actor=str(details.get("client", "")),
                subject=subject,
                outcome=outcome,
                details={**details, "codes": codes(findings)},
            )
        self.metrics.attestations.labels(outcome=outcome).inc()
        log.info(
            "attest %s client=%s measurement=%s codes=%s",
            outcome,
            details.get("client"),
            subject,
            ",".join(codes(findings)),
        )

    # -- policies -----------------------------------------------------------------------------
    def policies(self) -> list[ReleasePolicy]:
        """Every stored release policy, parsed (cached by document text)."""
        with self.store.read() as tx:
            rows = [(r.name, r.document) for r in tx.list_policies()]
        return self._parse_policies(rows)

    def _parse_policies(self, rows: list[tuple[str, str]]) -> list[ReleasePolicy]:
        out: list[ReleasePolicy] = []
        with self._lock:
            live = {name for name, _ in rows}
            for stale in set(self._policies) - live:
                del self._policies[stale]
            for name, document in rows:
                cached = self._policies.get(name)
                if cached is None or cached.document != document:
                    cached = _CachedPolicy(document, parse_release_policy(name, document, "json"))
                    self._policies[name] = cached
                out.append(cached.policy)
        return out

    def version_of(self, rp: ReleasePolicy, document: str) -> str:
        """The version of ``rp`` (parsed from the stored ``document``) to bind a token to;
        remembers which secrets that version releases, for :meth:`read_refusal`."""
        version = policy_version(document)
        with self._lock:
            if version not in self._grants:
                if len(self._grants) >= _GRANTS_CACHE_SIZE:
                    self._grants.clear()
                self._grants[version] = frozenset(rp.release.secrets)
        return version

    def read_refusal(
        self,
        tx: Tx,
        tc: TokenClaims,
        secret: str,
        *,
        proof: VerifiedProof | None = None,
        now: datetime | None = None,
    ) -> str | None:
        """Why the token ``tc`` may not read ``secret`` now (a finding code), or None if it may.

        The one check of every request with a token (secret reads, KBS resources, volume
        counters): the token must name ``secret``, and a policy it was issued under must still
        be stored, unchanged (same version, :func:`sealpod.kms.release.policy_version`), and
        release ``secret``. Run it in the transaction that reads what it guards, so a removal
        that committed before is always seen: revocation takes effect at once, on every
        replica. A token without policy versions (issued before they existed) reads nothing.
        With ``proof`` (a DPoP proof that verified), its ``jti`` is recorded first, in the same
        transaction: a proof seen before is ``proof_replayed``.
        """
        if proof is not None:
            now_ms = to_ms(now or self.clock())
            if now_ms / 1000 - self._last_proof_purge > _PURGE_EVERY_SECS:
                self._last_proof_purge = now_ms / 1000
                purge_proofs(tx, now_ms)
            digest = hashlib.sha256(b"sealpod-dpop-jti\0" + proof.jti.encode()).digest()
            if not record_proof(tx, digest, proof.expires_secs * 1000):
                return "proof_replayed"
        if secret not in tc.secrets:
            return "secret_not_released"
        for name in tc.policies:
            version = tc.policy_versions.get(name)
            if version is None:
                continue
            document = tx.policy_document(name)
            if document is None or not hmac.compare_digest(policy_version(document), version):
                continue
            with self._lock:
                grants = self._grants.get(version)
            if grants is None:  # issued by another replica or before a restart
                grants = frozenset(parse_release_policy(name, document, "json").release.secrets)
                with self._lock:
                    if len(self._grants) >= _GRANTS_CACHE_SIZE:
                        self._grants.clear()
                    self._grants[version] = grants
            if secret in grants:
                return None
        return "policy_revoked"

    def admit(self, tx: Tx, auth: Authorized, name: str, *, kind: str) -> str | None:
        """:meth:`read_refusal` for a request that passed :meth:`authorize`, in ``tx`` (the
        transaction that then reads or changes what ``name`` guards); a refusal is audited as
        ``kind`` in ``tx``. The caller skips its work on a refusal and, after ``tx`` committed,
        raises :meth:`refusal_error`."""
        refusal = self.read_refusal(tx, auth.claims, name, proof=auth.proof, now=auth.now)
        if refusal is not None:
            self.state.audit(
                tx, kind=kind, actor=auth.claims.subject, subject=name, outcome="refused",
                details={**auth.details, "codes": [refusal]},
            )  # fmt: skip
        return refusal

    def refusal_error(self, refusal: str, name: str) -> SealpodError:
        """The error to raise for a :meth:`admit` refusal: a replayed proof is 401, a secret
        not (or no longer) released 403."""
        if refusal == "proof_replayed":
            self.metrics.releases.labels(outcome="unauthenticated").inc()
            return KmsAuthError(_REFUSALS[refusal])
        self.metrics.releases.labels(outcome="refused").inc()
        return KmsForbidden(_REFUSALS[refusal].format(name=name))

    def test_policy(self, name: str, req: PolicyTestRequest) -> PolicyTestResult:
        """Dry run: every violation of policy ``name`` by this evidence (no nonce consumed)."""
        self.state.keys  # noqa: B018 - raises 503 while sealed
        with self.store.read() as tx:
            row = tx.get_policy(name)
        rp = parse_release_policy(name, row.document, "json")
        now = self.clock()
        try:
            claims = self.verifier.verify(req.evidence, now=now)
        except VerificationError as exc:
            return PolicyTestResult(
                policy=name, matched=False, violations=[_finding(exc)], claims=None
            )
        workload = bytes.fromhex(req.workload) if req.workload else None
        findings: list[Finding] = []
        if workload is not None and req.nonce and req.public_key:
            nonce = b64decode(req.nonce, field="nonce")
            pub_der = b64decode(req.public_key, field="public_key")
            expected = attestation_report_data(nonce, pub_der, workload)
            findings.extend(
                binding_findings(claims, expected_report_data=expected, workload=workload)
            )
        findings.extend(evaluate_release(rp, claims, workload=workload))
        return PolicyTestResult(
            policy=name, matched=not findings, violations=findings, claims=claims.to_json()
        )

    # -- step 3 -------------------------------------------------------------------------------
    def authorize(
        self,
        name: str,
        *,
        authorization: str | None,
        proof: str | None,
        method: str,
        path: str,
        kind: str,
    ) -> Authorized:
        """Check a workload request about secret ``name``: the token, the DPoP-style proof by
        its ephemeral key for ``method path``, and that the token's policies release ``name``
        (a refusal is audited as ``kind``). Secret reads and volume counters both ask here.

        Raises:
            KmsAuthError: no/expired/forged token, or no valid proof by its key (401).
            KmsForbidden: the token's policies do not release ``name`` (403).
        """
        now = self.clock()
        token = _bearer(authorization)
        try:
            tc = self.state.verify_token(token, now=now)
            if not proof:
                raise KmsAuthError("missing DPoP proof header (signed by the ephemeral key)")
            verified = self._proofs.check(
                proof, method=method, path=path, token=token, jkt=tc.jkt, now=now
            )
        except KmsAuthError:
            self.metrics.releases.labels(outcome="unauthenticated").inc()
            raise
        details: dict[str, object] = {"jti": tc.jti, "policies": list(tc.policies)}
        if name not in tc.secrets:
            with self.store.transaction() as tx:
                self.state.audit(
                    tx,
                    kind=kind,
                    actor=tc.subject,
                    subject=name,
                    outcome="refused",
                    details={**details, "codes": ["secret_not_released"]},
                )
            self.metrics.releases.labels(outcome="refused").inc()
            raise KmsForbidden(f"secret {name!r} is not released by the token's policies")
        return Authorized(claims=tc, proof=verified, now=now, details=details)

    def release(
        self, name: str, *, authorization: str | None, proof: str | None, path: str
    ) -> SecretRelease:
        """The secret ``name`` as JWE to the token's ephemeral key.

        Raises:
            KmsAuthError: no/expired/forged token, or no valid proof by its key (401).
            KmsForbidden: the token's policies do not release ``name`` (403).
            KmsNotFound: no such secret (404).
        """
        self.state.refresh_keys()  # issue certificates with the CA the other replicas trust
        keys = self.state.keys
        auth = self.authorize(
            name,
            authorization=authorization,
            proof=proof,
            method="GET",
            path=path,
            kind="secret.release",
        )
        tc, now = auth.claims, auth.now
        # One write transaction checks the grant against the live policies and records the
        # proof (admit), reads the value, opens it (so a tampered value is never audited as
        # released) and appends the audit record: the record commits before any byte of the
        # secret leaves, and a read costs one transaction, not a read and then a write.
        with self.store.transaction() as tx:
            refusal = self.admit(tx, auth, name, kind="secret.release")
            if refusal is None:
                row = tx.current_value(name)
                version = int(row.version)
                value = self.state.open_version(
                    name, version, SealedValue(bytes(row.wrapped_key), bytes(row.ciphertext))
                )
                self.state.audit(
                    tx, kind="secret.release", actor=tc.subject, subject=name, outcome="ok",
                    details={**auth.details, "version": version},
                )  # fmt: skip
        if refusal is not None:
            raise self.refusal_error(refusal, name)
        opened = _Opened(name, version, str(row.kind), json.loads(row.params), value)
        payload, cty = self._payload(keys, opened, subject=tc.subject, now=now)
        sealed = jwe.encrypt_to(auth.public_key, payload, kid=tc.jkt, cty=cty)
        self.metrics.releases.labels(outcome="ok").inc()
        return SecretRelease(name=name, version=version, jwe=sealed, content_type=cty)


_NONCE_MESSAGES = {
    "unknown": "nonce was never issued by this KMS",
    "replayed": "nonce was already used (replay)",
    "expired": "nonce expired before the attestation arrived",
}


def _nonce_finding(outcome: str) -> Finding:
    return Finding(code=f"nonce_{outcome}", message=_NONCE_MESSAGES[outcome])


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise KmsAuthError("missing Authorization: Bearer token")
    scheme, _, value = authorization.partition(" ")
    if not hmac.compare_digest(scheme.lower().encode(), b"bearer") or not value.strip():
        raise KmsAuthError("Authorization header is not 'Bearer <token>'")
    return value.strip()


def _finding(exc: SealpodError) -> Finding:
    d = exc.to_dict()
    expected = d.get("expected")
    actual = d.get("actual")
    step = d.get("step")
    return Finding(
        code=exc.code,
        message=exc.message if step is None else f"{step}: {exc.message}",
        expected=None if expected is None else str(expected),
        actual=None if actual is None else str(actual),
    )
