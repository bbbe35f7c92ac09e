"""The KMS store on SQLite and PostgreSQL: migrations, CRUD, atomic nonces, the audit chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sealpod.errors import ConfigError, KmsConflict, KmsNotFound, KmsUnavailable
from sealpod.kms.audit import verify_chain
from sealpod.kms.keys import MasterKey
from sealpod.kms.store import Store
from sealpod.kms.store.schema import Base

pytest_plugins = ["kms_harness"]

KEY = MasterKey(bytes(range(32)))


def test_migrations_match_the_models(kms_store: Store) -> None:
    assert kms_store.schema_revision() == Store.head_revision()
    with kms_store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrate_is_idempotent(kms_store_url: str) -> None:
    a = Store.open(kms_store_url)
    b = Store.open(kms_store_url)  # a second replica starting on the same database
    assert b.schema_revision() == Store.head_revision()
    a.close()
    b.close()


def test_sqlite_file_is_private_and_wal(tmp_path: Path) -> None:
    s = Store.open(f"sqlite:///{tmp_path / 'd' / 'kms.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "d" / "kms.db").stat().st_mode & 0o077 == 0
    s.close()


@pytest.mark.parametrize("url", ["mysql://x/y", "not a url::"])
def test_unsupported_url(url: str) -> None:
    with pytest.raises(ConfigError):
        Store.open(url)


def test_sqlite_file_of_random_bytes_is_unavailable(tmp_path: Path) -> None:
    """A database file that is not SQLite is a typed refusal (sqlite3.DatabaseError is not an
    OperationalError), not an internal error."""
    db = tmp_path / "kms.db"
    db.write_bytes(bytes(range(256)) * 32)
    with pytest.raises(KmsUnavailable, match="not a database"):
        Store.open(f"sqlite:///{db}")


def test_sqlite_path_under_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot create the SQLite database"):
        Store.open(f"sqlite:///{tmp_path / 'f' / 'kms.db'}")


def test_sqlite_synchronous_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    """It is spliced into a PRAGMA, so only the four documented words may pass."""
    with pytest.raises(ConfigError, match="synchronous"):
        Store.open(
            f"sqlite:///{tmp_path / 'kms.db'}",
            sqlite_synchronous="OFF; DROP TABLE kms_audit",  # type: ignore[arg-type]
        )


def test_unreachable_postgres_is_unavailable() -> None:
    with pytest.raises((KmsUnavailable, ConfigError)):
        Store.open("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")


def test_secret_versions(kms_store: Store) -> None:
    with kms_store.transaction() as tx:
        row = tx.create_secret(name="db", kind="value", params={}, now_ms=1)
        v = tx.add_version(row, lambda ver: KEY.encrypt_version("db", ver, b"one"), 1)
        assert v == 1
    with kms_store.transaction() as tx:
        row = tx.get_secret("db")
        assert tx.add_version(row, lambda ver: KEY.encrypt_version("db", ver, b"two"), 2) == 2
    with kms_store.read() as tx:
        assert tx.get_secret("db").current_version == 2
        assert [r.version for r in tx.list_versions("db")] == [1, 2]
        vrow = tx.get_version("db", 1)
        from sealpod.kms.keys import SealedValue

        assert (
            KEY.decrypt_version("db", 1, SealedValue(vrow.wrapped_key, vrow.ciphertext)) == b"one"
        )
    with pytest.raises(KmsConflict), kms_store.transaction() as tx:
        tx.create_secret(name="db", kind="value", params={}, now_ms=3)
    with kms_store.transaction() as tx:
        tx.delete_secret("db")
    with pytest.raises(KmsNotFound), kms_store.read() as tx:
        tx.get_secret("db")
    with pytest.raises(KmsNotFound), kms_store.read() as tx:
        tx.get_version("db", 1)


def test_failed_transaction_rolls_back(kms_store: Store) -> None:
    with pytest.raises(RuntimeError), kms_store.transaction() as tx:
        tx.create_secret(name="x", kind="value", params={}, now_ms=1)
        raise RuntimeError("boom")
    with kms_store.read() as tx:
        assert tx.find_secret("x") is None


def test_users_and_policies(kms_store: Store) -> None:
    with kms_store.transaction() as tx:
        tx.add_user(id="u1", name="alice", role="admin", token_hash=b"h" * 32, now_ms=1)
        assert tx.put_policy("p", '{"a": 1}', 1) is True
    with pytest.raises(KmsConflict), kms_store.transaction() as tx:
        tx.add_user(id="u2", name="alice", role="auditor", token_hash=b"h" * 32, now_ms=1)
    with kms_store.transaction() as tx:
        assert tx.put_policy("p", '{"a": 2}', 2) is False
        assert tx.count_admins() == 1
    with kms_store.read() as tx:
        assert tx.get_policy("p").document == '{"a": 2}'
        assert [u.name for u in tx.list_users()] == ["alice"]
        user = tx.get_user("u1")
        assert user is not None and user.role == "admin"
    with kms_store.transaction() as tx:
        tx.remove_user("alice")
        tx.delete_policy("p")
    with pytest.raises(KmsNotFound), kms_store.transaction() as tx:
        tx.remove_user("alice")


def test_nonce_outcomes(kms_store: Store) -> None:
    with kms_store.transaction() as tx:
        tx.add_nonce(nonce=b"a" * 32, tee="sim", client="c", now_ms=0, expires_ms=100)
        tx.add_nonce(nonce=b"b" * 32, tee="sim", client="c", now_ms=0, expires_ms=100)
    with kms_store.transaction() as tx:
        assert tx.consume_nonce(b"a" * 32, 50).outcome == "ok"
    with kms_store.transaction() as tx:
        assert tx.consume_nonce(b"a" * 32, 60).outcome == "replayed"
        assert tx.consume_nonce(b"b" * 32, 100).outcome == "expired"
        assert tx.consume_nonce(b"c" * 32, 10).outcome == "unknown"
    with kms_store.transaction() as tx:
        assert tx.purge_nonces(before_ms=101) == 2


def test_concurrent_consumers_exactly_one_wins(kms_store: Store) -> None:
    nonces = [bytes([i]) * 32 for i in range(20)]
    with kms_store.transaction() as tx:
        for n in nonces:
            tx.add_nonce(nonce=n, tee="sim", client="c", now_ms=0, expires_ms=10**12)
    wins: list[bytes] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for n in nonces:
            with kms_store.transaction() as tx:
                if tx.consume_nonce(n, 1).outcome == "ok":
                    with lock:
                        wins.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(wins) == sorted(nonces)  # every nonce won exactly once


def test_audit_chain_under_concurrent_appenders(kms_store: Store) -> None:
    def worker(k: int) -> None:
        for i in range(10):
            with kms_store.transaction() as tx:
                tx.append_audit(
                    ts_ms=i, kind="test", actor=f"w{k}", subject=str(i), outcome="ok",
                    details={"i": i}, mac=KEY.audit_mac,
                )  # fmt: skip

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with kms_store.read() as tx:
        records = tx.audit_records(limit=1000)
        head_seq, head_hash, head_mac = tx.audit_head_row()
    assert len(records) == 30
    report = verify_chain(records, mac=KEY.audit_mac, head=(head_seq, head_hash), head_mac=head_mac)
    assert report.ok, report.problems
    assert report.last_seq == 30


def test_sqlite_fast_path_reads_what_the_core_path_reads(tmp_path: Path) -> None:
    """On SQLite the hot statements bypass SQLAlchemy's execute(); both paths must agree."""
    store = Store.open(f"sqlite:///{tmp_path / 'kms.db'}")
    try:
        with store.transaction() as tx:
            row = tx.create_secret(name="db", kind="value", params={"k": 1}, now_ms=1)
            tx.add_version(row, lambda ver: KEY.encrypt_version("db", ver, b"v"), 1)
            tx.put_policy("p", '{"a": 1}', 1)
            tx.add_nonce(nonce=b"n" * 32, tee="sgx", client="c", now_ms=0, expires_ms=100)
        with store.transaction() as tx:
            assert tx._raw is not None

            def both() -> tuple[object, ...]:
                many = {k: tuple(v) for k, v in tx.current_values(["db", "absent"]).items()}
                return tuple(tx.current_value("db")), [tuple(r) for r in tx.list_policies()], many

            fast = both()
            tx._raw = None
            core = both()
            assert fast == core
            assert tx.current_value("db").version == 1
        with store.transaction() as tx:
            assert tx.consume_nonce(b"n" * 32, 50).outcome == "ok"
            assert tx.consume_nonce(b"n" * 32, 51).outcome == "replayed"
        with pytest.raises(KmsConflict), store.transaction() as tx:  # fast-path driver error
            tx.add_nonce(nonce=b"n" * 32, tee="sgx", client="c", now_ms=0, expires_ms=100)
        with store.transaction() as tx:
            for i in range(3):
                tx.append_audit(ts_ms=i, kind="k", actor="a", subject="s", outcome="ok",
                                details={"i": i}, mac=KEY.audit_mac)  # fmt: skip
        with store.read() as tx:
            seq, digest, head_mac = tx.audit_head_row()
            report = verify_chain(
                tx.audit_records(), head=(seq, digest), head_mac=head_mac, mac=KEY.audit_mac
            )
        assert report.ok and report.records == 3
    finally:
        store.close()


def test_sqlite_writer_connection_is_kept_and_replaced_after_a_database_error(
    tmp_path: Path,
) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'kms.db'}")
    try:
        with store.transaction() as tx:
            first = tx.c
        with store.transaction() as tx:
            assert tx.c is first  # one connection per thread, kept between transactions
        with pytest.raises(KmsUnavailable), store.transaction() as tx:
            tx.c.exec_driver_sql("SELEC 1")
        with store.transaction() as tx:
            assert tx.c is not first and first.closed  # replaced, the broken one closed
            tx.set_meta("k", "v")
            second = tx.c
        with store.read() as tx:
            assert tx.get_meta("k") == "v"
    finally:
        store.close()
    assert store._writers == [] and second.closed  # close() closes the kept connections
