"""Recovery keys: Shamir shares that give the master key back when its file, its variable or
enough unseal shares are lost (docs/protocol.md, Operations, "recovery keys (threshold) for
disaster recovery").

A random 32-byte *recovery key* is split into shares for custodians and never kept whole. The
database holds two sealed copies that point at each other:

* the recovery key wrapped under the master key (internal key ``recovery``, rewrapped by a
  rekey like the KMS's other keys), so a rekey can re-escrow without the shares;
* the master key sealed under a key derived from the recovery key (meta ``recovery_escrow``),
  which ``threshold`` recovery shares open.

A rekey drops the recovery key unless asked to keep it (then it re-escrows the new master key
under the same recovery key); creating new shares replaces the old (they no longer open the
new escrow). Recovery shares hold the power of the
master key itself: they are for disaster, kept offline by other custodians than unseal shares.
Recovering writes no secret anywhere but where the caller puts the key; it appends a
``kms.recover`` audit record.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sealpod.errors import ConfigError, CryptoError, KmsNotFound, KmsUnavailable
from sealpod.kms.keys import MasterKey, escrow_master, open_escrow
from sealpod.kms.shamir import Share, combine, split
from sealpod.kms.state import iso, to_ms, utcnow
from sealpod.kms.store import Store, Tx

RECOVERY_KEY = "recovery"
ESCROW_META = "recovery_escrow"
RECOVERY_SIZE = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryShares:
    shares: tuple[Share, ...]
    threshold: int
    replaced: bool
    at: str

    def __repr__(self) -> str:  # shares are key material
        return f"RecoveryShares(count={len(self.shares)}, threshold={self.threshold})"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryInfo:
    shares: int
    threshold: int
    created_at: str


def create_recovery_shares(
    store: Store,
    master: MasterKey,
    *,
    shares: int,
    threshold: int,
    before_commit: Callable[[tuple[Share, ...]], None] | None = None,
    actor: str = "cli",
    now: datetime | None = None,
) -> RecoveryShares:
    """Make (or replace) the recovery key of the KMS under ``master``; return its shares.
    ``before_commit`` gets them before the commit, to store them durably (an exception there
    rolls back, and the previous recovery shares keep working).

    Raises:
        KmsUnavailable: the database is not initialised.
        ConfigError: ``master`` is not this KMS's key, or bad Shamir parameters.
    """
    recovery = secrets.token_bytes(RECOVERY_SIZE)
    parts = tuple(split(recovery, shares=shares, threshold=threshold))
    now = now or utcnow()
    ms = to_ms(now)
    params = json.dumps({"shares": shares, "threshold": threshold, "created_ms": ms})
    with store.transaction() as tx:
        _check_master(tx, master)
        replaced = tx.get_meta(ESCROW_META) is not None
        tx.put_internal_key(RECOVERY_KEY, master.wrap_internal(RECOVERY_KEY, recovery), params, ms)
        tx.set_meta(ESCROW_META, escrow_master(recovery, master).hex())
        tx.append_audit(
            ts_ms=ms,
            kind="kms.recovery_keys",
            actor=actor,
            subject=master.key_id,
            outcome="ok",
            details={"shares": shares, "threshold": threshold, "replaced": replaced},
            mac=master.audit_mac,
            key_check=master.check_value().hex(),
        )
        if before_commit is not None:
            before_commit(parts)
    return RecoveryShares(shares=parts, threshold=threshold, replaced=replaced, at=iso(ms))


def recovery_info(store: Store) -> RecoveryInfo | None:
    """How the recovery key was split (None: the KMS has none)."""
    with store.read() as tx:
        if tx.get_meta(ESCROW_META) is None:
            return None
        public = tx.get_internal_key(RECOVERY_KEY).public
    try:
        params = json.loads(public)
        return RecoveryInfo(
            shares=int(params["shares"]),
            threshold=int(params["threshold"]),
            created_at=iso(int(params["created_ms"])),
        )
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise CryptoError("the stored recovery key parameters are damaged") from exc


def recover_master_key(
    store: Store, parts: list[Share], *, actor: str = "cli", now: datetime | None = None
) -> MasterKey:
    """Combine recovery shares, open the escrow and return the master key (checked against
    the stored key-check value). Appends a ``kms.recover`` audit record.

    Raises:
        KmsUnavailable: the database is not initialised.
        KmsNotFound: the KMS has no recovery key.
        ConfigError: the shares do not combine, or are not this KMS's recovery shares (too
            few, another KMS's, or from before a replacement: they all fail alike).
    """
    recovery = combine(parts)
    with store.transaction() as tx:
        if tx.get_meta("key_check") is None:
            raise KmsUnavailable("the KMS database is not initialised")
        blob = tx.get_meta(ESCROW_META)
        if blob is None:
            raise KmsNotFound(
                "this KMS has no recovery key (create one with `sealpod kms recovery-keys`)"
            )
        try:
            master = open_escrow(recovery, bytes.fromhex(blob))
        except (CryptoError, ValueError) as exc:
            raise ConfigError(
                "the recovery shares do not open this KMS's escrow (too few, another KMS's, "
                "or replaced since)"
            ) from exc
        _check_master(tx, master)
        tx.append_audit(
            ts_ms=to_ms(now or utcnow()),
            kind="kms.recover",
            actor=actor,
            subject=master.key_id,
            outcome="ok",
            details={"shares_used": len(parts)},
            mac=master.audit_mac,
            key_check=master.check_value().hex(),
        )
    return master


def shares_in_force(store: Store, master: MasterKey, parts: Sequence[Share]) -> bool | None:
    """After a failed :func:`create_recovery_shares`: whether the stored escrow is the one these
    shares open (its commit happened, the answer was lost). None: the database did not answer.
    """
    try:
        with store.read() as tx:
            blob = tx.get_meta(ESCROW_META)
    except Exception:  # no answer: unknown, so keep the shares
        return None
    if blob is None:
        return False
    try:
        return open_escrow(combine(list(parts)), bytes.fromhex(blob)).raw == master.raw
    except (CryptoError, ConfigError, ValueError):
        return False


def reescrow(tx: Tx, new: MasterKey) -> str:
    """In a rekey's transaction (after the internal keys were rewrapped under ``new``): seal
    ``new`` under the same recovery key, so the custodians' shares keep working. This does not
    shut out whoever held the old key and an old copy of the database. Returns "kept" or
    "none"."""
    if tx.get_meta(ESCROW_META) is None:
        return "none"
    recovery = new.unwrap_internal(RECOVERY_KEY, bytes(tx.get_internal_key(RECOVERY_KEY).wrapped))
    tx.set_meta(ESCROW_META, escrow_master(recovery, new).hex())
    return "kept"


def drop_recovery(tx: Tx) -> str:
    """In a rekey's transaction: remove the recovery key and its escrow (the shares open
    nothing from now on). Returns "dropped" or "none"."""
    if tx.get_meta(ESCROW_META) is None:
        return "none"
    tx.delete_meta(ESCROW_META)
    tx.delete_internal_key(RECOVERY_KEY)
    return "dropped"


def _check_master(tx: Tx, master: MasterKey) -> None:
    stored = tx.get_meta("key_check")
    if stored is None:
        raise KmsUnavailable("the KMS database is not initialised; run `sealpod kms init`")
    if not master.matches(bytes.fromhex(stored)):
        raise ConfigError("the key (or the combined shares) is not this KMS's master key")
