"""``sealpod kms migrate``: bring the KMS database schema to this version (alembic).

For deployments where schema changes run once, before new servers start (the Kubernetes
migration Job); ``sealpod kms serve`` also migrates at start, under the same PostgreSQL
advisory lock, so running both is safe.
"""

from __future__ import annotations

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import DbOption, kms_app


@command(kms_app, "migrate")
def migrate_cmd(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Migrate the KMS database schema to the newest revision (a no-op when it is there).

    The database URL comes from --db or $SEALPOD_KMS_DB_URL. No key is needed: the schema
    holds no secrets in the clear.
    """
    from sealpod.kms.settings import KmsSettings
    from sealpod.kms.store import Store

    settings = KmsSettings(db_url=db) if db else KmsSettings()
    store = Store.open(settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous)
    try:
        revision = store.schema_revision()
        dialect = store.dialect
    finally:
        store.close()
    if json_output:
        emit_json({"ok": True, "revision": revision, "database": dialect})
        return
    out.print(f"KMS database ({dialect}) is at schema revision {revision}", markup=False)
