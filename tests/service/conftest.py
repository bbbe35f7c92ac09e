"""Fixtures for the KMS tests: stores on SQLite and (when it is up) PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealpod.kms.store import Store

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
PG_DSN = f"host={PG_HOST} port={PG_PORT} dbname={PG_DB} user=postgres"


def service_up(host: str, port: int) -> bool:
    """True when something accepts TCP connections at host:port (loopback only)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    if not service_up(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}")
    import psycopg

    schema = "sealpod_kms_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield (
            f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kms' / 'kms.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    try:
        yield s
    finally:
        s.close()
