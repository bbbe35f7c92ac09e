"""Recovery keys (``sealpod.kms.recovery``): threshold shares give the master key back, survive
a rekey, and stop working once replaced; too few, foreign or tampered inputs are refused."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import text

from sealpod.errors import ConfigError, CryptoError, KmsNotFound
from sealpod.kms.keys import MasterKey
from sealpod.kms.recovery import create_recovery_shares, recover_master_key, recovery_info
from sealpod.kms.rekey import rekey
from sealpod.kms.shamir import split
from sealpod.kms.state import initialize
from sealpod.kms.store import Store

pytest_plugins = ["kms_harness"]


@pytest.fixture
def store(kms_store: Store) -> Store:
    """SQLite, and PostgreSQL when it is up."""
    return kms_store


@pytest.fixture
def master(store: Store) -> MasterKey:
    key = MasterKey.generate()
    initialize(store, key)
    return key


def audit_kinds(store: Store, key: MasterKey) -> list[str]:
    with store.read() as tx:
        records = tx.audit_records()
        assert tx.verify_audit(key.audit_mac).ok
    return [r.kind for r in records]


def test_any_threshold_of_the_shares_recovers_the_key(store: Store, master: MasterKey) -> None:
    made = create_recovery_shares(store, master, shares=4, threshold=3)
    assert len(made.shares) == 4 and not made.replaced
    assert "sealpod-share" not in repr(made)
    for subset in itertools.combinations(made.shares, 3):
        assert recover_master_key(store, list(subset)).raw == master.raw
    info = recovery_info(store)
    assert info is not None and (info.shares, info.threshold) == (4, 3)
    kinds = audit_kinds(store, master)
    assert kinds.count("kms.recovery_keys") == 1 and kinds.count("kms.recover") == 4


def test_recovery_shares_survive_a_rekey_that_keeps_them(store: Store, master: MasterKey) -> None:
    made = create_recovery_shares(store, master, shares=3, threshold=2)
    new = MasterKey.generate()
    assert rekey(store, master, new, keep_recovery=True).recovery == "kept"
    recovered = recover_master_key(store, list(made.shares[:2]))
    assert recovered.raw == new.raw
    assert audit_kinds(store, new)[-1] == "kms.recover"


def test_a_rekey_drops_recovery_keys_by_default(store: Store, master: MasterKey) -> None:
    # Whoever held the old key and an old copy of the database could unwrap the recovery key
    # and, through a kept escrow, open the new master key: a default rekey leaves them nothing.
    made = create_recovery_shares(store, master, shares=3, threshold=2)
    with store.read() as tx:
        old_copy_wrapped = bytes(tx.get_internal_key("recovery").wrapped)
    new = MasterKey.generate()
    assert rekey(store, master, new).recovery == "dropped"
    assert recovery_info(store) is None
    with pytest.raises(KmsNotFound):
        recover_master_key(store, list(made.shares[:2]))
    stolen_recovery = master.unwrap_internal("recovery", old_copy_wrapped)  # the attacker's view
    with store.read() as tx:
        assert tx.get_meta("recovery_escrow") is None  # nothing left to open with it
    assert len(stolen_recovery) == 32
    assert rekey(store, new, MasterKey.generate()).recovery == "none"


def test_damaged_recovery_parameters_are_a_typed_error(store: Store, master: MasterKey) -> None:
    create_recovery_shares(store, master, shares=2, threshold=2)
    with store.transaction() as tx:
        tx.c.execute(text("UPDATE kms_keys SET public = '{}' WHERE name = 'recovery'"))
    with pytest.raises(CryptoError, match="damaged"):
        recovery_info(store)


def test_replaced_shares_open_nothing(store: Store, master: MasterKey) -> None:
    first = create_recovery_shares(store, master, shares=3, threshold=2)
    second = create_recovery_shares(store, master, shares=3, threshold=2)
    assert second.replaced
    with pytest.raises(ConfigError, match="do not open this KMS's escrow"):
        recover_master_key(store, list(first.shares[:2]))
    assert recover_master_key(store, list(second.shares[1:])).raw == master.raw


def test_too_few_or_foreign_shares_are_refused(store: Store, master: MasterKey) -> None:
    made = create_recovery_shares(store, master, shares=5, threshold=3)
    with pytest.raises(ConfigError, match="do not open"):
        recover_master_key(store, list(made.shares[:2]))
    foreign = split(MasterKey.generate().raw, shares=3, threshold=3)
    with pytest.raises(ConfigError, match="do not open"):
        recover_master_key(store, foreign)
    # An unseal-style share set of the master key itself is not a recovery share set either.
    own = split(master.raw, shares=3, threshold=3)
    with pytest.raises(ConfigError, match="do not open"):
        recover_master_key(store, own)
    assert audit_kinds(store, master).count("kms.recover") == 0


def test_a_tampered_escrow_is_refused(store: Store, master: MasterKey) -> None:
    made = create_recovery_shares(store, master, shares=2, threshold=2)
    with store.transaction() as tx:
        blob = bytes.fromhex(str(tx.get_meta("recovery_escrow")))
        tx.set_meta("recovery_escrow", (blob[:-1] + bytes([blob[-1] ^ 1])).hex())
    with pytest.raises(ConfigError, match="do not open"):
        recover_master_key(store, list(made.shares))
    with store.transaction() as tx:
        tx.set_meta("recovery_escrow", "not hex")
    with pytest.raises(ConfigError, match="do not open"):
        recover_master_key(store, list(made.shares))


def test_no_recovery_key(store: Store, master: MasterKey) -> None:
    assert recovery_info(store) is None
    with pytest.raises(KmsNotFound, match="no recovery key"):
        recover_master_key(store, split(bytes(32), shares=2, threshold=2))


def test_creating_needs_this_kms_key(store: Store, master: MasterKey) -> None:
    with pytest.raises(ConfigError, match="not this KMS's master key"):
        create_recovery_shares(store, MasterKey.generate(), shares=3, threshold=2)
    with pytest.raises(ConfigError, match="threshold"):
        create_recovery_shares(store, master, shares=2, threshold=3)
    assert recovery_info(store) is None


def test_a_rekey_still_refuses_a_tampered_recovery_key(store: Store, master: MasterKey) -> None:
    create_recovery_shares(store, master, shares=2, threshold=2)
    with store.transaction() as tx:
        tx.c.execute(text("UPDATE kms_keys SET wrapped = :w WHERE name = 'recovery'"), {"w": b"x"})
    with pytest.raises(CryptoError, match="'recovery' does not open"):
        rekey(store, master, MasterKey.generate())
