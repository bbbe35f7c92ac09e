"""A secret read is one write transaction: the value is read and opened and the audit record
appended together, before the JWE is built; a value that does not open is never audited as
released."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from kms_data import MEAS_A
from sqlalchemy import text

from sealpod.errors import KmsError

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def test_release_is_audited_once_with_its_version(kms: KmsHarness) -> None:
    before = len(await kms.audit())
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    for _ in range(3):
        await kms.workload.fetch(session, "db-password")
    records = (await kms.audit())[before:]
    released = [r for r in records if r["kind"] == "secret.release"]
    assert [r["outcome"] for r in released] == ["ok"] * 3
    assert all(r["details"]["version"] == 1 for r in released)


async def test_tampered_value_is_not_audited_as_released(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    with kms.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE kms_secret_versions SET ciphertext = :c WHERE name = 'db-password'"),
            {"c": b"\x00" * 64},
        )
    before = len(await kms.audit())
    with pytest.raises(KmsError):
        await kms.workload.fetch(session, "db-password")
    after = await kms.audit()
    assert not [r for r in after[before:] if r["kind"] == "secret.release" and r["outcome"] == "ok"]
