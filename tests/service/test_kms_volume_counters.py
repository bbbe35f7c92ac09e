"""Volume version counters held by the KMS (``/v1/volumes/{name}/counter``).

Compare-and-swap on SQLite and PostgreSQL (exactly one of two racing swaps wins), refused to
anyone whose token does not release the volume's key ``volume.<name>``, authenticated exactly
as secret reads are, every move and refused move in the verified audit chain; and a volume key
the KMS generates at its first release when the policy says ``generate_volume_keys``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from kms_data import MEAS_A, MEAS_B, policy_toml

from sealpod.errors import (
    AttestationRefused,
    ConfigError,
    KmsAuthError,
    KmsForbidden,
    RollbackDetected,
)
from sealpod.kms.client import AttestedSession
from sealpod.kms.models import VolumeCounter
from sealpod.kms.store import Store
from sealpod.kms.store.volumes import CounterRecord, get_counter, swap_counter
from sealpod.kms.tokens import make_proof

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio

VOLUME_POLICY = policy_toml(secrets=["db-password", "volume.data"])
PATH = "/v1/volumes/data/counter"


def vid() -> str:
    return secrets.token_hex(16)


async def session_for(kms: KmsHarness, measurement: bytes = MEAS_A) -> AttestedSession:
    return await kms.workload.attest(kms.backend(measurement), measurement)


def signed(
    kms: KmsHarness, session: AttestedSession, method: str = "GET", path: str = PATH
) -> dict[str, str]:
    """The headers of a workload request: the token and a proof made now."""
    proof = make_proof(session.key, method=method, path=path, token=session.token, now=kms.clock())
    return {"Authorization": f"Bearer {session.token}", "DPoP": proof}


async def records(kms: KmsHarness, kind: str) -> list[dict[str, Any]]:
    return [r for r in await kms.audit() if r["kind"] == kind]


async def assert_chain_verifies(kms: KmsHarness) -> None:
    r = await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())
    assert r.status_code == 200 and r.json()["ok"] is True, r.text


# -- happy path and compare-and-swap -------------------------------------------------------------
async def test_counter_starts_empty_registers_and_moves(kms_any: KmsHarness) -> None:
    kms = kms_any
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    held = await kms.workload.volume_counter(session, "data")
    assert (held.volume_id, held.counter) == (None, 0)

    v = vid()
    moved = await kms.workload.advance_volume_counter(
        session, "data", volume_id=v, expected=0, new=1
    )
    assert (moved.name, moved.volume_id, moved.counter) == ("data", v, 1)
    moved = await kms.workload.advance_volume_counter(
        session, "data", volume_id=v, expected=1, new=7
    )
    assert moved.counter == 7
    # A restart: a new attestation, a new key and token, the same record.
    again = await kms.workload.volume_counter(await session_for(kms), "data")
    assert (again.volume_id, again.counter) == (v, 7)

    ok = [r for r in await records(kms, "volume.counter") if r["outcome"] == "ok"]
    assert [(r["details"]["old"], r["details"]["new"]) for r in ok] == [(0, 1), (1, 7)]
    for r in ok:
        assert r["subject"] == "data" and r["actor"] == MEAS_A.hex()
        assert r["details"]["volume_id"] == v
        assert r["details"]["workload"] == MEAS_A.hex()
        assert r["details"]["jti"]
    await assert_chain_verifies(kms)


async def test_a_stale_expected_counter_is_a_rollback(kms_any: KmsHarness) -> None:
    kms = kms_any
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    v = vid()
    await kms.workload.advance_volume_counter(session, "data", volume_id=v, expected=0, new=5)
    # An older copy of the volume (counter 3) is put back by the host.
    with pytest.raises(RollbackDetected) as caught:
        await kms.workload.advance_volume_counter(session, "data", volume_id=v, expected=3, new=4)
    assert (caught.value.volume_id, caught.value.counter) == (v, 5)
    assert caught.value.exit_code == 15
    assert "counter 5" in caught.value.message and "expected 3" in caught.value.message
    # A fresh volume in the place of a used one: expected 0, but the KMS has a record.
    with pytest.raises(RollbackDetected):
        await kms.workload.advance_volume_counter(session, "data", volume_id=v, expected=0, new=1)
    held = await kms.workload.volume_counter(session, "data")
    assert held.counter == 5  # nothing moved

    r = await kms.http.post(
        PATH,
        json={"volume_id": v, "expected": 4, "new": 6},
        headers=signed(kms, session, "POST"),
    )
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["code"], body["volume_id"], body["counter"]) == ("kms.volume_rollback", v, 5)

    refused = [r for r in await records(kms, "volume.counter") if r["outcome"] == "refused"]
    assert len(refused) == 3
    assert refused[0]["details"]["codes"] == ["volume_rollback"]
    assert refused[0]["details"]["stored_counter"] == 5
    assert (refused[0]["details"]["old"], refused[0]["details"]["new"]) == (3, 4)
    await assert_chain_verifies(kms)


async def test_a_foreign_volume_id_is_refused_even_at_the_right_counter(
    kms_any: KmsHarness,
) -> None:
    kms = kms_any
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    mine, other = vid(), vid()
    await kms.workload.advance_volume_counter(session, "data", volume_id=mine, expected=0, new=2)
    with pytest.raises(RollbackDetected, match="registered as volume") as caught:
        await kms.workload.advance_volume_counter(
            session, "data", volume_id=other, expected=2, new=3
        )
    assert caught.value.volume_id == mine
    assert (await kms.workload.volume_counter(session, "data")).volume_id == mine


async def test_expected_above_zero_for_an_unknown_volume_is_refused(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    with pytest.raises(RollbackDetected, match="no counter in the KMS") as caught:
        await kms.workload.advance_volume_counter(
            session, "data", volume_id=vid(), expected=4, new=5
        )
    assert (caught.value.volume_id, caught.value.counter) == (None, 0)


@pytest.mark.parametrize("expected", [0, 3])
async def test_of_two_racing_swaps_exactly_one_wins(kms_any: KmsHarness, expected: int) -> None:
    """Two workloads swap from the same expected value at once (worker threads, as the server
    runs them): one moves the counter, the other is told what it moved to."""
    kms = kms_any
    await kms.put_policy("workload-a", VOLUME_POLICY)
    sessions = [await session_for(kms) for _ in range(2)]
    v = vid()
    if expected:
        await kms.workload.advance_volume_counter(
            sessions[0], "data", volume_id=v, expected=0, new=expected
        )
    for _round in range(3):
        held = (await kms.workload.volume_counter(sessions[0], "data")).counter
        outcomes = await asyncio.gather(
            *(
                kms.workload.advance_volume_counter(
                    s, "data", volume_id=v, expected=held, new=held + 1 + i
                )
                for i, s in enumerate(sessions)
            ),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, VolumeCounter)]
        lost = [o for o in outcomes if isinstance(o, RollbackDetected)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0].counter == won[0].counter
        assert (await kms.workload.volume_counter(sessions[1], "data")).counter == won[0].counter
    await assert_chain_verifies(kms)


@pytest.mark.parametrize("expected", [0, 3])
def test_a_swap_waiting_on_an_uncommitted_one_loses(kms_store: Store, expected: int) -> None:
    """The database decides, not the process: transaction A swaps and holds its commit while
    B, on another connection, swaps from the same expected value; B waits, then loses and
    reads A's record (PostgreSQL: row lock and re-check; SQLite: one writer at a time)."""
    v = vid()
    if expected:
        with kms_store.transaction() as tx:
            assert (
                swap_counter(tx, name="n", volume_id=v, expected=0, new=expected, now_ms=1) is None
            )
    a_swapped, b_started = threading.Event(), threading.Event()
    result: list[CounterRecord | None] = []

    def b() -> None:
        b_started.set()
        with kms_store.transaction() as tx:
            result.append(
                swap_counter(
                    tx, name="n", volume_id=v, expected=expected, new=expected + 2, now_ms=2
                )
            )

    with kms_store.transaction() as tx:
        assert (
            swap_counter(tx, name="n", volume_id=v, expected=expected, new=expected + 1, now_ms=2)
            is None
        )
        thread = threading.Thread(target=b)
        thread.start()
        assert b_started.wait(5)
        time.sleep(0.3)  # B is blocked on A's row (or on the one writer) meanwhile
        assert result == []
        a_swapped.set()
    thread.join(10)
    assert result == [CounterRecord(name="n", volume_id=v, counter=expected + 1)]
    with kms_store.read() as tx:
        assert get_counter(tx, "n") == CounterRecord(name="n", volume_id=v, counter=expected + 1)


# -- authentication and authorization ------------------------------------------------------------
async def test_no_token_or_no_proof_is_401(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    for headers in (
        {},
        {"Authorization": f"Bearer {session.token}"},
        {"DPoP": signed(kms, session)["DPoP"]},
        {"Authorization": "Basic abc", "DPoP": signed(kms, session)["DPoP"]},
    ):
        for method in ("GET", "POST"):
            body = {"volume_id": vid(), "expected": 0, "new": 1} if method == "POST" else None
            r = await kms.http.request(method, PATH, headers=headers, json=body)
            assert r.status_code == 401, (headers.keys(), method, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
    assert (await kms.workload.volume_counter(session, "data")).counter == 0  # nothing moved


async def test_a_wrong_or_forged_token_is_401(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    other = await session_for(kms)
    # Another session's proof with this token: the proof's key is not the token's.
    mixed = {"Authorization": f"Bearer {session.token}", "DPoP": signed(kms, other)["DPoP"]}
    assert (await kms.http.get(PATH, headers=mixed)).status_code == 401
    # A token with one signature byte changed.
    head, payload, sig = session.token.split(".")
    forged_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    forged = AttestedSession(
        token=f"{head}.{payload}.{forged_sig}",
        key=session.key,
        secrets=session.secrets,
        policies=session.policies,
        expires_at_unix=session.expires_at_unix,
        claims=session.claims,
    )
    with pytest.raises(KmsAuthError):
        await kms.workload.volume_counter(forged, "data")
    # A proof for the GET does not do for the POST, nor for another volume's path.
    body = {"volume_id": vid(), "expected": 0, "new": 1}
    assert (await kms.http.post(PATH, json=body, headers=signed(kms, session))).status_code == 401
    other_path = signed(kms, session, "POST", "/v1/volumes/logs/counter")
    assert (await kms.http.post(PATH, json=body, headers=other_path)).status_code == 401
    # An expired token.
    kms.clock.advance(3600)
    with pytest.raises(KmsAuthError):
        await kms.workload.volume_counter(session, "data")


async def test_a_token_without_the_volume_key_grant_is_403_and_audited(kms: KmsHarness) -> None:
    # The policy releases db-password but not volume.data.
    session = await session_for(kms)
    with pytest.raises(KmsForbidden):
        await kms.workload.volume_counter(session, "data")
    with pytest.raises(KmsForbidden):
        await kms.workload.advance_volume_counter(
            session, "data", volume_id=vid(), expected=0, new=1
        )
    # Granting volume.data does not grant another volume's counter.
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    with pytest.raises(KmsForbidden):
        await kms.workload.volume_counter(session, "logs")
    refused = [r for r in await records(kms, "volume.counter") if r["outcome"] == "refused"]
    assert [r["subject"] for r in refused] == ["volume.data", "volume.data", "volume.logs"]
    assert all(r["details"]["codes"] == ["secret_not_released"] for r in refused)
    await assert_chain_verifies(kms)


async def test_another_workload_cannot_move_the_counter(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    await kms.put_policy("workload-b", policy_toml(measurements=[MEAS_B], secrets=["db-password"]))
    b = await session_for(kms, MEAS_B)
    with pytest.raises(KmsForbidden):
        await kms.workload.advance_volume_counter(b, "data", volume_id=vid(), expected=0, new=1)


async def test_a_replayed_proof_is_refused_by_reads_and_counters_alike(kms: KmsHarness) -> None:
    """A proof is accepted once (issue 17 item 7): its jti is recorded in the request's own
    transaction, so a replay within PROOF_MAX_AGE_SECS is a 401 for a secret read and for a
    counter request alike, and audited as proof_replayed."""
    await kms.put_policy("workload-a", VOLUME_POLICY + "")
    await kms.put_policy("vol", policy_toml(secrets=["volume.data"]))
    session = await session_for(kms)
    v = vid()
    secret_path = "/v1/secrets/db-password"
    read = signed(kms, session, "GET", secret_path)
    get = signed(kms, session)
    post = signed(kms, session, "POST")
    body = {"volume_id": v, "expected": 0, "new": 1}
    assert (await kms.http.get(secret_path, headers=read)).status_code == 200
    assert (await kms.http.get(PATH, headers=get)).status_code == 200
    assert (await kms.http.post(PATH, json=body, headers=post)).status_code == 200
    for method, path, headers in (("GET", secret_path, read), ("GET", PATH, get),
                                  ("POST", PATH, post)):  # fmt: skip
        replayed = await kms.http.request(method, path, json=body, headers=headers)
        assert replayed.status_code == 401 and "replay" in replayed.json()["detail"]
    codes = [r["details"].get("codes") for r in await kms.audit() if r["outcome"] == "refused"]
    assert codes.count(["proof_replayed"]) == 3
    kms.clock.advance(121)
    assert (await kms.http.get(secret_path, headers=read)).status_code == 401
    assert (await kms.http.get(PATH, headers=get)).status_code == 401


async def test_removing_the_policy_stops_a_held_token_moving_the_counter(
    kms: KmsHarness,
) -> None:
    """Issue 17 item 2 for counters: the grant of volume.<name> is re-checked against the
    live policies in the counter's own transaction."""
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    v = vid()
    await kms.workload.advance_volume_counter(session, "data", volume_id=v, expected=0, new=1)
    r = await kms.http.delete("/v1/admin/policies/workload-a", headers=kms.auth())
    assert r.status_code == 204
    with pytest.raises(KmsForbidden, match="no longer released"):
        await kms.workload.advance_volume_counter(session, "data", volume_id=v, expected=1, new=2)
    with pytest.raises(KmsForbidden, match="no longer released"):
        await kms.workload.volume_counter(session, "data")
    refused = [r for r in await records(kms, "volume.counter") if r["outcome"] == "refused"]
    assert [r["details"]["codes"] for r in refused] == [["policy_revoked"]] * 2


# -- malformed requests --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"volume_id": "AB" * 16, "expected": 0, "new": 1},  # uppercase
        {"volume_id": "ab" * 15, "expected": 0, "new": 1},  # short
        {"volume_id": "zz" * 16, "expected": 0, "new": 1},
        {"volume_id": "ab" * 16, "expected": 2, "new": 2},  # does not increase
        {"volume_id": "ab" * 16, "expected": 3, "new": 1},
        {"volume_id": "ab" * 16, "expected": -1, "new": 1},
        {"volume_id": "ab" * 16, "expected": 0, "new": 2**63},  # past a signed 64-bit column
        {"volume_id": "ab" * 16, "expected": "0", "new": 1},  # strict: no strings
        {"volume_id": "ab" * 16, "expected": False, "new": 1},
        {"volume_id": "ab" * 16, "expected": 0},
        {"volume_id": "ab" * 16, "expected": 0, "new": 1, "extra": 1},
        [],
    ],
)
async def test_malformed_swaps_are_400(kms: KmsHarness, body: Any) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    r = await kms.http.post(PATH, json=body, headers=signed(kms, session, "POST"))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "malformed"
    assert (await kms.workload.volume_counter(session, "data")).counter == 0


@pytest.mark.parametrize("name", ["-x", "a/b", "x" * 122, "a b", ".."])
async def test_bad_volume_names_never_reach_the_store(kms: KmsHarness, name: str) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    with pytest.raises(ConfigError, match="volume name"):
        await kms.workload.volume_counter(session, name)
    path = f"/v1/volumes/{name}/counter"
    r = await kms.http.get(path, headers=signed(kms, session, path=path))
    assert r.status_code in (400, 404), r.text


@pytest.mark.parametrize(
    ("volume_id", "expected", "new"), [("AB" * 16, 0, 1), ("ab" * 16, 1, 1), ("ab", 0, 1)]
)
async def test_the_client_checks_a_swap_before_sending_it(
    kms: KmsHarness, volume_id: str, expected: int, new: int
) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    session = await session_for(kms)
    with pytest.raises(ConfigError, match="volume counter"):
        await kms.workload.advance_volume_counter(
            session, "data", volume_id=volume_id, expected=expected, new=new
        )


# -- volume keys generated at the first release --------------------------------------------------
GENERATING_POLICY = policy_toml(secrets=["db-password", "volume.data"], extra="").replace(
    "[release]\n", "[release]\ngenerate_volume_keys = true\n"
)


async def test_a_missing_volume_key_is_refused_without_the_policy_flag(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", VOLUME_POLICY)
    with pytest.raises(AttestationRefused) as caught:
        await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.data"])
    assert [getattr(f, "code", None) for f in caught.value.violations] == ["secret_missing"]
    r = await kms.http.get("/v1/admin/secrets", headers=kms.auth())
    assert "volume.data" not in [s["name"] for s in r.json()]
    assert await records(kms, "secret.generate") == []


async def test_the_policy_flag_generates_the_key_once(kms_any: KmsHarness) -> None:
    kms = kms_any
    await kms.put_policy("workload-a", GENERATING_POLICY)
    first = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password", "volume.data"])
    key = first["volume.data"]
    assert key.version == 1 and len(key.value) == 32
    again = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.data"])
    assert again["volume.data"].value == key.value  # generated once, then released

    generated = await records(kms, "secret.generate")
    assert len(generated) == 1
    g = generated[0]
    assert (g["subject"], g["actor"], g["outcome"]) == ("volume.data", MEAS_A.hex(), "ok")
    assert g["details"]["kind"] == "bytes" and g["details"]["size"] == 32
    releases = [r for r in await records(kms, "secret.release") if r["subject"] == "volume.data"]
    assert len(releases) == 2
    assert g["details"]["jti"] == releases[0]["details"]["jti"]
    assert base64.b64encode(key.value).decode() not in str(await kms.audit())

    info = await kms.http.get("/v1/admin/secrets/volume.data/versions", headers=kms.auth())
    assert [v["version"] for v in info.json()] == [1]
    value = await kms.http.get("/v1/admin/secrets/volume.data/value", headers=kms.auth())
    assert base64.b64decode(value.json()["value"]) == key.value
    await assert_chain_verifies(kms)


async def test_the_flag_generates_only_volume_keys_it_grants(kms: KmsHarness) -> None:
    await kms.put_policy("workload-a", GENERATING_POLICY)
    # A non-volume secret that is missing is still missing.
    await kms.put_policy(
        "workload-a",
        GENERATING_POLICY.replace('"volume.data"', '"volume.data", "plain-missing"'),
    )
    with pytest.raises(AttestationRefused) as caught:
        await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.data", "plain-missing"])
    assert [getattr(f, "code", None) for f in caught.value.violations] == ["secret_missing"]
    assert getattr(caught.value.violations[0], "actual", None) == "plain-missing"
    # A volume key the policy does not grant is refused, and not made.
    with pytest.raises(AttestationRefused) as caught:
        await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.logs", "volume.data"])
    assert [getattr(f, "code", None) for f in caught.value.violations] == ["secret_not_released"]
    names = [
        s["name"] for s in (await kms.http.get("/v1/admin/secrets", headers=kms.auth())).json()
    ]
    assert "volume.logs" not in names
    # Generated before the refusal of plain-missing: kept, and its record says so.
    assert [r["subject"] for r in await records(kms, "secret.generate")] == ["volume.data"]


async def test_concurrent_first_releases_make_one_key(kms_any: KmsHarness) -> None:
    kms = kms_any
    await kms.put_policy("workload-a", GENERATING_POLICY)
    answers = await asyncio.gather(
        *(kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.data"]) for _ in range(4))
    )
    assert len({a["volume.data"].value for a in answers}) == 1
    assert len(await records(kms, "secret.generate")) == 1


async def test_admin_put_generates_a_volume_key(kms: KmsHarness) -> None:
    r = await kms.http.put(
        "/v1/admin/secrets/volume.data", json={"generate": "bytes:32"}, headers=kms.auth()
    )
    assert r.status_code == 201, r.text
    await kms.put_policy("workload-a", VOLUME_POLICY)
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["volume.data"])
    assert len(got["volume.data"].value) == 32


async def test_the_policy_flag_is_validated(kms: KmsHarness) -> None:
    bad = GENERATING_POLICY.replace("generate_volume_keys = true", 'generate_volume_keys = "yes"')
    r = await kms.http.put("/v1/admin/policies/bad", json={"document": bad}, headers=kms.auth())
    assert r.status_code == 400 and "generate_volume_keys" in r.text


async def test_openapi_describes_the_counter_routes(kms: KmsHarness) -> None:
    doc = (await kms.http.get("/openapi.json")).json()
    ops = doc["paths"]["/v1/volumes/{name}/counter"]
    assert set(ops) == {"get", "post"}
    assert {p["name"] for p in ops["get"]["parameters"]} >= {"name", "Authorization", "DPoP"}
