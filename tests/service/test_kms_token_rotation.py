"""Rotation of the token-signing key: tokens of the previous key stay valid, replicas pick the
new key up, only admins rotate, rotating too soon is refused, and a database writer cannot slip
a key of theirs in as the "previous" one."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from kms_data import MEAS_A, SECRET_VALUES
from sqlalchemy import text

from sealpod.errors import KmsAuthError
from sealpod.kms.tokens import TokenSigner, thumbprint

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def rotate(kms: KmsHarness, *, force: bool = False, token: str | None = None) -> Any:
    return await kms.http.post(
        "/v1/admin/keys/token-signing/rotate", json={"force": force}, headers=kms.auth(token)
    )


def kid_of(token: str) -> str:
    import base64

    part = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["kid"])


async def test_tokens_of_the_previous_key_stay_valid(kms_any: KmsHarness) -> None:
    kms = kms_any
    before = await kms.workload.attest(kms.backend(), MEAS_A)
    old_kid = kid_of(before.token)
    r = await rotate(kms)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["key"] == "token-signing"
    assert done["previous_id"] == old_kid and done["id"] != old_kid
    # The token issued before the rotation still reads its secrets ...
    got = await kms.workload.fetch(before, "db-password")
    assert got.value == SECRET_VALUES["db-password"]
    # ... new tokens are signed by the new key, and the JWKS lists both, current first.
    after = await kms.workload.attest(kms.backend(), MEAS_A)
    assert kid_of(after.token) == done["id"]
    jwks = (await kms.http.get("/v1/jwks")).json()["keys"]
    assert [k["kid"] for k in jwks] == [done["id"], old_kid]
    assert all("d" not in k for k in jwks)
    records = await kms.audit()
    assert records[-3]["kind"] == "key.rotate" and records[-3]["details"]["id"] == done["id"]


async def test_rotating_again_too_soon_is_refused_unless_forced(kms: KmsHarness) -> None:
    first_token = (await kms.workload.attest(kms.backend(), MEAS_A)).token
    kms.clock.advance(kms.settings.max_token_ttl_secs + 31)
    assert (await rotate(kms)).status_code == 200
    second = await kms.workload.attest(kms.backend(), MEAS_A)
    r = await rotate(kms)
    assert r.status_code == 409 and r.json()["code"] == "kms.conflict"
    assert "may be valid for up to" in r.json()["detail"]
    r = await rotate(kms, force=True)
    assert r.status_code == 200, r.text
    # Two rotations on, the first key is gone: its (still unexpired) token no longer verifies.
    with pytest.raises(KmsAuthError):
        kms.app.state.kms_state.verify_token(first_token, now=kms.clock.now)
    assert (await kms.workload.fetch(second, "api-key")).value == SECRET_VALUES["api-key"]
    records = [r for r in await kms.audit() if r["kind"] == "key.rotate"]
    assert [r["details"]["forced"] for r in records] == [False, True]


@pytest.mark.parametrize("role", ["operator", "auditor"])
async def test_only_admins_rotate(kms: KmsHarness, role: str) -> None:
    token = await kms.add_user(f"u-{role}", role)
    r = await rotate(kms, token=token)
    assert r.status_code == 403 and r.json()["code"] == "kms.forbidden"
    assert (await kms.http.post("/v1/admin/keys/token-signing/rotate")).status_code == 401


async def test_another_replica_picks_up_the_rotation(kms_any: KmsHarness, kms_process: Any) -> None:
    kms = kms_any
    async with kms_process(kms, kms.master) as replica:
        state_b = replica.app.state.kms_state
        old_kid = state_b.keys.signer.kid
        assert (await rotate(kms)).status_code == 200
        # A token by the new key reaches replica B, which still holds the old one: B reloads.
        fresh = await kms.workload.attest(kms.backend(), MEAS_A)
        got = await replica.workload.fetch(fresh, "db-password")
        assert got.value == SECRET_VALUES["db-password"]
        assert state_b.keys.signer.kid == kid_of(fresh.token) != old_kid
    async with kms_process(kms, kms.master, port=40002) as replica_c:
        # A replica that has not seen a token yet signs with the new key once its check is due.
        state_c = replica_c.app.state.kms_state
        state_c._signer_checked -= 31
        session = await replica_c.workload.attest(replica_c.backend(), MEAS_A)
        assert kid_of(session.token) == kms.app.state.kms_state.keys.signer.kid


async def test_unknown_kids_do_not_hammer_the_database(kms: KmsHarness, eph_token: Any) -> None:
    state = kms.app.state.kms_state
    reads = 0
    original = kms.store.read

    def counting_read() -> Any:
        nonlocal reads
        reads += 1
        return original()

    kms.store.read = counting_read  # type: ignore[method-assign]
    try:
        foreign = eph_token(TokenSigner(TokenSigner.generate_key()))
        for _ in range(20):
            with pytest.raises(KmsAuthError, match="does not know"):
                state.verify_token(foreign, now=kms.clock.now)
    finally:
        kms.store.read = original  # type: ignore[method-assign]
    assert 1 <= reads <= 2  # one look at most per UNKNOWN_KID_REFRESH_SECS (0.25 s), else refused


async def test_a_planted_previous_key_is_not_trusted(
    kms: KmsHarness, kms_process: Any, eph_token: Any
) -> None:
    kms.clock.advance(kms.settings.max_token_ttl_secs + 31)
    assert (await rotate(kms)).status_code == 200
    attacker = TokenSigner(TokenSigner.generate_key())
    with kms.store.transaction() as tx:
        tx.c.execute(
            text("UPDATE kms_keys SET public = :p WHERE name = 'token-signing.prev'"),
            {"p": json.dumps(attacker.public_jwk())},
        )
    async with kms_process(kms, kms.master) as restarted:
        state = restarted.app.state.kms_state
        with pytest.raises(KmsAuthError):
            state.verify_token(eph_token(attacker), now=kms.clock.now)
        assert attacker.kid not in {k["kid"] for k in state.keys.signer.public_jwks()}


@pytest.fixture
def eph_token(kms: KmsHarness) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    def make(signer: TokenSigner) -> str:
        eph = ec.generate_private_key(ec.SECP256R1())
        token, _ = signer.issue(
            jkt=thumbprint(eph.public_key()), subject="x", secrets_granted=["db-password"],
            policies=["workload-a"], claims={}, now=kms.clock.now, ttl_secs=60,
        )  # fmt: skip
        return token

    return make


async def test_a_client_retries_a_read_once_right_after_a_rotation(
    kms: KmsHarness, kms_process: Any
) -> None:
    import time

    async with kms_process(kms, kms.master) as replica:
        state_b = replica.app.state.kms_state
        assert (await rotate(kms)).status_code == 200
        fresh = await kms.workload.attest(kms.backend(), MEAS_A)
        state_b._unknown_kid_checked = time.monotonic()  # B looked its keys up a moment ago
        r = await replica.http.get(
            "/v1/secrets/db-password",
            headers={"Authorization": f"Bearer {fresh.token}", "DPoP": "x"},
        )
        assert r.status_code == 401 and r.json()["code"] == "kms.auth.unknown_key"
        state_b._unknown_kid_checked = time.monotonic()
        got = await replica.workload.fetch(fresh, "db-password")  # refused once, then retried
        assert got.value == SECRET_VALUES["db-password"]
