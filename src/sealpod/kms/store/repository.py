"""The KMS store: SQLite (WAL, embedded) or PostgreSQL, behind one small repository.

Every write happens inside :meth:`Store.transaction`, which yields a :class:`Tx`; an admin
change and its audit record commit together or not at all, so after a crash every acknowledged
write is present with its audit record. On SQLite a write transaction starts with
``BEGIN IMMEDIATE`` (one writer at a time, no upgrade deadlocks); on PostgreSQL the audit chain
head row is locked ``FOR UPDATE``. Nonces are consumed by one conditional UPDATE whose row count
decides, so two replicas racing on one nonce cannot both win.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from sealpod.errors import ConfigError, KmsConflict, KmsNotFound, KmsUnavailable
from sealpod.kms.audit import AuditRecord, chain_record
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


class Tx:
    """One database transaction with the KMS's operations on it."""

    def __init__(self, session: Session) -> None:
        self.s = session

    # -- meta and internal keys ---------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.s.get(MetaRow, key)
        return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        self.s.merge(MetaRow(key=key, value=value))

    def all_meta(self) -> dict[str, str]:
        return {r.key: r.value for r in self.s.scalars(select(MetaRow))}

    def put_internal_key(self, name: str, wrapped: bytes, public: str, now_ms: int) -> None:
        self.s.merge(InternalKeyRow(name=name, wrapped=wrapped, public=public, created_ms=now_ms))

    def get_internal_key(self, name: str) -> InternalKeyRow:
        row = self.s.get(InternalKeyRow, name)
        if row is None:
            raise KmsNotFound(f"internal key {name!r} is missing; was the KMS initialised?")
        return row

    # -- users --------------------------------------------------------------------------------
    def add_user(self, *, id: str, name: str, role: str, token_hash: bytes, now_ms: int) -> None:
        if self.s.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
            raise KmsConflict(f"user {name!r} already exists")
        self.s.add(UserRow(id=id, name=name, role=role, token_hash=token_hash, created_ms=now_ms))
        self.s.flush()

    def get_user(self, user_id: str) -> UserRow | None:
        return self.s.get(UserRow, user_id)

    def list_users(self) -> list[UserRow]:
        return list(self.s.scalars(select(UserRow).order_by(UserRow.name)))

    def remove_user(self, name: str) -> UserRow:
        row = self.s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise KmsNotFound(f"user {name!r} does not exist")
        self.s.delete(row)
        self.s.flush()
        return row

    def count_admins(self) -> int:
        return int(self.s.scalar(select(func.count()).where(UserRow.role == "admin")) or 0)

    # -- secrets ------------------------------------------------------------------------------
    def get_secret(self, name: str) -> SecretRow:
        row = self.s.get(SecretRow, name)
        if row is None:
            raise KmsNotFound(f"secret {name!r} does not exist")
        return row

    def find_secret(self, name: str) -> SecretRow | None:
        return self.s.get(SecretRow, name)

    def create_secret(
        self, *, name: str, kind: str, params: Mapping[str, object], now_ms: int
    ) -> SecretRow:
        if self.s.get(SecretRow, name) is not None:
            raise KmsConflict(f"secret {name!r} already exists (use rotate for a new version)")
        row = SecretRow(
            name=name,
            kind=kind,
            params=json.dumps(dict(params), sort_keys=True),
            current_version=0,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        self.s.add(row)
        self.s.flush()
        return row

    def add_version(self, row: SecretRow, make: Callable[[int], SealedValue], now_ms: int) -> int:
        """Append version ``current + 1`` built by ``make(version)``; returns the version."""
        version = row.current_version + 1
        sealed = make(version)
        self.s.add(
            SecretVersionRow(
                name=row.name,
                version=version,
                wrapped_key=sealed.wrapped_key,
                ciphertext=sealed.ciphertext,
                created_ms=now_ms,
            )
        )
        row.current_version = version
        row.updated_ms = now_ms
        self.s.flush()
        return version

    def get_version(self, name: str, version: int) -> SecretVersionRow:
        row = self.s.get(SecretVersionRow, (name, version))
        if row is None:
            raise KmsNotFound(f"secret {name!r} has no version {version}")
        return row

    def list_secrets(self) -> list[SecretRow]:
        return list(self.s.scalars(select(SecretRow).order_by(SecretRow.name)))

    def list_versions(self, name: str) -> list[SecretVersionRow]:
        self.get_secret(name)
        return list(
            self.s.scalars(
                select(SecretVersionRow)
                .where(SecretVersionRow.name == name)
                .order_by(SecretVersionRow.version)
            )
        )

    def delete_secret(self, name: str) -> None:
        self.get_secret(name)
        self.s.execute(delete(SecretVersionRow).where(SecretVersionRow.name == name))
        self.s.execute(delete(SecretRow).where(SecretRow.name == name))

    # -- policies -----------------------------------------------------------------------------
    def put_policy(self, name: str, document: str, now_ms: int) -> bool:
        """Insert or replace; returns True when it was created."""
        row = self.s.get(PolicyRow, name)
        if row is None:
            self.s.add(
                PolicyRow(name=name, document=document, created_ms=now_ms, updated_ms=now_ms)
            )
            self.s.flush()
            return True
        row.document = document
        row.updated_ms = now_ms
        return False

    def get_policy(self, name: str) -> PolicyRow:
        row = self.s.get(PolicyRow, name)
        if row is None:
            raise KmsNotFound(f"policy {name!r} does not exist")
        return row

    def list_policies(self) -> list[PolicyRow]:
        return list(self.s.scalars(select(PolicyRow).order_by(PolicyRow.name)))

    def delete_policy(self, name: str) -> None:
        self.get_policy(name)
        self.s.execute(delete(PolicyRow).where(PolicyRow.name == name))

    # -- nonces -------------------------------------------------------------------------------
    def add_nonce(
        self, *, nonce: bytes, tee: str, client: str, now_ms: int, expires_ms: int
    ) -> None:
        self.s.add(
            NonceRow(nonce=nonce, tee=tee, client=client, created_ms=now_ms, expires_ms=expires_ms)
        )

    def consume_nonce(self, nonce: bytes, now_ms: int) -> NonceResult:
        """Mark ``nonce`` used if it is known, unused and unexpired — atomically.

        The conditional UPDATE's row count decides the race: of two transactions (on any
        replica) consuming one nonce, exactly one sees 1.
        """
        result = self.s.execute(
            update(NonceRow)
            .where(
                NonceRow.nonce == nonce,
                NonceRow.used_ms.is_(None),
                NonceRow.expires_ms > now_ms,
            )
            .values(used_ms=now_ms)
            .execution_options(synchronize_session=False)
        )
        row = self.s.get(NonceRow, nonce, populate_existing=True)
        if getattr(result, "rowcount", 0) == 1:
            return NonceResult(outcome="ok", tee=row.tee if row else None)
        if row is None:
            return NonceResult(outcome="unknown")
        if row.used_ms is not None:
            return NonceResult(outcome="replayed", tee=row.tee)
        return NonceResult(outcome="expired", tee=row.tee)

    def purge_nonces(self, before_ms: int) -> int:
        result = self.s.execute(delete(NonceRow).where(NonceRow.expires_ms < before_ms))
        return int(getattr(result, "rowcount", 0) or 0)

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
    ) -> AuditRecord:
        head = self.s.scalars(
            select(AuditHeadRow).where(AuditHeadRow.id == 1).with_for_update()
        ).one()
        rec = chain_record(
            head.seq,
            head.hash,
            ts_ms=ts_ms,
            kind=kind,
            actor=actor,
            subject=subject,
            outcome=outcome,
            details=details,
            mac=mac,
        )
        self.s.add(
            AuditRow(
                seq=rec.seq,
                ts_ms=rec.ts_ms,
                kind=rec.kind,
                actor=rec.actor,
                subject=rec.subject,
                outcome=rec.outcome,
                details=json.dumps(dict(rec.details), sort_keys=True),
                prev_hash=rec.prev_hash,
                hash=rec.hash,
                mac=rec.mac,
            )
        )
        head.seq = rec.seq
        head.hash = rec.hash
        return rec

    def audit_head(self) -> tuple[int, bytes]:
        head = self.s.get(AuditHeadRow, 1)
        if head is None:
            raise KmsUnavailable("audit head row is missing: database not migrated")
        return head.seq, head.hash

    def audit_records(self, *, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = self.s.scalars(
            select(AuditRow).where(AuditRow.seq > after).order_by(AuditRow.seq).limit(limit)
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
                prev_hash=r.prev_hash,
                hash=r.hash,
                mac=r.mac,
            )
            for r in rows
        ]


class Store:
    """The database: engine, migrations and transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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
                db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not db.exists():
                    db.touch(mode=0o600)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            kwargs["pool_size"] = pool_size
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
        except OperationalError as exc:
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
            with self._sessions.begin() as session:
                if self.dialect == "sqlite":
                    session.connection(execution_options={"sqlite_immediate": True})
                yield Tx(session)
        except IntegrityError as exc:
            raise KmsConflict("the write conflicts with existing data") from exc
        except OperationalError as exc:
            raise KmsUnavailable(f"database unavailable: {_db_reason(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only unit of work (its transaction is rolled back when the session closes;
        rows read stay usable afterwards, detached)."""
        try:
            with self._sessions() as session:
                yield Tx(session)
        except OperationalError as exc:
            raise KmsUnavailable(f"database unavailable: {_db_reason(exc)}") from exc

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    def close(self) -> None:
        self.engine.dispose()


def _alembic_config(conn: Connection | None) -> Config:
    cfg = Config()
    location = resources.files("sealpod.kms") / "migrations"
    cfg.set_main_option("script_location", os.fspath(Path(str(location))))
    cfg.attributes["connection"] = conn
    return cfg


def _db_reason(exc: OperationalError) -> str:
    # The driver's first line says what went wrong (locked, refused); never the statement or
    # its parameters, which could hold ciphertext or token hashes.
    orig = exc.orig
    first = str(orig).splitlines()[0] if orig is not None and str(orig) else type(exc).__name__
    return first[:200]


def _configure_sqlite(engine: Engine, synchronous: SqliteSync) -> None:
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
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
