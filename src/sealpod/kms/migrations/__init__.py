"""Alembic migrations of the KMS store, shipped inside the package and run on start."""
