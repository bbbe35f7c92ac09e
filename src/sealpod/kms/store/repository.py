"""The KMS store: SQLite (WAL, embedded) or PostgreSQL, behind one small repository.

Every write happens inside :meth:`Store.transaction`, which yields a :class:`Tx`; an admin
change and its audit record commit together or not at all, so after a crash every acknowledged
write is present with its audit record. On SQLite a write transaction starts with
``BEGIN IMMEDIATE`` (one writer at a time, no upgrade deadlocks); on PostgreSQL the audit chain
head row is locked ``FOR UPDATE``. Nonces are consumed by one conditional UPDATE whose row count
decides, so two replicas racing on one nonce cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Row,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, SQLAlchemyError

from sealpod.errors import ConfigError, KmsConflict, KmsKeyChanged, KmsNotFound, KmsUnavailable
from sealpod.kms.audit import (
    AuditEntry,
    AuditRecord,
    ChainReport,
    chain_record,
    head_mac_input,
    verify_chain,
)
from sealpod.kms.keys import SealedValue
from sealpod.kms.store.schema import (
    AuditHeadRow,
    AuditRow,
    InternalKeyRow,
    MetaRow,
    NonceRow,
    PolicyRow,
    SecretRow,
    SecretVersionRow,
    UserRow,
)

SqliteSync = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
NonceOutcome = Literal["ok", "unknown", "replayed", "expired"]
_PG_MIGRATION_LOCK = 0x5EA1_0D_4B  # advisory lock id: one replica migrates at a time


@dataclass(frozen=True, slots=True, kw_only=True)
class NonceResult:
    outcome: NonceOutcome
    tee: str | None = None


def default_sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'kms.db'}"


_META = cast(Table, MetaRow.__table__)
_KEYS = cast(Table, InternalKeyRow.__table__)
_USERS = cast(Table, UserRow.__table__)
_SECRETS = cast(Table, SecretRow.__table__)
_VERSIONS = cast(Table, SecretVersionRow.__table__)
_POLICIES = cast(Table, PolicyRow.__table__)
_NONCES = cast(Table, NonceRow.__table__)
_AUDIT = cast(Table, AuditRow.__table__)
_HEAD = cast(Table, AuditHeadRow.__table__)

# Hot-path statements, built once: executing a prebuilt statement with parameters skips the
# construction and most of the cache-key work that an ad hoc statement costs every time.
_P = bindparam
_HEAD_FOR_UPDATE = (
    select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == literal(1)).with_for_update()
)
_HEAD_SET = (
    update(_HEAD)
    .where(_HEAD.c.id == literal(1))
    .values(seq=_P("h_seq"), hash=_P("h_hash"), mac=_P("h_mac"))
)
_AUDIT_INSERT = insert(_AUDIT)
_NONCE_INSERT = insert(_NONCES)
_NONCE_CONSUME = (
    update(_NONCES)
    .where(
        _NONCES.c.nonce == _P("n_nonce"),
        _NONCES.c.used_ms.is_(None),
        _NONCES.c.expires_ms > _P("n_now"),
    )
    .values(used_ms=_P("n_used"))
)
_NONCE_GET = select(_NONCES.c.tee, _NONCES.c.used_ms).where(_NONCES.c.nonce == _P("n_nonce"))
_CURRENT_BASE = select(
    _SECRETS.c.name,
    _SECRETS.c.kind,
    _SECRETS.c.params,
    _VERSIONS.c.version,
    _VERSIONS.c.wrapped_key,
    _VERSIONS.c.ciphertext,
).join(
    _VERSIONS,
    (_VERSIONS.c.name == _SECRETS.c.name) & (_VERSIONS.c.version == _SECRETS.c.current_version),
)
_CURRENT_VALUE = _CURRENT_BASE.where(_SECRETS.c.name == _P("s_name"))
_CURRENT_VALUES = _CURRENT_BASE.where(_SECRETS.c.name.in_(_P("s_names", expanding=True)))
_USER_GET = select(_USERS).where(_USERS.c.id == _P("u_id"))
_POLICIES_ALL = select(_POLICIES).order_by(_POLICIES.c.name)
_POLICY_DOC = select(_POLICIES.c.document).where(_POLICIES.c.name == _P("p_name"))
_META_GET = select(_META.c.value).where(_META.c.key == _P("m_key"))


class _SqliteStmt:
    """A hot statement compiled once by SQLAlchemy for SQLite and run on the sqlite3 connection
    of the current transaction: about 4 µs a statement instead of about 40 µs through
    ``Connection.execute`` (measured; a secret read runs four, an attestation seven).
    The SQL text and parameter order are SQLAlchemy's own; only the per-call work is skipped."""

    def __init__(self, stmt: Any) -> None:
        compiled = stmt.compile(dialect=_SQLITE_DIALECT)
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        self.defaults = dict(compiled.params)
        columns = None if stmt.is_dml else stmt.selected_columns
        self.row: Any = namedtuple("Row", [c.key for c in columns]) if columns else None

    def args(self, params: Mapping[str, object]) -> tuple[object, ...]:
        return tuple(params[n] if n in params else self.defaults[n] for n in self.names)


_SQLITE_DIALECT = sqlite_dialect.dialect()
_FAST_CURRENT_VALUE = _SqliteStmt(_CURRENT_VALUE)
_FAST_HEAD = _SqliteStmt(_HEAD_FOR_UPDATE)
_FAST_HEAD_SET = _SqliteStmt(_HEAD_SET)
_FAST_AUDIT_INSERT = _SqliteStmt(_AUDIT_INSERT)
_FAST_NONCE_INSERT = _SqliteStmt(_NONCE_INSERT)
_FAST_NONCE_CONSUME = _SqliteStmt(_NONCE_CONSUME)
_FAST_NONCE_GET = _SqliteStmt(_NONCE_GET)
_FAST_POLICIES_ALL = _SqliteStmt(_POLICIES_ALL)
_FAST_POLICY_DOC = _SqliteStmt(_POLICY_DOC)
_FAST_META_GET = _SqliteStmt(_META_GET)


class Tx:
    """One database transaction with the KMS's operations on it.

    SQLAlchemy Core on one connection (no ORM unit of work: every call here is on a hot path of
    some request). Rows come back as read-only named tuples with the columns as attributes.
    """

    def __init__(self, conn: Connection) -> None:
        self.c = conn
        # SQLite: the hot statements run on the driver connection, inside the same transaction.
        self._raw: sqlite3.Connection | None = (
            conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        )

    @property
    def raw_sqlite(self) -> sqlite3.Connection | None:
        """The transaction's sqlite3 connection (SQLite), for hot statements of other store
        modules compiled with :class:`_SqliteStmt`; None on PostgreSQL."""
        return self._raw

    def _one(self, stmt: Any, params: Mapping[str, object] | None = None) -> Row[Any] | None:
        return self.c.execute(stmt, params).first()

    def _fast_one(
        self, raw: sqlite3.Connection, stmt: _SqliteStmt, params: Mapping[str, object]
    ) -> Any:
        row = raw.execute(stmt.sql, stmt.args(params)).fetchone()
        return None if row is None else stmt.row._make(row)

    # -- meta and internal keys ---------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        raw = self._raw
        params = {"m_key": key}
        row = (
            self._fast_one(raw, _FAST_META_GET, params)
            if raw is not None
            else self._one(_META_GET, params)
        )
        return None if row is None else str(row.value)

    def set_meta(self, key: str, value: str) -> None:
        if self.get_meta(key) is None:
            self.c.execute(insert(_META).values(key=key, value=value))
        else:
            self.c.execute(update(_META).where(_META.c.key == key).values(value=value))

    def delete_meta(self, key: str) -> None:
        self.c.execute(delete(_META).where(_META.c.key == key))

    def all_meta(self) -> dict[str, str]:
        return {r.key: r.value for r in self.c.execute(select(_META))}

    def put_internal_key(self, name: str, wrapped: bytes, public: str, now_ms: int) -> None:
        self.c.execute(delete(_KEYS).where(_KEYS.c.name == name))
        self.c.execute(
            insert(_KEYS).values(name=name, wrapped=wrapped, public=public, created_ms=now_ms)
        )

    def rewrap_internal_key(self, name: str, wrapped: bytes) -> None:
        """Replace an internal key's wrapped form (a rekey); its public part stays."""
        self.get_internal_key(name)
        self.c.execute(update(_KEYS).where(_KEYS.c.name == name).values(wrapped=wrapped))

    def delete_internal_key(self, name: str) -> None:
        self.c.execute(delete(_KEYS).where(_KEYS.c.name == name))

    def internal_key_names(self) -> list[str]:
        return [str(r.name) for r in self.c.execute(select(_KEYS.c.name).order_by(_KEYS.c.name))]

    def find_internal_key(self, name: str) -> Row[Any] | None:
        return self._one(select(_KEYS).where(_KEYS.c.name == name))

    def get_internal_key(self, name: str) -> Row[Any]:
        row = self._one(select(_KEYS).where(_KEYS.c.name == name))
        if row is None:
            raise KmsNotFound(f"internal key {name!r} is missing; was the KMS initialised?")
        return row

    # -- users --------------------------------------------------------------------------------
    def add_user(self, *, id: str, name: str, role: str, token_hash: bytes, now_ms: int) -> None:
        if self._one(select(_USERS.c.id).where(_USERS.c.name == name)) is not None:
            raise KmsConflict(f"user {name!r} already exists")
        self.c.execute(
            insert(_USERS).values(
                id=id, name=name, role=role, token_hash=token_hash, created_ms=now_ms
            )
        )

    def get_user(self, user_id: str) -> Row[Any] | None:
        return self._one(_USER_GET, {"u_id": user_id})

    def list_users(self) -> list[Row[Any]]:
        return list(self.c.execute(select(_USERS).order_by(_USERS.c.name)))

    def remove_user(self, name: str) -> Row[Any]:
        row = self._one(select(_USERS).where(_USERS.c.name == name))
        if row is None:
            raise KmsNotFound(f"user {name!r} does not exist")
        self.c.execute(delete(_USERS).where(_USERS.c.id == row.id))
        return row

    def count_admins(self) -> int:
        stmt = select(func.count()).select_from(_USERS).where(_USERS.c.role == "admin")
        return int(self.c.execute(stmt).scalar_one())

    # -- secrets ------------------------------------------------------------------------------
    def find_secret(self, name: str) -> Row[Any] | None:
        return self._one(select(_SECRETS).where(_SECRETS.c.name == name))

    def get_secret(self, name: str) -> Row[Any]:
        row = self.find_secret(name)
        if row is None:
            raise KmsNotFound(f"secret {name!r} does not exist")
        return row

    def create_secret(
        self, *, name: str, kind: str, params: Mapping[str, object], now_ms: int
    ) -> Row[Any]:
        if self.find_secret(name) is not None:
            raise KmsConflict(f"secret {name!r} already exists (use rotate for a new version)")
        self.c.execute(
            insert(_SECRETS).values(
                name=name,
                kind=kind,
                params=json.dumps(dict(params), sort_keys=True),
                current_version=0,
                created_ms=now_ms,
                updated_ms=now_ms,
            )
        )
        return self.get_secret(name)

    def add_version(self, row: Row[Any], make: Callable[[int], SealedValue], now_ms: int) -> int:
        """Append version ``current + 1`` (of the row as read in this transaction) built by
        ``make(version)``; returns the version. A concurrent writer that appended first makes
        this one fail with a conflict (primary key), never overwrite."""
        version = int(row.current_version) + 1
        sealed = make(version)
        self.c.execute(
            insert(_VERSIONS).values(
                name=row.name,
                version=version,
                wrapped_key=sealed.wrapped_key,
                ciphertext=sealed.ciphertext,
                created_ms=now_ms,
            )
        )
        self.c.execute(
            update(_SECRETS)
            .where(_SECRETS.c.name == row.name)
            .values(current_version=version, updated_ms=now_ms)
        )
        return version

    def get_version(self, name: str, version: int) -> Row[Any]:
        row = self._one(
            select(_VERSIONS).where(_VERSIONS.c.name == name, _VERSIONS.c.version == version)
        )
        if row is None:
            raise KmsNotFound(f"secret {name!r} has no version {version}")
        return row

    def current_value(self, name: str) -> Row[Any]:
        """The secret's kind, params and its current version's sealed value, in one query."""
        params = {"s_name": name}
        raw = self._raw
        row = (
            self._fast_one(raw, _FAST_CURRENT_VALUE, params)
            if raw is not None
            else self._one(_CURRENT_VALUE, params)
        )
        if row is None:
            raise KmsNotFound(f"secret {name!r} does not exist")
        return row

    def current_values(self, names: Sequence[str]) -> dict[str, Row[Any]]:
        """:meth:`current_value` of several secrets in one query; absent names are left out."""
        if not names:
            return {}
        raw = self._raw
        if raw is not None:  # a few point lookups beat compiling an IN (...) for each count
            found = (self._fast_one(raw, _FAST_CURRENT_VALUE, {"s_name": n}) for n in names)
            return {str(r.name): r for r in found if r is not None}
        rows = self.c.execute(_CURRENT_VALUES, {"s_names": list(names)})
        return {str(r.name): cast(Row[Any], r) for r in rows}

    def list_secrets(self) -> list[Row[Any]]:
        return list(self.c.execute(select(_SECRETS).order_by(_SECRETS.c.name)))

    def list_versions(self, name: str) -> list[Row[Any]]:
        self.get_secret(name)
        return list(
            self.c.execute(
                select(_VERSIONS).where(_VERSIONS.c.name == name).order_by(_VERSIONS.c.version)
            )
        )

    def delete_secret(self, name: str) -> None:
        self.get_secret(name)
        self.c.execute(delete(_VERSIONS).where(_VERSIONS.c.name == name))
        self.c.execute(delete(_SECRETS).where(_SECRETS.c.name == name))

    def wrapped_keys(self) -> list[Row[Any]]:
        """Every secret version's ``(name, version, wrapped_key)`` (a rekey rewraps them)."""
        return list(
            self.c.execute(
                select(_VERSIONS.c.name, _VERSIONS.c.version, _VERSIONS.c.wrapped_key).order_by(
                    _VERSIONS.c.name, _VERSIONS.c.version
                )
            )
        )

    def set_wrapped_keys(self, rows: Sequence[tuple[str, int, bytes]]) -> None:
        """Replace data-key wrappings; the ciphertexts stay as they are."""
        if rows:
            self.c.execute(
                update(_VERSIONS)
                .where(_VERSIONS.c.name == _P("w_name"), _VERSIONS.c.version == _P("w_version"))
                .values(wrapped_key=_P("w_key")),
                [{"w_name": n, "w_version": v, "w_key": k} for n, v, k in rows],
            )

    # -- policies -----------------------------------------------------------------------------
    def put_policy(self, name: str, document: str, now_ms: int) -> bool:
        """Insert or replace; returns True when it was created."""
        if self._one(select(_POLICIES.c.name).where(_POLICIES.c.name == name)) is None:
            self.c.execute(
                insert(_POLICIES).values(
                    name=name, document=document, created_ms=now_ms, updated_ms=now_ms
                )
            )
            return True
        self.c.execute(
            update(_POLICIES)
            .where(_POLICIES.c.name == name)
            .values(document=document, updated_ms=now_ms)
        )
        return False

    def find_policy(self, name: str) -> Row[Any] | None:
        return self._one(select(_POLICIES).where(_POLICIES.c.name == name))

    def get_policy(self, name: str) -> Row[Any]:
        row = self.find_policy(name)
        if row is None:
            raise KmsNotFound(f"policy {name!r} does not exist")
        return row

    def policy_document(self, name: str) -> str | None:
        """The stored document of policy ``name`` (None: there is none); on every secret read."""
        params = {"p_name": name}
        raw = self._raw
        row = (
            self._fast_one(raw, _FAST_POLICY_DOC, params)
            if raw is not None
            else self._one(_POLICY_DOC, params)
        )
        return None if row is None else str(row.document)

    def list_policies(self) -> list[Row[Any]]:
        raw = self._raw
        if raw is not None:
            make = _FAST_POLICIES_ALL.row._make
            return [make(r) for r in raw.execute(_FAST_POLICIES_ALL.sql)]
        return list(self.c.execute(_POLICIES_ALL))

    def delete_policy(self, name: str) -> None:
        self.get_policy(name)
        self.c.execute(delete(_POLICIES).where(_POLICIES.c.name == name))

    # -- nonces -------------------------------------------------------------------------------
    def add_nonce(
        self, *, nonce: bytes, tee: str, client: str, now_ms: int, expires_ms: int
    ) -> None:
        params = {
            "nonce": nonce,
            "tee": tee,
            "client": client,
            "created_ms": now_ms,
            "expires_ms": expires_ms,
            "used_ms": None,
        }
        if self._raw is not None:
            self._raw.execute(_FAST_NONCE_INSERT.sql, _FAST_NONCE_INSERT.args(params))
        else:
            self.c.execute(_NONCE_INSERT, params)

    def consume_nonce(self, nonce: bytes, now_ms: int) -> NonceResult:
        """Mark ``nonce`` used if it is known, unused and unexpired — atomically.

        The conditional UPDATE's row count decides the race: of two transactions (on any
        replica) consuming one nonce, exactly one sees 1.
        """
        params = {"n_nonce": nonce, "n_now": now_ms, "n_used": now_ms}
        raw = self._raw
        if raw is not None:
            won = (
                raw.execute(_FAST_NONCE_CONSUME.sql, _FAST_NONCE_CONSUME.args(params)).rowcount == 1
            )
            row = self._fast_one(raw, _FAST_NONCE_GET, params)
        else:
            won = self.c.execute(_NONCE_CONSUME, params).rowcount == 1
            row = self._one(_NONCE_GET, params)
        if won:
            return NonceResult(outcome="ok", tee=row.tee if row else None)
        if row is None:
            return NonceResult(outcome="unknown")
        if row.used_ms is not None:
            return NonceResult(outcome="replayed", tee=row.tee)
        return NonceResult(outcome="expired", tee=row.tee)

    def nonce_tee(self, nonce: bytes) -> str | None:
        """The TEE a challenge was issued for (None: unknown nonce)."""
        row = self._one(_NONCE_GET, {"n_nonce": nonce})
        return None if row is None else str(row.tee)

    def purge_nonces(self, before_ms: int) -> int:
        result = self.c.execute(delete(_NONCES).where(_NONCES.c.expires_ms < before_ms))
        return int(result.rowcount or 0)

    # -- audit --------------------------------------------------------------------------------
    def append_audit(
        self,
        *,
        ts_ms: int,
        kind: str,
        actor: str,
        subject: str,
        outcome: str,
        details: Mapping[str, object],
        mac: Callable[[bytes], bytes],
        key_check: str | None = None,
    ) -> AuditRecord:
        entry = AuditEntry(
            ts_ms=ts_ms, kind=kind, actor=actor, subject=subject, outcome=outcome, details=details
        )
        return self.append_audit_many([entry], mac=mac, key_check=key_check)[0]

    def append_audit_many(
        self,
        entries: Sequence[AuditEntry],
        *,
        mac: Callable[[bytes], bytes],
        key_check: str | None = None,
    ) -> list[AuditRecord]:
        """Chain ``entries`` onto the log in order: one head read, one insert, one head write
        (the head with its MAC, see :func:`sealpod.kms.audit.head_mac_input`).

        With ``key_check`` (the hex key-check value of the caller's master key) the database's
        own is compared first, after the head is locked, so no record (and nothing written in
        the same transaction) commits under a key a rekey has replaced.

        Raises:
            KmsKeyChanged: the database is under another master key.
        """
        seq, prev = self.lock_audit_head()
        if key_check is not None and self.get_meta("key_check") != key_check:
            raise KmsKeyChanged(
                "the KMS master key was changed (sealpod kms rekey); restart or unseal this "
                "server with the new key"
            )
        raw = self._raw
        records: list[AuditRecord] = []
        for e in entries:
            rec = chain_record(
                seq,
                prev,
                ts_ms=e.ts_ms,
                kind=e.kind,
                actor=e.actor,
                subject=e.subject,
                outcome=e.outcome,
                details=e.details,
                mac=mac,
            )
            records.append(rec)
            seq, prev = rec.seq, rec.hash
        if not records:
            return records
        rows = [
            {
                "seq": rec.seq,
                "ts_ms": rec.ts_ms,
                "kind": rec.kind,
                "actor": rec.actor,
                "subject": rec.subject,
                "outcome": rec.outcome,
                "details": json.dumps(dict(rec.details), sort_keys=True),
                "prev_hash": rec.prev_hash,
                "hash": rec.hash,
                "mac": rec.mac,
            }
            for rec in records
        ]
        head_params = {"h_seq": seq, "h_hash": prev, "h_mac": mac(head_mac_input(seq, prev))}
        if raw is not None:
            raw.executemany(_FAST_AUDIT_INSERT.sql, [_FAST_AUDIT_INSERT.args(r) for r in rows])
            raw.execute(_FAST_HEAD_SET.sql, _FAST_HEAD_SET.args(head_params))
        else:
            self.c.execute(_AUDIT_INSERT, rows)
            self.c.execute(_HEAD_SET, head_params)
        return records

    def lock_audit_head(self) -> tuple[int, bytes]:
        """The head ``(seq, hash)``, locked for this transaction (PostgreSQL: FOR UPDATE;
        SQLite: the write transaction is already exclusive), so appenders on every replica
        extend the chain one at a time."""
        raw = self._raw
        head = (
            self._fast_one(raw, _FAST_HEAD, {})
            if raw is not None
            else self.c.execute(_HEAD_FOR_UPDATE).first()
        )
        if head is None:
            raise KmsUnavailable("audit head row is missing: database not migrated")
        return int(head.seq), bytes(head.hash)

    def set_audit_macs(self, macs: Sequence[tuple[int, bytes]]) -> None:
        """Replace records' MACs (a rekey re-MACs the verified chain; hashes stay)."""
        if macs:
            self.c.execute(
                update(_AUDIT).where(_AUDIT.c.seq == _P("a_seq")).values(mac=_P("a_mac")),
                [{"a_seq": s, "a_mac": m} for s, m in macs],
            )

    def audit_head(self) -> tuple[int, bytes]:
        seq, digest, _ = self.audit_head_row()
        return seq, digest

    def audit_head_row(self) -> tuple[int, bytes, bytes | None]:
        """The head ``(seq, hash, mac)``; the MAC is None on a row no append has written since
        migration 0003."""
        head = self._one(select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.mac).where(_HEAD.c.id == 1))
        if head is None:
            raise KmsUnavailable("audit head row is missing: database not migrated")
        return int(head.seq), bytes(head.hash), None if head.mac is None else bytes(head.mac)

    def verify_audit(self, mac: Callable[[bytes], bytes]) -> ChainReport:
        """The whole stored chain verified, every record's MAC and the head row's MAC too."""
        head_seq, head_hash, head_mac = self.audit_head_row()
        records: list[AuditRecord] = []
        after = 0
        while True:
            page = self.audit_records(after=after, limit=1000)
            records.extend(page)
            if len(page) < 1000:
                break
            after = page[-1].seq
        return verify_chain(records, mac=mac, head=(head_seq, head_hash), head_mac=head_mac)

    def audit_records(self, *, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = self.c.execute(
            select(_AUDIT).where(_AUDIT.c.seq > after).order_by(_AUDIT.c.seq).limit(limit)
        )
        return [
            AuditRecord(
                seq=r.seq,
                ts_ms=r.ts_ms,
                kind=r.kind,
                actor=r.actor,
                subject=r.subject,
                outcome=r.outcome,
                details=json.loads(r.details),
                prev_hash=bytes(r.prev_hash),
                hash=bytes(r.hash),
                mac=bytes(r.mac),
            )
            for r in rows
        ]


class Store:
    """The database: engine, migrations and transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._immediate = engine.execution_options(sqlite_immediate=True)
        # SQLite allows one writer; threads of this process queue here (a fast hand-off)
        # instead of in SQLite's busy handler, which polls with sleeps of up to 100 ms.
        self._sqlite_writer = threading.Lock() if engine.dialect.name == "sqlite" else None
        # SQLite: each thread keeps its writing connection (checking one out of the pool and
        # back for every transaction cost more than the transaction's own statements).
        self._local = threading.local()
        self._writers: list[Connection] = []
        self._writers_lock = threading.Lock()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        sqlite_synchronous: SqliteSync = "NORMAL",
        pool_size: int = 10,
    ) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``) and migrate.

        Raises:
            ConfigError: an unsupported or malformed URL.
            KmsUnavailable: the database cannot be reached or migrated.
        """
        try:
            parsed = make_url(url)
        except SQLAlchemyError as exc:
            raise ConfigError("database URL is malformed") from exc
        backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                db = Path(parsed.database)
                try:
                    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    if not db.exists():
                        db.touch(mode=0o600)
                except OSError as exc:
                    raise ConfigError(
                        f"cannot create the SQLite database {str(db)!r}: {exc.strerror or exc}"
                    ) from exc
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # One connection per server worker thread, kept open (opening one runs PRAGMAs).
            kwargs["pool_size"] = max(pool_size, 48)
            kwargs["max_overflow"] = 16
        elif backend == "postgresql":
            kwargs["pool_size"] = pool_size
            kwargs["pool_pre_ping"] = True
        else:
            raise ConfigError(f"database backend is {backend!r}, expected sqlite or postgresql")
        try:
            engine = create_engine(parsed, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise ConfigError(f"cannot use database URL: {type(exc).__name__}") from exc
        if backend == "sqlite":
            _configure_sqlite(engine, sqlite_synchronous)
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the schema to the newest revision (a no-op when it is there).

        Raises:
            KmsUnavailable: the database refuses the connection or the migration.
        """
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK}
                    )
                cfg = _alembic_config(conn)
                command.upgrade(cfg, "head")
        except DatabaseError as exc:
            raise KmsUnavailable(f"database unavailable: {_db_reason(exc)}") from exc

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction: commits on normal exit, rolls back on any exception.

        Raises:
            KmsUnavailable: the database is unreachable or locked for too long.
            KmsConflict: a uniqueness constraint refused the write.
        """
        try:
            if self._sqlite_writer is not None:
                with self._sqlite_writer:
                    conn = self._writer()
                    try:
                        with conn.begin():
                            yield Tx(conn)
                    except (DatabaseError, sqlite3.DatabaseError):
                        self._drop_writer(conn)  # a fresh connection next time
                        raise
            else:
                with self.engine.begin() as conn:
                    yield Tx(conn)
        except (IntegrityError, sqlite3.IntegrityError) as exc:
            raise KmsConflict("the write conflicts with existing data") from exc
        except DatabaseError as exc:
            raise KmsUnavailable(f"database unavailable: {_db_reason(exc)}") from exc
        except sqlite3.DatabaseError as exc:  # a statement of the SQLite fast path
            raise KmsUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    def _writer(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._immediate.connect()
            self._local.conn = conn
            with self._writers_lock:
                self._writers.append(conn)
        return conn

    def _drop_writer(self, conn: Connection) -> None:
        self._local.conn = None
        with self._writers_lock:
            if conn in self._writers:
                self._writers.remove(conn)
        with contextlib.suppress(SQLAlchemyError, sqlite3.Error):
            conn.close()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only unit of work (rolled back at the end)."""
        try:
            with self.engine.connect() as conn:
                yield Tx(conn)
        except DatabaseError as exc:
            raise KmsUnavailable(f"database unavailable: {_db_reason(exc)}") from exc
        except sqlite3.DatabaseError as exc:  # a statement of the SQLite fast path
            raise KmsUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        with self._writers_lock:
            writers, self._writers = self._writers, []
        for conn in writers:
            with contextlib.suppress(SQLAlchemyError, sqlite3.Error):
                conn.close()
        self.engine.dispose()


def _alembic_config(conn: Connection | None) -> Config:
    cfg = Config()
    location = resources.files("sealpod.kms") / "migrations"
    cfg.set_main_option("script_location", os.fspath(Path(str(location))))
    cfg.attributes["connection"] = conn
    return cfg


def _db_reason(exc: DatabaseError) -> str:
    # The driver's first line says what went wrong (locked, refused); never the statement or
    # its parameters, which could hold ciphertext or token hashes.
    orig = exc.orig
    first = str(orig).splitlines()[0] if orig is not None and str(orig) else type(exc).__name__
    return first[:200]


def _configure_sqlite(engine: Engine, synchronous: SqliteSync) -> None:
    # The value is spliced into a PRAGMA (PRAGMAs take no bound parameters): allow-list it here
    # too, not only in the settings model, since Store.open is public.
    if synchronous not in get_args(SqliteSync):
        raise ConfigError(f"sqlite synchronous is {synchronous!r}, expected OFF/NORMAL/FULL/EXTRA")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        # On the driver connection: the statement has no parameters and no result, and going
        # through exec_driver_sql cost about a tenth of a secret read's database time.
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - a live transaction always has its connection
            raise KmsUnavailable("database connection is gone")
        driver.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
