"""Attestation tokens (JWT, ES256) bound to the workload's ephemeral key, and the proofs of
possession that go with them.

A token says: this ephemeral key (``cnf.jkt``, its RFC 7638 thumbprint) belongs to a workload
whose evidence verified and matched these release policies, for these secrets, until ``exp``.
The signing key is the KMS's own (kept in the store wrapped under the master key, so every
replica verifies every replica's tokens).

A bearer token alone is not enough to read a secret: each request also carries a ``DPoP``
header, a short JWS signed by the ephemeral key over the method, the path, the time and the
token's hash (the shape of RFC 9449, with the path in ``htu`` so that proxies do not matter).
A token presented with a proof by another key is refused; and the secret comes back as a JWE to
the key in the token anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from sealpod.errors import KmsAuthError, UnknownSigningKey

ISSUER = "sealpod-kms"
AUDIENCE = "sealpod-kms/secrets"
TOKEN_ALG = "ES256"  # noqa: S105 - an algorithm name, not a password
PROOF_TYP = "dpop+jwt"
PROOF_MAX_AGE_SECS = 120
MAX_TOKEN_SIZE = 16 * 1024
VERIFIED_CACHE_SIZE = 4096


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_jti() -> str:
    """A fresh token id: 16 random bytes, base64url."""
    return b64url(secrets.token_bytes(16))


def thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key."""
    return ECKey.import_key(public_key).thumbprint()


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """What a verified token grants."""

    jti: str
    jkt: str
    subject: str
    secrets: tuple[str, ...]
    policies: tuple[str, ...]
    issued_at: int
    expires_at: int
    claims: Mapping[str, object]
    #: The version (SHA-256 of the stored document) of each policy the token was issued under
    #: (``pv``): a read is allowed only while one of them is still stored unchanged and
    #: releases the secret (:meth:`sealpod.kms.service.AttestationService.read_refusal`).
    policy_versions: Mapping[str, str] = field(default_factory=dict)


class TokenSigner:
    """Issues attestation tokens with the KMS's current P-256 key; verifies tokens signed by it
    or by the previous key (kept after a rotation, so tokens issued just before it stay valid
    until they expire)."""

    def __init__(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        previous: Sequence[ec.EllipticCurvePublicKey] = (),
    ) -> None:
        self._key = ECKey.import_key(private_key)
        self.kid = self._key.thumbprint()
        self._verify_keys: dict[str, ECKey] = {self.kid: self._key}
        for public in previous:
            key = ECKey.import_key(public)
            self._verify_keys.setdefault(key.thumbprint(), key)
        # Tokens whose signature and claims already verified (a workload reads several
        # secrets with one token); lifetime is still checked on every use.
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenSigner(kid={self.kid})"

    @staticmethod
    def generate_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def public_jwk(self) -> dict[str, object]:
        return {**self._key.as_dict(private=False), "kid": self.kid, "alg": TOKEN_ALG, "use": "sig"}

    def public_jwks(self) -> list[dict[str, object]]:
        """The current key first, then the previous one(s) still accepted."""
        return [
            {**key.as_dict(private=False), "kid": kid, "alg": TOKEN_ALG, "use": "sig"}
            for kid, key in self._verify_keys.items()
        ]

    def issue(
        self,
        *,
        jkt: str,
        subject: str,
        secrets_granted: Sequence[str],
        policies: Sequence[str],
        claims: Mapping[str, object],
        now: datetime,
        ttl_secs: int,
        jti: str | None = None,
        policy_versions: Mapping[str, str] | None = None,
    ) -> tuple[str, int]:
        """Sign a token; returns (compact JWT, expiry as Unix seconds). ``jti`` defaults to
        16 random bytes (a caller passes its own to name the token in audit records first).
        ``policy_versions`` binds the token to the policies as they were (claim ``pv``)."""
        iat = int(now.timestamp())
        exp = iat + ttl_secs
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": iat,
            "nbf": iat,
            "exp": exp,
            "jti": jti or new_jti(),
            "cnf": {"jkt": jkt},
            "secrets": list(secrets_granted),
            "policies": list(policies),
            "pv": dict(policy_versions or {}),
            "claims": dict(claims),
        }
        header = {"alg": TOKEN_ALG, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, payload, self._key, algorithms=[TOKEN_ALG]), exp

    def sign_statement(self, payload: Mapping[str, object], *, typ: str) -> str:
        """Sign a JWT that is not an attestation token (an audit checkpoint). Its ``typ`` and
        ``aud`` differ from a token's, and :meth:`verify` requires a token's audience and
        ``cnf``, so neither can be taken for the other."""
        if payload.get("aud") == AUDIENCE or typ == "JWT":
            raise ValueError("a statement must not look like an attestation token")
        header = {"alg": TOKEN_ALG, "kid": self.kid, "typ": typ}
        return jwt.encode(header, dict(payload), self._key, algorithms=[TOKEN_ALG])

    def verify(self, token: str, *, now: datetime, leeway_secs: int = 5) -> TokenClaims:
        """Check signature, issuer, audience and lifetime.

        Raises:
            KmsAuthError: malformed, signed by another key, expired or not yet valid.
        """
        if len(token) > MAX_TOKEN_SIZE:
            raise KmsAuthError(f"token is {len(token)} bytes, expected at most {MAX_TOKEN_SIZE}")
        with self._lock:
            hit = self._verified.get(token)
            if hit is not None:
                self._verified.move_to_end(token)
        if hit is not None:
            t = int(now.timestamp())
            if not hit.issued_at - leeway_secs <= t < hit.expires_at + leeway_secs:
                raise KmsAuthError("token refused: the token has expired or is not yet valid")
            return hit
        claims = self._verify_uncached(token, now=now, leeway_secs=leeway_secs)
        with self._lock:
            self._verified[token] = claims
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _verify_uncached(self, token: str, *, now: datetime, leeway_secs: int) -> TokenClaims:
        try:
            kid = jws.extract_compact(token.encode()).headers().get("kid")
        except (JoseError, ValueError) as exc:
            raise KmsAuthError("token is malformed or its signature does not verify") from exc
        key = self._verify_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownSigningKey("token is signed by a key this KMS does not know")
        try:
            decoded = jwt.decode(token, key, algorithms=[TOKEN_ALG])
        except (JoseError, ValueError) as exc:
            raise KmsAuthError("token is malformed or its signature does not verify") from exc
        c = decoded.claims
        try:
            jwt.JWTClaimsRegistry(
                now=int(now.timestamp()),
                leeway=leeway_secs,
                iss={"essential": True, "value": ISSUER},
                aud={"essential": True, "value": AUDIENCE},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(c)
        except JoseError as exc:
            raise KmsAuthError(f"token refused: {exc.error}") from exc
        cnf = c.get("cnf")
        if not isinstance(cnf, dict) or not isinstance(cnf.get("jkt"), str):
            raise KmsAuthError("token has no cnf.jkt key binding")
        granted = c.get("secrets")
        policies = c.get("policies")
        claims = c.get("claims")
        if not isinstance(granted, list) or not isinstance(policies, list):
            raise KmsAuthError("token has no secrets/policies lists")
        pv = c.get("pv")
        versions = (
            {str(k): str(v) for k, v in pv.items() if isinstance(v, str)}
            if isinstance(pv, dict)
            else {}
        )
        return TokenClaims(
            jti=str(c["jti"]),
            jkt=cnf["jkt"],
            subject=str(c.get("sub", "")),
            secrets=tuple(str(s) for s in granted),
            policies=tuple(str(p) for p in policies),
            issued_at=int(c.get("iat", 0)),
            expires_at=int(c["exp"]),
            claims=claims if isinstance(claims, dict) else {},
            policy_versions=versions,
        )


def token_hash(token: str) -> str:
    return b64url(hashlib.sha256(token.encode()).digest())


def make_proof(
    private_key: ec.EllipticCurvePrivateKey, *, method: str, path: str, token: str, now: datetime
) -> str:
    """A DPoP-style proof that the caller holds ``private_key`` for this request and token."""
    key = ECKey.import_key(private_key)
    header = {"alg": TOKEN_ALG, "typ": PROOF_TYP, "jwk": key.as_dict(private=False)}
    payload = {
        "htm": method.upper(),
        "htu": path,
        "iat": int(now.timestamp()),
        "jti": b64url(secrets.token_bytes(12)),
        "ath": token_hash(token),
    }
    return jwt.encode(header, payload, key, algorithms=[TOKEN_ALG])


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A DPoP proof that verified: the key that signed it (the token's) and its ``jti`` and
    ``iat``, for the caller to record it as used (a proof is accepted once)."""

    public_key: ec.EllipticCurvePublicKey
    jti: str
    iat: int

    @property
    def expires_secs(self) -> int:
        """When the proof would be refused as too old anyway: its record can go then."""
        return self.iat + PROOF_MAX_AGE_SECS + 1


class ProofVerifier:
    """Checks DPoP-style proofs; remembers each token key once its thumbprint matched.

    A workload proves possession of one ephemeral key for every read with its token: after the
    first proof, the key is already imported and known to match ``jkt``, so a later proof costs
    one signature check and the claim checks.
    """

    def __init__(self, max_keys: int = VERIFIED_CACHE_SIZE) -> None:
        self._keys: OrderedDict[str, tuple[dict[str, object], ECKey]] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def verify(
        self, proof: str, *, method: str, path: str, token: str, jkt: str, now: datetime
    ) -> ec.EllipticCurvePublicKey:
        """Check a proof against the request and the token's key binding; return the proving
        key (the ephemeral key the token is bound to, to which the secret is then encrypted).
        This does not know whether the proof was used before: :meth:`check` says its ``jti``.

        Raises:
            KmsAuthError: malformed, signed by a key other than the token's, for another
            request or token, or older than PROOF_MAX_AGE_SECS.
        """
        return self.check(proof, method=method, path=path, token=token, jkt=jkt, now=now).public_key

    def check(
        self, proof: str, *, method: str, path: str, token: str, jkt: str, now: datetime
    ) -> VerifiedProof:
        """:meth:`verify`, returning the proof's ``jti`` and ``iat`` with the key.

        Raises:
            KmsAuthError: as :meth:`verify`, or the proof has no ``jti`` (1-128 characters).
        """
        if len(proof) > MAX_TOKEN_SIZE:
            raise KmsAuthError("DPoP proof is too large")
        with self._lock:
            known = self._keys.get(jkt)
            if known is not None:
                self._keys.move_to_end(jkt)
        try:
            if known is None:
                header = jws.extract_compact(proof.encode()).protected
                jwk = header.get("jwk")
                if not isinstance(jwk, dict) or "d" in jwk:
                    raise KmsAuthError("DPoP proof carries no public jwk")
                key = ECKey.import_key(jwk)
                if not hmac.compare_digest(key.thumbprint(), jkt):
                    raise KmsAuthError(
                        "DPoP proof is signed by another key than the token is bound to"
                    )
                known = (dict(jwk), key)
            verified = jws.deserialize_compact(proof, known[1], algorithms=[TOKEN_ALG])
        except KmsAuthError:
            raise
        except (JoseError, ValueError, TypeError) as exc:
            raise KmsAuthError("DPoP proof is malformed or its signature does not verify") from exc
        header = verified.protected
        if header.get("typ") != PROOF_TYP or header.get("alg") != TOKEN_ALG:
            raise KmsAuthError(f"DPoP proof typ/alg is {header.get('typ')}/{header.get('alg')}")
        if header.get("jwk") != known[0]:
            raise KmsAuthError("DPoP proof is signed by another key than the token is bound to")
        try:
            c = json.loads(verified.payload)
        except ValueError as exc:
            raise KmsAuthError("DPoP proof claims are not JSON") from exc
        if not isinstance(c, dict):
            raise KmsAuthError("DPoP proof claims are not a JSON object")
        if c.get("htm") != method.upper() or c.get("htu") != path:
            raise KmsAuthError(
                f"DPoP proof is for {c.get('htm')} {c.get('htu')}, expected {method} {path}"
            )
        ath = c.get("ath")
        # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a 500, not a 401).
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), token_hash(token).encode()
        ):
            raise KmsAuthError("DPoP proof is for another token")
        iat = c.get("iat")
        if (
            not isinstance(iat, int)
            or isinstance(iat, bool)
            or abs(int(now.timestamp()) - iat) > PROOF_MAX_AGE_SECS
        ):
            raise KmsAuthError(
                f"DPoP proof iat is {iat}, expected within {PROOF_MAX_AGE_SECS}s of now"
            )
        jti = c.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 128:
            raise KmsAuthError("DPoP proof has no jti (1-128 characters)")
        public = known[1].public_key
        if not isinstance(public, ec.EllipticCurvePublicKey):  # pragma: no cover - ECKey is EC
            raise KmsAuthError("DPoP proof key is not an EC key")
        with self._lock:  # remembered only once a whole proof by it verified
            self._keys[jkt] = known
            while len(self._keys) > self._max:
                self._keys.popitem(last=False)
        return VerifiedProof(public, jti, iat)


def verify_proof(
    proof: str, *, method: str, path: str, token: str, jkt: str, now: datetime
) -> ec.EllipticCurvePublicKey:
    """:meth:`ProofVerifier.verify` without remembering keys (one-off checks and tests)."""
    return ProofVerifier(max_keys=0).verify(
        proof, method=method, path=path, token=token, jkt=jkt, now=now
    )
