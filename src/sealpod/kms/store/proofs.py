"""Store operations for DPoP proofs: each proof is accepted once, on every replica.

A proof's ``jti`` (hashed by the caller) is inserted with ``INSERT .. ON CONFLICT DO NOTHING``
in the transaction of the request it authorizes; whether a row was inserted says whether it is
new. Of two
replicas racing on one proof, PostgreSQL makes the second wait for the first's row and then
inserts nothing; SQLite runs write transactions one at a time. Rows are kept until the proof
would be refused as too old anyway, then purged.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite

from sealpod.kms.store.repository import Tx, _SqliteStmt
from sealpod.kms.store.schema import ProofJtiRow

_PROOFS = cast(Table, ProofJtiRow.__table__)
_INSERT_SQLITE = sqlite.insert(_PROOFS).on_conflict_do_nothing()
_FAST_INSERT = _SqliteStmt(_INSERT_SQLITE)  # on the hot path of every secret read
# Through SQLAlchemy the row count of a conflict-free insert is not reliable (psycopg: -1), so
# the inserted row is asked back instead.
_INSERTS = {
    "postgresql": postgresql.insert(_PROOFS).on_conflict_do_nothing().returning(_PROOFS.c.jti_hash),
    "sqlite": _INSERT_SQLITE.returning(_PROOFS.c.jti_hash),
}


def record_proof(tx: Tx, jti_hash: bytes, expires_ms: int) -> bool:
    """Remember a proof's ``jti`` hash until ``expires_ms``; False if it was seen before (a
    replay)."""
    params = {"jti_hash": jti_hash, "expires_ms": expires_ms}
    raw = tx.raw_sqlite
    if raw is not None:
        return int(raw.execute(_FAST_INSERT.sql, _FAST_INSERT.args(params)).rowcount) == 1
    stmt = _INSERTS["postgresql" if tx.c.dialect.name == "postgresql" else "sqlite"]
    return tx.c.execute(stmt, params).first() is not None


def purge_proofs(tx: Tx, before_ms: int) -> int:
    """Forget proofs that expired before ``before_ms``; returns how many."""
    result = tx.c.execute(delete(_PROOFS).where(_PROOFS.c.expires_ms < before_ms))
    return int(result.rowcount or 0)
