"""Store operations for encrypted volumes: version counters and first-release volume keys.

Both are races the database decides, on SQLite and on PostgreSQL alike:

* a counter moves by one conditional statement whose ``RETURNING`` row says who won — an ``UPDATE``
  whose ``WHERE`` holds the expected counter and volume id, or, for a volume the KMS has not
  seen, an ``INSERT .. ON CONFLICT DO NOTHING``. Of two transactions racing from the same
  expected value, PostgreSQL (READ COMMITTED) makes the second wait for the first and then
  re-check its ``WHERE`` against the committed row, so exactly one wins; SQLite runs write
  transactions one at a time.
* a volume key generated at its first release is inserted the same way; the loser of two
  racing first releases finds no row inserted and reads the winner's key instead of making a
  second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sealpod.kms.keys import SealedValue
from sealpod.kms.store.repository import Tx
from sealpod.kms.store.schema import SecretRow, SecretVersionRow, VolumeCounterRow

_COUNTERS = cast(Table, VolumeCounterRow.__table__)
_SECRETS = cast(Table, SecretRow.__table__)
_VERSIONS = cast(Table, SecretVersionRow.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterRecord:
    """What the KMS holds for a volume name: its volume id and last counter."""

    name: str
    volume_id: str | None  # None: no record (counter 0)
    counter: int


def _insert(tx: Tx, table: Table) -> Any:
    """``INSERT .. ON CONFLICT DO NOTHING`` in the dialect of ``tx``."""
    dialect = postgresql if tx.c.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def get_counter(tx: Tx, name: str) -> CounterRecord | None:
    """The record of volume ``name`` (None: the KMS has never seen it)."""
    row = tx.c.execute(select(_COUNTERS).where(_COUNTERS.c.name == name)).first()
    if row is None:
        return None
    return CounterRecord(name=str(row.name), volume_id=str(row.volume_id), counter=int(row.counter))


def swap_counter(
    tx: Tx, *, name: str, volume_id: str, expected: int, new: int, now_ms: int
) -> CounterRecord | None:
    """Move volume ``name`` from ``expected`` to ``new`` if it is at ``expected`` under
    ``volume_id`` (``expected == 0``: the KMS has no record of it yet). Returns None when it
    moved; otherwise what the KMS holds (a record, or a zero record when there is none)."""
    if expected == 0:
        stmt = _insert(tx, _COUNTERS).values(
            name=name, volume_id=volume_id, counter=new, created_ms=now_ms, updated_ms=now_ms
        )
    else:
        stmt = (
            update(_COUNTERS)
            .where(
                _COUNTERS.c.name == name,
                _COUNTERS.c.volume_id == volume_id,
                _COUNTERS.c.counter == expected,
            )
            .values(counter=new, updated_ms=now_ms)
        )
    # RETURNING rather than the row count: psycopg reports -1 for an INSERT .. ON CONFLICT.
    if tx.c.execute(stmt.returning(_COUNTERS.c.name)).first() is not None:
        return None
    stored = get_counter(tx, name)
    return stored or CounterRecord(name=name, volume_id=None, counter=0)


def insert_secret_once(
    tx: Tx,
    *,
    name: str,
    kind: str,
    params: Mapping[str, object],
    sealed: SealedValue,
    now_ms: int,
) -> bool:
    """Create secret ``name`` at version 1 holding ``sealed``, unless it exists (a concurrent
    first release made it): True when this call created it."""
    created = tx.c.execute(
        _insert(tx, _SECRETS)
        .values(
            name=name,
            kind=kind,
            params=json.dumps(dict(params), sort_keys=True),
            current_version=1,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        .returning(_SECRETS.c.name)
    ).first()
    if created is None:
        return False
    tx.c.execute(
        _insert(tx, _VERSIONS).values(
            name=name,
            version=1,
            wrapped_key=sealed.wrapped_key,
            ciphertext=sealed.ciphertext,
            created_ms=now_ms,
        )
    )
    return True
