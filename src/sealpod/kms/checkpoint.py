"""Signed audit checkpoints: the head of the audit log, signed by the KMS, to keep outside it.

The hash chain and the MACs show that nobody without the master key edited, removed or
reordered records, or cut the tail; they cannot show that the whole database was rolled back to
an older copy of itself, which is consistent in itself. A head kept elsewhere can: like a
transparency log's signed tree head, a checkpoint says "on this KMS the log had ``seq`` records
ending in ``hash``", signed with the token-signing key (ES256, published at ``/v1/jwks``). An
operator saves it (a ticket, another system, a printout) and later runs
``sealpod kms audit --verify --expect-head SEQ:HASH``: a log that no longer contains that
record with that hash was rewritten or rolled back. ``sealpod kms audit --verify-checkpoint F
--jwks J`` checks a checkpoint offline against a saved copy of the KMS's public keys.

A checkpoint is a JWT with ``typ`` :data:`CHECKPOINT_TYP` and audience :data:`CHECKPOINT_AUD`;
an attestation token needs another audience and a key binding, so neither passes for the other.
The server signs only a head whose chain it has just verified, MACs included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from sealpod.errors import CheckpointInvalid
from sealpod.kms.tokens import ISSUER, MAX_TOKEN_SIZE, TOKEN_ALG, TokenSigner

CHECKPOINT_TYP = "sealpod-audit-checkpoint+jwt"
CHECKPOINT_AUD = "sealpod-kms/audit-checkpoint"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A verified (or just signed) head of the audit log."""

    seq: int
    hash: bytes
    records: int
    issued_at: int  # Unix seconds
    kid: str  # the token-signing key that signed it

    @property
    def head(self) -> str:
        """``SEQ:HASH``, what ``kms audit --verify --expect-head`` takes."""
        return f"{self.seq}:{self.hash.hex()}"

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "hash": self.hash.hex(),
            "head": self.head,
            "records": self.records,
            "issued_at": self.issued_at,
            "kid": self.kid,
        }


def sign_checkpoint(
    signer: TokenSigner, *, seq: int, digest: bytes, records: int, now: datetime
) -> str:
    """The compact JWS of a checkpoint of the head (``seq``, ``digest``)."""
    payload = {
        "iss": ISSUER,
        "aud": CHECKPOINT_AUD,
        "iat": int(now.timestamp()),
        "seq": seq,
        "hash": digest.hex(),
        "records": records,
    }
    return signer.sign_statement(payload, typ=CHECKPOINT_TYP)


def verify_checkpoint(text: str, jwks: Sequence[Mapping[str, object]]) -> Checkpoint:
    """Check a checkpoint's signature against ``jwks`` (public keys kept from ``/v1/jwks``).

    Keys are matched by their RFC 7638 thumbprint, recomputed here (a ``kid`` member of the
    given set is not trusted).

    Raises:
        CheckpointInvalid: malformed, signed by none of ``jwks``, or not a checkpoint.
    """
    text = text.strip()
    if len(text) > MAX_TOKEN_SIZE:
        raise CheckpointInvalid(f"checkpoint is {len(text)} bytes, expected at most 16384")
    keys: dict[str, ECKey] = {}
    for entry in jwks:
        try:
            public = {k: v for k, v in entry.items() if k in ("kty", "crv", "x", "y")}
            key = ECKey.import_key(public)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError) as exc:
            raise CheckpointInvalid("a key of the given JWKS is not a P-256 public key") from exc
        keys[key.thumbprint()] = key
    try:
        header = jws.extract_compact(text.encode()).headers()
    except (JoseError, ValueError) as exc:
        raise CheckpointInvalid("checkpoint is not a compact JWS") from exc
    if header.get("typ") != CHECKPOINT_TYP or header.get("alg") != TOKEN_ALG:
        raise CheckpointInvalid(
            f"checkpoint typ/alg is {header.get('typ')}/{header.get('alg')}, "
            f"expected {CHECKPOINT_TYP}/{TOKEN_ALG}"
        )
    kid = header.get("kid")
    signing = keys.get(kid) if isinstance(kid, str) else None
    if signing is None or not isinstance(kid, str):
        raise CheckpointInvalid("checkpoint is signed by a key that is not in the given JWKS")
    try:
        claims = jwt.decode(text, signing, algorithms=[TOKEN_ALG]).claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": CHECKPOINT_AUD},
        ).validate(claims)
    except (JoseError, ValueError) as exc:
        raise CheckpointInvalid("checkpoint signature or claims do not verify") from exc
    seq, digest, records, iat = (claims.get(k) for k in ("seq", "hash", "records", "iat"))
    ints = (seq, records, iat)
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in ints):
        raise CheckpointInvalid("checkpoint seq/records/iat are not non-negative integers")
    try:
        raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise CheckpointInvalid("checkpoint hash is not 64 hex digits")
    return Checkpoint(seq=int(str(seq)), hash=raw, records=int(str(records)),
                      issued_at=int(str(iat)), kid=kid)  # fmt: skip
