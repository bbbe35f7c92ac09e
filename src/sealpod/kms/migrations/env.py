"""Alembic environment for the KMS store.

Run programmatically by :func:`sealpod.kms.store.repository.migrate`, which passes an open
connection in ``config.attributes["connection"]``; there is no alembic.ini and no logging setup.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from sealpod.kms.store.schema import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic command line
    raise RuntimeError("sealpod KMS migrations run through sealpod.kms.store, not alembic's CLI")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
