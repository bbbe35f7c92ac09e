"""Fixtures and helpers for the KMS tests, loaded by ``pytest_plugins = ["kms_harness"]``.

Stores on SQLite and (when it is up) PostgreSQL; an in-process KMS app (fake verifier, fake
clock) reached through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from kms_data import MEAS_A, SECRET_VALUES, SIGNER, START, FakeClock, policy_toml

from sealpod.crypto.binding import attestation_report_data
from sealpod.kms import jwe
from sealpod.kms.app import create_app
from sealpod.kms.client import AsyncKmsClient
from sealpod.kms.fakes import FakeBackend, FakeIdentity, FakeVerifier
from sealpod.kms.keys import MasterKey
from sealpod.kms.service import AttestationVerifier
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import InitResult, initialize
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
def anyio_backend() -> str:
    """The async KMS tests run on asyncio, the loop the server runs on (trio is only there
    for FUSE), in every module that loads this plugin."""
    return "asyncio"


@pytest.fixture
def kms_pg_url() -> Iterator[str]:
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
def kms_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kms' / 'kms.db'}"
    url: str = request.getfixturevalue("kms_pg_url")
    return url


@pytest.fixture
def kms_store(kms_store_url: str) -> Iterator[Store]:
    s = Store.open(kms_store_url)
    try:
        yield s
    finally:
        s.close()


# -- an in-process KMS ---------------------------------------------------------------------------
@dataclass
class KmsHarness:
    app: FastAPI
    store: Store
    master: MasterKey
    admin_token: str
    verifier: FakeVerifier
    clock: FakeClock
    http: httpx.AsyncClient
    workload: AsyncKmsClient
    settings: KmsSettings

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def backend(self, measurement: bytes = MEAS_A, **changes: object) -> FakeBackend:
        identity = FakeIdentity(measurement=measurement, signer=SIGNER)
        return FakeBackend(replace(identity, **changes))  # type: ignore[arg-type]

    async def put_secret(self, name: str, value: bytes, token: str | None = None) -> None:
        r = await self.http.put(
            f"/v1/admin/secrets/{name}",
            json={"value": base64.b64encode(value).decode()},
            headers=self.auth(token),
        )
        assert r.status_code == 201, r.text

    async def put_policy(self, name: str, toml: str) -> None:
        r = await self.http.put(
            f"/v1/admin/policies/{name}", json={"document": toml}, headers=self.auth()
        )
        assert r.status_code == 200, r.text

    async def add_user(self, name: str, role: str) -> str:
        r = await self.http.post(
            "/v1/admin/users", json={"name": name, "role": role}, headers=self.auth()
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    async def audit(self) -> list[dict[str, Any]]:
        r = await self.http.get("/v1/admin/audit", headers=self.auth())
        assert r.status_code == 200, r.text
        return list(r.json()["records"])

    async def attestation_body(
        self, measurement: bytes = MEAS_A, **extra: Any
    ) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
        """A valid attestation request (fresh challenge, fresh key) and its ephemeral key."""
        r = await self.http.post("/v1/attestation/challenge", json={"tee": "sgx"})
        assert r.status_code == 200, r.text
        nonce = r.json()["nonce"]
        key = ec.generate_private_key(ec.SECP256R1())
        pub = jwe.public_key_der(key)
        evidence = self.backend(measurement).get_evidence(
            attestation_report_data(base64.b64decode(nonce), pub, measurement)
        )
        body = {
            "nonce": nonce,
            "evidence": json.loads(evidence.to_envelope().to_json()),
            "public_key": base64.b64encode(pub).decode(),
            "workload": measurement.hex(),
            **extra,
        }
        return body, key


def build_harness(
    store: Store,
    *,
    verifier: AttestationVerifier | None = None,
    start: datetime = START,
    **settings: Any,
) -> tuple[KmsHarness, InitResult]:
    """An unsealed KMS on ``store``; the fake verifier unless a real one is given (the fake
    is then still in ``harness.verifier``, unused)."""
    master = MasterKey.generate()
    init = initialize(store, master, now=start)
    clock = FakeClock(start)
    fake = FakeVerifier()
    kms_settings = KmsSettings(**settings)
    app = create_app(
        kms_settings,
        verifier=verifier or fake,
        store=store,
        clock=clock,
        master_key=master,
    )
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 40000))
    harness = KmsHarness(
        app=app,
        store=store,
        master=master,
        admin_token=init.admin_token,
        verifier=fake,
        clock=clock,
        http=httpx.AsyncClient(transport=transport, base_url="http://kms"),
        workload=AsyncKmsClient("http://kms", transport=transport, clock=clock),
        settings=kms_settings,
    )
    return harness, init


@contextlib.asynccontextmanager
async def running_kms(
    store: Store, *, policy: str | None = None, **options: Any
) -> AsyncIterator[KmsHarness]:
    """A KMS on ``store`` with a policy (default: workload A) and three secrets, unsealed."""
    harness, _ = build_harness(store, **options)
    try:
        for name, value in SECRET_VALUES.items():
            await harness.put_secret(name, value)
        await harness.put_policy("workload-a", policy or policy_toml())
        yield harness
    finally:
        await harness.http.aclose()
        await harness.workload.aclose()


@contextlib.asynccontextmanager
async def another_process(
    kms: KmsHarness, key: MasterKey | None, *, port: int = 40001
) -> AsyncIterator[KmsHarness]:
    """The same database served by another process (a replica, a worker, or a restart),
    unsealed with ``key`` (None: sealed); same verifier, clock and settings."""
    app = create_app(
        kms.settings, verifier=kms.verifier, store=kms.store, clock=kms.clock, master_key=key
    )
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", port))
    other = replace(
        kms,
        app=app,
        http=httpx.AsyncClient(transport=transport, base_url="http://kms"),
        workload=AsyncKmsClient("http://kms", transport=transport, clock=kms.clock),
    )
    try:
        yield other
    finally:
        await other.http.aclose()
        await other.workload.aclose()


@pytest.fixture
def kms_process() -> Any:
    """:func:`another_process`, for test modules (which import this plugin by name only)."""
    return another_process


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One simulated platform for a test module (creating one takes seconds)."""
    from sealpod.tee.sim import SimPlatform

    home = tmp_path_factory.mktemp("sim-home")
    SimPlatform.load_or_init(home)
    return home


@pytest.fixture
def kms_sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'kms' / 'kms.db'}")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
async def kms(kms_sqlite_store: Store) -> AsyncIterator[KmsHarness]:
    """The default in-process KMS (SQLite)."""
    async with running_kms(kms_sqlite_store) as harness:
        yield harness


@pytest.fixture
async def kms_any(kms_store: Store) -> AsyncIterator[KmsHarness]:
    """The in-process KMS on SQLite and on PostgreSQL (when it is up)."""
    async with running_kms(kms_store) as harness:
        yield harness
