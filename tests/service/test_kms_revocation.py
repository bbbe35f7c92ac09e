"""Revocation (issue 17 item 2): a token reads only while a policy it was issued under is
still stored unchanged and releases the secret — checked on every read, so removing or changing
a policy takes effect at once, on every replica, for tokens already issued."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
from kms_data import MEAS_A, SECRET_VALUES, policy_toml

from sealpod.errors import KmsForbidden
from sealpod.kms.state import SealState
from sealpod.kms.tokens import thumbprint

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def _refusals(kms: KmsHarness) -> list[list[str]]:
    return [
        r["details"]["codes"]
        for r in await kms.audit()
        if r["kind"] == "secret.release" and r["outcome"] == "refused"
    ]


async def test_removing_the_policy_revokes_a_held_token(kms_any: KmsHarness) -> None:
    session = await kms_any.workload.attest(kms_any.backend(), MEAS_A)
    assert (await kms_any.workload.fetch(session, "db-password")).version == 1
    r = await kms_any.http.delete("/v1/admin/policies/workload-a", headers=kms_any.auth())
    assert r.status_code == 204
    with pytest.raises(KmsForbidden, match="no longer released"):
        await kms_any.workload.fetch(session, "db-password")
    assert await _refusals(kms_any) == [["policy_revoked"]]


async def test_a_version_rotated_in_after_the_removal_is_not_released(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth())
    r = await kms.http.post(
        "/v1/admin/secrets/db-password/rotate",
        json={"value": base64.b64encode(b"rotated after the removal").decode()},
        headers=kms.auth(),
    )
    assert r.status_code == 200 and r.json()["current_version"] == 2
    with pytest.raises(KmsForbidden):
        await kms.workload.fetch(session, "db-password")


async def test_a_changed_policy_revokes_the_tokens_issued_under_it(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    await kms.put_policy("workload-a", policy_toml(secrets=["api-key"]))
    for name in ("db-password", "api-key"):  # any change: the token was for the old version
        with pytest.raises(KmsForbidden):
            await kms.workload.fetch(session, name)
    fresh = await kms.workload.attest(kms.backend(), MEAS_A)
    assert fresh.secrets == ("api-key",)
    assert (await kms.workload.fetch(fresh, "api-key")).value == SECRET_VALUES["api-key"]
    with pytest.raises(KmsForbidden, match="not released"):
        await kms.workload.fetch(fresh, "db-password")


async def test_another_policy_still_granting_the_secret_keeps_it_readable(
    kms: KmsHarness,
) -> None:
    await kms.put_policy("also-a", policy_toml(secrets=["db-password"]))
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    assert set(session.policies) == {"workload-a", "also-a"}
    await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth())
    assert (await kms.workload.fetch(session, "db-password")).version == 1
    with pytest.raises(KmsForbidden):  # api-key was granted by workload-a only
        await kms.workload.fetch(session, "api-key")


async def test_revocation_through_one_replica_holds_at_once_on_another(
    kms_any: KmsHarness, kms_process: object
) -> None:
    session = await kms_any.workload.attest(kms_any.backend(), MEAS_A)
    async with kms_process(kms_any, kms_any.master, port=40002) as other:  # type: ignore[operator]
        assert (await other.workload.fetch(session, "db-password")).version == 1
        await kms_any.http.delete("/v1/admin/policies/workload-a", headers=kms_any.auth())
        with pytest.raises(KmsForbidden):
            await other.workload.fetch(session, "db-password")


async def test_a_token_without_policy_versions_reads_nothing(kms: KmsHarness) -> None:
    # Issued as before this check existed (no "pv" claim): refused, not trusted blindly.
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    state: SealState = kms.app.state.admin.state
    token, _ = state.keys.signer.issue(
        jkt=thumbprint(session.key.public_key()), subject=MEAS_A.hex(),
        secrets_granted=["db-password"], policies=["workload-a"], claims={},
        now=kms.clock.now, ttl_secs=60,
    )  # fmt: skip
    with pytest.raises(KmsForbidden, match="no longer released"):
        await kms.workload.fetch(replace(session, token=token), "db-password")
