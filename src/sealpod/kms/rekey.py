"""Replacing the KMS master key (``sealpod kms rekey``), offline, in one transaction.

What the master key protects, and what a rekey does with each:

* each secret version's data key is unwrapped under the old key and wrapped under the new one
  (the value ciphertexts are not touched: their data keys stay the same);
* the KMS's own keys (token-signing key, CA key) are rewrapped the same way;
* the audit log is verified, hashes and MACs, under the old key, and each record re-MACed under
  the new key (its hash, and so the chain, stays); one that does not verify refuses the whole
  rekey, which never launders a tampered record with a fresh MAC. A ``kms.rekey`` record is
  appended under the new key;
* the key-check value and the seal mode (key file or Shamir shares) are replaced;
* recovery keys (:mod:`sealpod.kms.recovery`) are dropped: whoever holds the old key and an old
  copy of the database could open them, and through their escrow the new key. On request
  (``keep_recovery``, for a routine rotation) the new key is escrowed under the same recovery
  key instead, so the custodians' shares keep working.

All of it commits together or not at all. A server still running on the old key notices at
its next audit append (the key-check value is compared there, under the audit head lock),
seals itself and answers 503 ``kms.key_changed``; nothing is written under the old key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sealpod.errors import ConfigError, CryptoError, KmsError, KmsUnavailable
from sealpod.kms.audit import GENESIS_HASH, verify_chain
from sealpod.kms.keys import MasterKey, rewrap_data_key
from sealpod.kms.recovery import drop_recovery, reescrow
from sealpod.kms.shamir import Share, split
from sealpod.kms.state import iso, to_ms, utcnow
from sealpod.kms.store import Store, Tx

Progress = Callable[[str, int, int], None]  # (phase, done, total)
_PAGE = 1000


class AuditChainBroken(KmsError):
    """The audit log does not verify under the current key: a rekey would hide that."""

    code = "kms.audit_broken"


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyResult:
    old_key_id: str
    new_key_id: str
    mode: str  # "key" | "shamir"
    shares: tuple[Share, ...]
    threshold: int
    versions: int
    internal_keys: int
    audit_records: int
    recovery: str  # "kept" | "dropped" | "none"
    at: str

    def __repr__(self) -> str:  # shares are key material
        return (
            f"RekeyResult(old={self.old_key_id}, new={self.new_key_id}, mode={self.mode}, "
            f"versions={self.versions}, audit_records={self.audit_records})"
        )

    def summary(self) -> dict[str, object]:
        """What may be printed or logged (no share, no key)."""
        return {
            "old_key_id": self.old_key_id,
            "new_key_id": self.new_key_id,
            "mode": self.mode,
            "threshold": self.threshold,
            "share_count": len(self.shares),
            "versions_rewrapped": self.versions,
            "internal_keys_rewrapped": self.internal_keys,
            "audit_records_remaced": self.audit_records,
            "recovery_keys": self.recovery,
            "at": self.at,
        }


def rekey(
    store: Store,
    old: MasterKey,
    new: MasterKey,
    *,
    shares: int = 0,
    threshold: int = 0,
    keep_recovery: bool = False,
    before_commit: Callable[[tuple[Share, ...]], None] | None = None,
    actor: str = "cli",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> RekeyResult:
    """Put the whole KMS under ``new`` (split into ``shares`` if given) in one transaction.

    ``before_commit`` gets the new shares after every write and before the commit: the caller
    stores them durably there (an exception rolls everything back), so no crash can leave the
    database under a key whose shares exist nowhere. Recovery keys are dropped (a leaked old
    key plus an old copy of the database would open them, and through them the new key) unless
    ``keep_recovery``, which re-escrows the new key under the same recovery key.

    Raises:
        KmsUnavailable: the database is not initialised.
        ConfigError: ``old`` is not this KMS's key, ``new`` is the same key, or bad Shamir
            parameters.
        AuditChainBroken: the audit log does not verify under ``old`` (nothing is changed).
        CryptoError: a stored data key or internal key does not open under ``old`` (tampered;
            nothing is changed). The message names the secret version, never a value.
    """
    if new.matches(old.check_value()):
        raise ConfigError("the new master key is the current one")
    parts = tuple(split(new.raw, shares=shares, threshold=threshold)) if shares else ()
    now = now or utcnow()
    report = progress or (lambda _phase, _done, _total: None)
    with store.transaction() as tx:
        # Lock the head first: appenders on other replicas (and a second rekey) wait for this
        # one, then see the new key-check value and refuse to write under their old key.
        head = tx.lock_audit_head()
        stored = tx.get_meta("key_check")
        if stored is None:
            raise KmsUnavailable("the KMS database is not initialised; run `sealpod kms init`")
        if not old.matches(bytes.fromhex(stored)):
            raise ConfigError("the current key (or the combined shares) is not this KMS's key")
        records = _remac_audit(tx, old, new, head, report)
        versions = _rewrap_versions(tx, old, new, report)
        internal = _rewrap_internal(tx, old, new)
        recovery = reescrow(tx, new) if keep_recovery else drop_recovery(tx)
        tx.set_meta("key_check", new.check_value().hex())
        tx.set_meta("mode", "shamir" if parts else "key")
        tx.set_meta("threshold", str(threshold if parts else 0))
        tx.set_meta("shares", str(shares if parts else 0))
        tx.append_audit(
            ts_ms=to_ms(now),
            kind="kms.rekey",
            actor=actor,
            subject=new.key_id,
            outcome="ok",
            details={
                "old_key_id": old.key_id,
                "mode": "shamir" if parts else "key",
                "threshold": threshold if parts else 0,
                "versions": versions,
                "internal_keys": internal,
                "audit_records": records,
                "recovery": recovery,
            },
            mac=new.audit_mac,
        )
        if before_commit is not None:
            before_commit(parts)
    return RekeyResult(
        old_key_id=old.key_id,
        new_key_id=new.key_id,
        mode="shamir" if parts else "key",
        shares=parts,
        threshold=threshold if parts else 0,
        versions=versions,
        internal_keys=internal,
        audit_records=records,
        recovery=recovery,
        at=iso(to_ms(now)),
    )


def _remac_audit(
    tx: Tx, old: MasterKey, new: MasterKey, head: tuple[int, bytes], report: Progress
) -> int:
    """Verify the chain page by page under ``old`` and re-MAC each page under ``new`` (memory
    stays one page; a problem found on a later page rolls the whole transaction back)."""
    count, position = 0, (0, GENESIS_HASH)
    while True:
        try:
            page = tx.audit_records(after=position[0], limit=_PAGE)
        except ValueError as exc:  # a record whose details are not JSON: edited in place
            raise AuditChainBroken(
                f"an audit record after seq {position[0]} is damaged (its details are not "
                "JSON); a rekey would re-MAC it, so it is refused: investigate with "
                "`sealpod kms audit --verify`"
            ) from exc
        last_page = len(page) < _PAGE
        chain = verify_chain(
            page,
            mac=old.audit_mac,
            start=position,
            head=head if last_page else None,
            head_mac=tx.audit_head_row()[2] if last_page else None,
        )
        if not chain.ok:
            first = chain.problems[0]
            raise AuditChainBroken(
                f"the audit log does not verify (first problem: {first}); a rekey would re-MAC "
                "it, so it is refused: investigate with `sealpod kms audit --verify`"
            )
        tx.set_audit_macs([(r.seq, new.audit_mac(r.hash)) for r in page])
        count += len(page)
        report("audit", count, head[0])
        if last_page:
            return count
        position = (chain.last_seq, chain.last_hash)


def _rewrap_versions(tx: Tx, old: MasterKey, new: MasterKey, report: Progress) -> int:
    rows = tx.wrapped_keys()
    rewrapped: list[tuple[str, int, bytes]] = []
    for row in rows:
        name, version = str(row.name), int(row.version)
        try:
            wrapped = rewrap_data_key(old, new, name, version, bytes(row.wrapped_key))
        except CryptoError as exc:
            raise CryptoError(
                f"the data key of secret {name!r} version {version} does not open under the "
                "current key (tampered?); nothing was changed"
            ) from exc
        rewrapped.append((name, version, wrapped))
        if len(rewrapped) % _PAGE == 0:
            report("secrets", len(rewrapped), len(rows))
    tx.set_wrapped_keys(rewrapped)
    report("secrets", len(rows), len(rows))
    return len(rows)


def _rewrap_internal(tx: Tx, old: MasterKey, new: MasterKey) -> int:
    names = tx.internal_key_names()
    for name in names:
        try:
            value = old.unwrap_internal(name, bytes(tx.get_internal_key(name).wrapped))
        except CryptoError as exc:
            raise CryptoError(
                f"the KMS's internal key {name!r} does not open under the current key "
                "(tampered?); nothing was changed"
            ) from exc
        tx.rewrap_internal_key(name, new.wrap_internal(name, value))
    return len(names)
