"""Attestation tokens, DPoP-style proofs and the JWE secret channel."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.errors import CryptoError, KmsAuthError, MalformedEvidence, UnknownSigningKey
from sealpod.kms import jwe
from sealpod.kms.tokens import ProofVerifier, TokenSigner, make_proof, thumbprint, verify_proof

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(TokenSigner.generate_key())


@pytest.fixture
def eph() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey, ttl: int = 60) -> str:
    token, exp = signer.issue(
        jkt=thumbprint(eph.public_key()), subject="ab" * 32, secrets_granted=["db"],
        policies=["p"], claims={"tee": "sim"}, now=NOW, ttl_secs=ttl,
    )  # fmt: skip
    assert exp == int(NOW.timestamp()) + ttl
    return token


def test_token_round_trip(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    claims = signer.verify(issue(signer, eph), now=NOW + timedelta(seconds=30))
    assert claims.secrets == ("db",) and claims.policies == ("p",)
    assert claims.jkt == thumbprint(eph.public_key())
    assert claims.claims == {"tee": "sim"}


def test_expired_token_refused(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    token = issue(signer, eph, ttl=60)
    with pytest.raises(KmsAuthError, match="token refused"):
        signer.verify(token, now=NOW + timedelta(seconds=120))


def test_token_from_another_kms_refused(eph: ec.EllipticCurvePrivateKey) -> None:
    a, b = TokenSigner(TokenSigner.generate_key()), TokenSigner(TokenSigner.generate_key())
    with pytest.raises(UnknownSigningKey, match="does not know"):
        b.verify(issue(a, eph), now=NOW)


def test_token_naming_our_kid_but_signed_by_another_key_refused(
    signer: TokenSigner, eph: ec.EllipticCurvePrivateKey
) -> None:
    forger = TokenSigner(TokenSigner.generate_key())
    forged = issue(forger, eph)
    _, payload, sig = forged.split(".")
    claimed = json.dumps({"alg": "ES256", "kid": signer.kid, "typ": "JWT"}).encode()
    new_header = base64.urlsafe_b64encode(claimed).rstrip(b"=").decode()
    with pytest.raises(KmsAuthError, match="signature does not verify"):
        signer.verify(f"{new_header}.{payload}.{sig}", now=NOW)


def test_a_rotated_signer_still_verifies_the_previous_key_only(
    eph: ec.EllipticCurvePrivateKey,
) -> None:
    old_key = TokenSigner.generate_key()
    old = TokenSigner(old_key)
    old_token = issue(old, eph)
    new = TokenSigner(TokenSigner.generate_key(), previous=[old_key.public_key()])
    assert new.verify(old_token, now=NOW).secrets == ("db",)
    fresh = issue(new, eph)
    assert new.kid != old.kid and f'"kid":"{new.kid}"' in _header(fresh)
    assert [k["kid"] for k in new.public_jwks()] == [new.kid, old.kid]
    assert all("d" not in k for k in new.public_jwks())  # public parts only
    with pytest.raises(UnknownSigningKey):  # the old signer does not know the new key
        old.verify(fresh, now=NOW)
    new_key = TokenSigner.generate_key()
    second = TokenSigner(new_key, previous=[old_key.public_key()])
    third = TokenSigner(TokenSigner.generate_key(), previous=[new_key.public_key()])
    assert third.verify(issue(second, eph), now=NOW).jkt == thumbprint(eph.public_key())
    with pytest.raises(UnknownSigningKey):  # two rotations later the first key is gone
        third.verify(old_token, now=NOW)


def _header(token: str) -> str:
    part = token.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode().replace(" ", "")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000])
def test_malformed_token_refused(signer: TokenSigner, token: str) -> None:
    with pytest.raises(KmsAuthError):
        signer.verify(token, now=NOW)


def test_tampered_token_refused(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    token = issue(signer, eph)
    head, body, sig = token.split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["secrets"] = ["db", "everything"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(KmsAuthError):
        signer.verify(f"{head}.{forged}.{sig}", now=NOW)


def test_proof_accepts_the_bound_key(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    token = issue(signer, eph)
    proof = make_proof(eph, method="GET", path="/v1/secrets/db", token=token, now=NOW)
    verify_proof(proof, method="GET", path="/v1/secrets/db", token=token,
                 jkt=thumbprint(eph.public_key()), now=NOW)  # fmt: skip


def test_proof_by_another_key_refused(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    token = issue(signer, eph)
    other = ec.generate_private_key(ec.SECP256R1())
    proof = make_proof(other, method="GET", path="/v1/secrets/db", token=token, now=NOW)
    with pytest.raises(KmsAuthError, match="another key"):
        verify_proof(proof, method="GET", path="/v1/secrets/db", token=token,
                     jkt=thumbprint(eph.public_key()), now=NOW)  # fmt: skip


@pytest.mark.parametrize(
    ("path", "token_other", "age", "match"),
    [("/v1/secrets/other", False, 0, "expected GET"), ("/v1/secrets/db", True, 0, "another token"),
     ("/v1/secrets/db", False, 600, "within")],
)  # fmt: skip
def test_proof_for_another_request_refused(
    signer: TokenSigner, eph: ec.EllipticCurvePrivateKey, path: str, token_other: bool,
    age: int, match: str,
) -> None:  # fmt: skip
    token = issue(signer, eph)
    proof_token = issue(signer, eph) if token_other else token
    proof = make_proof(eph, method="GET", path=path, token=proof_token,
                       now=NOW - timedelta(seconds=age))  # fmt: skip
    with pytest.raises(KmsAuthError, match=match):
        verify_proof(proof, method="GET", path="/v1/secrets/db", token=token,
                     jkt=thumbprint(eph.public_key()), now=NOW)  # fmt: skip


@pytest.mark.parametrize("proof", ["", "x.y.z", "eyJhbGciOiJub25lIn0.e30."])
def test_malformed_proof_refused(proof: str) -> None:
    with pytest.raises(KmsAuthError):
        verify_proof(proof, method="GET", path="/", token="t", jkt="k", now=NOW)


def test_jwe_round_trip(eph: ec.EllipticCurvePrivateKey) -> None:
    pub = jwe.load_ephemeral_public_key(jwe.public_key_der(eph))
    token = jwe.encrypt_to(pub, b"s3cret", kid="k1", cty="application/octet-stream")
    assert b"s3cret" not in token.encode()
    plaintext, header = jwe.decrypt(token, eph)
    assert plaintext == b"s3cret"
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"


def test_jwe_for_another_key_does_not_open(eph: ec.EllipticCurvePrivateKey) -> None:
    token = jwe.encrypt_to(eph.public_key(), b"s3cret", kid="k", cty="x")
    with pytest.raises(CryptoError):
        jwe.decrypt(token, ec.generate_private_key(ec.SECP256R1()))


def test_jwe_tampered_does_not_open(eph: ec.EllipticCurvePrivateKey) -> None:
    token = jwe.encrypt_to(eph.public_key(), b"s3cret", kid="k", cty="x")
    parts = token.split(".")
    parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
    with pytest.raises(CryptoError):
        jwe.decrypt(".".join(parts), eph)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"\x00" * 600])
def test_bad_ephemeral_key_refused(der: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        jwe.load_ephemeral_public_key(der)


def test_ephemeral_key_on_another_curve_refused() -> None:
    k = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(MalformedEvidence, match="P-256"):
        jwe.load_ephemeral_public_key(jwe.public_key_der(k))


def test_cached_token_still_expires(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> None:
    token = issue(signer, eph, ttl=60)
    assert signer.verify(token, now=NOW + timedelta(seconds=10)).secrets == ("db",)
    assert signer.verify(token, now=NOW + timedelta(seconds=20)).secrets == ("db",)  # cached
    with pytest.raises(KmsAuthError, match="expired"):
        signer.verify(token, now=NOW + timedelta(seconds=120))
    with pytest.raises(KmsAuthError, match="not yet valid"):
        signer.verify(token, now=NOW - timedelta(seconds=120))


@pytest.mark.parametrize("ath", ["\u00e9" * 43, "", "x" * 43])
def test_proof_with_a_foreign_ath_is_refused_not_a_crash(
    signer: TokenSigner, eph: ec.EllipticCurvePrivateKey, ath: str
) -> None:
    """The proof is signed by the bound key but names another (even non-ASCII) token hash."""
    from joserfc import jwt
    from joserfc.jwk import ECKey

    token = issue(signer, eph)
    key = ECKey.import_key(eph)
    payload = {"htm": "GET", "htu": "/v1/secrets/db", "iat": int(NOW.timestamp()), "jti": "j",
               "ath": ath}  # fmt: skip
    header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": key.as_dict(private=False)}
    proof = jwt.encode(header, payload, key, algorithms=["ES256"])
    with pytest.raises(KmsAuthError, match="another token"):
        verify_proof(proof, method="GET", path="/v1/secrets/db", token=token,
                     jkt=thumbprint(eph.public_key()), now=NOW)  # fmt: skip


# -- the remembered-key path: every refusal holds once the token's key is known --------------
def signed_proof(
    signer_key: ec.EllipticCurvePrivateKey,
    header_key: ec.EllipticCurvePrivateKey,
    token: str,
    *,
    typ: str = "dpop+jwt",
    claims: dict[str, object] | None = None,
) -> str:
    """A proof signed by ``signer_key`` whose header names ``header_key``."""
    from joserfc import jwt
    from joserfc.jwk import ECKey

    from sealpod.kms.tokens import token_hash

    payload = claims or {"htm": "GET", "htu": "/v1/secrets/db", "iat": int(NOW.timestamp()),
                         "jti": "j", "ath": token_hash(token)}  # fmt: skip
    header = {"alg": "ES256", "typ": typ,
              "jwk": ECKey.import_key(header_key).as_dict(private=False)}  # fmt: skip
    return jwt.encode(header, payload, ECKey.import_key(signer_key), algorithms=["ES256"])


@pytest.fixture
def warm(signer: TokenSigner, eph: ec.EllipticCurvePrivateKey) -> tuple[ProofVerifier, str, str]:
    """A verifier that has already accepted one proof by ``eph`` (so it remembers the key)."""
    verifier = ProofVerifier()
    token = issue(signer, eph)
    jkt = thumbprint(eph.public_key())
    verifier.verify(signed_proof(eph, eph, token), method="GET", path="/v1/secrets/db",
                    token=token, jkt=jkt, now=NOW)  # fmt: skip
    return verifier, token, jkt


@pytest.mark.parametrize(
    ("signed_by", "named", "match"),
    [("other", "other", "signature"), ("other", "eph", "signature"),
     ("eph", "other", "another key")],
)  # fmt: skip
def test_remembered_key_refuses_proofs_by_or_naming_another_key(
    warm: tuple[ProofVerifier, str, str], eph: ec.EllipticCurvePrivateKey,
    signed_by: str, named: str, match: str,
) -> None:  # fmt: skip
    verifier, token, jkt = warm
    keys = {"eph": eph, "other": ec.generate_private_key(ec.SECP256R1())}
    proof = signed_proof(keys[signed_by], keys[named], token)
    with pytest.raises(KmsAuthError, match=match):
        verifier.verify(proof, method="GET", path="/v1/secrets/db", token=token, jkt=jkt,
                        now=NOW)  # fmt: skip


@pytest.mark.parametrize(
    ("typ", "claims", "match"),
    [("JWT", None, "typ/alg"),
     ("dpop+jwt", {"htm": "GET", "htu": "/v1/secrets/db", "iat": True, "ath": ""}, "iat"),
     ("dpop+jwt", {"htm": "PUT", "htu": "/v1/secrets/db"}, "expected GET")],
)  # fmt: skip
def test_remembered_key_still_checks_every_claim(
    warm: tuple[ProofVerifier, str, str], eph: ec.EllipticCurvePrivateKey,
    typ: str, claims: dict[str, object] | None, match: str,
) -> None:  # fmt: skip
    verifier, token, jkt = warm
    if claims is not None and "ath" in claims:
        from sealpod.kms.tokens import token_hash

        claims = {**claims, "ath": token_hash(token)}
    proof = signed_proof(eph, eph, token, typ=typ, claims=claims)
    with pytest.raises(KmsAuthError, match=match):
        verifier.verify(proof, method="GET", path="/v1/secrets/db", token=token, jkt=jkt,
                        now=NOW)  # fmt: skip


def test_a_refused_proof_teaches_the_verifier_nothing(
    signer: TokenSigner, eph: ec.EllipticCurvePrivateKey
) -> None:
    """A proof whose header names the token's key but whose signature is forged is refused,
    and the key is not remembered on its strength."""
    verifier = ProofVerifier()
    token = issue(signer, eph)
    jkt = thumbprint(eph.public_key())
    forged = signed_proof(ec.generate_private_key(ec.SECP256R1()), eph, token)
    with pytest.raises(KmsAuthError, match="signature"):
        verifier.verify(forged, method="GET", path="/v1/secrets/db", token=token, jkt=jkt,
                        now=NOW)  # fmt: skip
    assert verifier._keys == {}
