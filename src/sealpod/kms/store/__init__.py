"""KMS persistence: SQLAlchemy models, Alembic migrations, the repository."""

from sealpod.kms.store.repository import NonceResult, Store, Tx, default_sqlite_url

__all__ = ["NonceResult", "Store", "Tx", "default_sqlite_url"]
