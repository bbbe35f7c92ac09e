"""Replacing the master key (``sealpod.kms.rekey``): every secret, internal key and audit
record moves to the new key in one transaction; tampered state and wrong keys are refused with
nothing changed; a server left running on the old key seals itself instead of writing."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import pytest
from kms_data import MEAS_A, SECRET_VALUES
from sqlalchemy import text

from sealpod.errors import ConfigError, CryptoError, KmsKeyChanged, KmsUnavailable
from sealpod.kms.audit import AuditEntry
from sealpod.kms.keys import MasterKey
from sealpod.kms.rekey import AuditChainBroken, rekey
from sealpod.kms.state import SealState, initialize
from sealpod.kms.store import Store

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


def key_check(kms: KmsHarness) -> str:
    with kms.store.read() as tx:
        return str(tx.get_meta("key_check"))


async def test_rekey_keeps_every_secret_and_the_audit_log(
    kms_any: KmsHarness, kms_process: Any
) -> None:
    kms = kms_any
    # a second version, so more than current versions move
    r = await kms.http.post(
        "/v1/admin/secrets/api-key/rotate",
        json={"value": base64.b64encode(b"api key v2").decode()},
        headers=kms.auth(),
    )
    assert r.status_code == 200, r.text
    new = MasterKey.generate()
    result = rekey(kms.store, kms.master, new)
    assert result.versions == 4 and result.internal_keys == 2 and result.audit_records > 5
    assert result.old_key_id == kms.master.key_id and result.new_key_id == new.key_id
    with pytest.raises(ConfigError, match="not this KMS's master key"):
        SealState(kms.store).check_key(kms.master)
    async with kms_process(kms, new) as after:
        got = await after.workload.fetch_secrets(after.backend(), MEAS_A, ["db-password"])
        assert got["db-password"].value == SECRET_VALUES["db-password"]
        for name, version, value in (("api-key", 1, SECRET_VALUES["api-key"]),
                                     ("api-key", 2, b"api key v2"),
                                     ("other", 1, SECRET_VALUES["other"])):  # fmt: skip
            r = await after.http.get(
                f"/v1/admin/secrets/{name}/value", params={"version": version}, headers=kms.auth()
            )
            assert r.status_code == 200, r.text
            assert base64.b64decode(r.json()["value"]) == value
        verify = (await after.http.get("/v1/admin/audit/verify", headers=kms.auth())).json()
        assert verify["ok"] is True and verify["macs_checked"] is True, verify
        records = await after.audit()
        rekeyed = [r for r in records if r["kind"] == "kms.rekey"]
        assert len(rekeyed) == 1 and rekeyed[0]["subject"] == new.key_id
        assert rekeyed[0]["details"]["old_key_id"] == kms.master.key_id


async def test_a_server_left_on_the_old_key_seals_itself(
    kms_any: KmsHarness, kms_process: Any
) -> None:
    kms = kms_any
    new = MasterKey.generate()
    rekey(kms.store, kms.master, new)
    # An admin write: refused with 503 kms.key_changed, nothing written under the old key.
    r = await kms.http.put("/v1/admin/secrets/late", json={"value": "bGF0ZQ=="}, headers=kms.auth())
    assert r.status_code == 503 and r.json()["code"] == "kms.key_changed", r.text
    status = (await kms.http.get("/v1/sys/status")).json()
    assert status["sealed"] is True
    r = await kms.http.post("/v1/attestation/challenge", json={"tee": "sgx"})
    assert r.status_code == 503 and r.json()["code"] == "kms.sealed"
    async with kms_process(kms, new) as after:
        r = await after.http.get("/v1/admin/secrets", headers=kms.auth())
        assert "late" not in {s["name"] for s in r.json()}
        verify = (await after.http.get("/v1/admin/audit/verify", headers=kms.auth())).json()
        assert verify["ok"] is True, verify


async def test_an_attestation_on_the_old_key_is_503_not_a_refusal(kms: KmsHarness) -> None:
    body, _ = await kms.attestation_body(release=["db-password"])
    rekey(kms.store, kms.master, MasterKey.generate())
    r = await kms.http.post("/v1/attestation", json=body)
    # Not 403 (the evidence is fine) and not 500 (nothing is tampered): the server is stale.
    assert r.status_code == 503 and r.json()["code"] == "kms.key_changed", r.text


async def test_rekey_to_shares_then_unseal_with_them(kms: KmsHarness, kms_process: Any) -> None:
    new = MasterKey.generate()
    result = rekey(kms.store, kms.master, new, shares=5, threshold=3)
    assert result.mode == "shamir" and len(result.shares) == 5
    assert "share" not in repr(result).lower().replace("shares=", "")
    async with kms_process(kms, None) as after:
        status = (await after.http.get("/v1/sys/status")).json()
        assert status["sealed"] is True and status["mode"] == "shamir" and status["threshold"] == 3
        for share in result.shares[1:4]:
            r = await after.http.post("/v1/sys/unseal", json={"share": share.to_text()})
            assert r.status_code == 200, r.text
        assert (await after.http.get("/v1/sys/status")).json()["sealed"] is False
        got = await after.workload.fetch_secrets(after.backend(), MEAS_A, ["api-key"])
        assert got["api-key"].value == SECRET_VALUES["api-key"]


# -- refusals: nothing changes ---------------------------------------------------------------------
async def test_refuses_a_wrong_current_key(kms: KmsHarness) -> None:
    before = key_check(kms)
    with pytest.raises(ConfigError, match="not this KMS's key"):
        rekey(kms.store, MasterKey.generate(), MasterKey.generate())
    assert key_check(kms) == before


async def test_refuses_the_same_key(kms: KmsHarness) -> None:
    with pytest.raises(ConfigError, match="is the current one"):
        rekey(kms.store, kms.master, MasterKey(kms.master.raw))


async def test_refuses_a_tampered_audit_log_and_changes_nothing(kms: KmsHarness) -> None:
    before = key_check(kms)
    with kms.store.transaction() as tx:
        tx.c.execute(text("UPDATE kms_audit SET subject = 'mallory' WHERE seq = 2"))
    with pytest.raises(AuditChainBroken, match="edited at seq 2") as info:
        rekey(kms.store, kms.master, MasterKey.generate())
    assert info.value.code == "kms.audit_broken"
    assert key_check(kms) == before
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password"])
    assert got["db-password"].value == SECRET_VALUES["db-password"]


async def test_refuses_a_tampered_data_key_and_changes_nothing(kms: KmsHarness) -> None:
    before = key_check(kms)
    with kms.store.transaction() as tx:
        row = tx.c.execute(
            text("SELECT wrapped_key FROM kms_secret_versions WHERE name = 'other'")
        ).one()
        flipped = bytes(row.wrapped_key[:-1]) + bytes([row.wrapped_key[-1] ^ 1])
        tx.c.execute(
            text("UPDATE kms_secret_versions SET wrapped_key = :k WHERE name = 'other'"),
            {"k": flipped},
        )
    with pytest.raises(CryptoError, match="'other' version 1") as info:
        rekey(kms.store, kms.master, MasterKey.generate())
    assert SECRET_VALUES["other"].hex() not in str(info.value)
    assert key_check(kms) == before
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["api-key"])
    assert got["api-key"].value == SECRET_VALUES["api-key"]


async def test_refuses_bad_share_parameters(kms: KmsHarness) -> None:
    with pytest.raises(ConfigError):
        rekey(kms.store, kms.master, MasterKey.generate(), shares=2, threshold=3)


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("UPDATE kms_audit SET outcome = 'refused' WHERE seq = 23", "edited at seq 23"),
        ("DELETE FROM kms_audit WHERE seq = (SELECT MAX(seq) FROM kms_audit)", "truncated"),
        ("DELETE FROM kms_audit WHERE seq = 15", "gap at seq 16"),
    ],
)
async def test_a_problem_on_a_later_page_refuses_the_whole_rekey(
    kms: KmsHarness, monkeypatch: pytest.MonkeyPatch, tamper: str, problem: str
) -> None:
    import sealpod.kms.rekey as rekey_module

    monkeypatch.setattr(rekey_module, "_PAGE", 4)  # the log spans several pages
    entries = [
        AuditEntry(ts_ms=i, kind="secret.release", actor="w", subject="db-password", outcome="ok")
        for i in range(20)
    ]
    with kms.store.transaction() as tx:
        assert tx.append_audit_many(entries, mac=kms.master.audit_mac)[-1].seq > 25
    with kms.store.transaction() as tx:
        macs_before = [bytes(r.mac) for r in tx.c.execute(text("SELECT mac FROM kms_audit"))]
        tx.c.execute(text(tamper))
    before = key_check(kms)
    with pytest.raises(AuditChainBroken, match=problem):
        rekey(kms.store, kms.master, MasterKey.generate())
    assert key_check(kms) == before
    with kms.store.read() as tx:
        macs_after = [bytes(r.mac) for r in tx.c.execute(text("SELECT mac FROM kms_audit"))]
    assert set(macs_after) <= set(macs_before)  # the pages before the problem were rolled back


async def test_damaged_audit_details_refuse_the_rekey(kms: KmsHarness) -> None:
    before = key_check(kms)
    with kms.store.transaction() as tx:
        tx.c.execute(text("UPDATE kms_audit SET details = '{' WHERE seq = 3"))
    with pytest.raises(AuditChainBroken, match="damaged"):
        rekey(kms.store, kms.master, MasterKey.generate())
    assert key_check(kms) == before


async def test_a_failing_before_commit_hook_rolls_everything_back(kms: KmsHarness) -> None:
    before = key_check(kms)
    seen: list[int] = []

    def lose_the_shares(parts: tuple[Any, ...]) -> None:
        seen.append(len(parts))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        rekey(kms.store, kms.master, MasterKey.generate(), shares=3, threshold=2,
              before_commit=lose_the_shares)  # fmt: skip
    assert seen == [3] and key_check(kms) == before
    got = await kms.workload.fetch_secrets(kms.backend(), MEAS_A, ["db-password"])
    assert got["db-password"].value == SECRET_VALUES["db-password"]


async def test_a_read_on_the_old_key_is_503_and_seals(kms: KmsHarness) -> None:
    session = await kms.workload.attest(kms.backend(), MEAS_A)
    rekey(kms.store, kms.master, MasterKey.generate())
    with pytest.raises(KmsUnavailable, match=r"kms\.key_changed"):
        await kms.workload.fetch(session, "db-password")  # not a 500 "crypto" (tampering)
    assert (await kms.http.get("/v1/sys/status")).json()["sealed"] is True
    r = await kms.http.get("/v1/admin/secrets/db-password/value", headers=kms.auth())
    assert r.status_code == 503


async def test_a_rekey_racing_an_unseal_seals_without_deadlock(
    kms: KmsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import sealpod.kms.state as state_module

    state = kms.app.state.kms_state
    state.seal()
    real_load = state_module._load_keys

    def load_then_rekey(tx: Any, master: MasterKey) -> Any:
        keys = real_load(tx, master)
        rekey(kms.store, kms.master, MasterKey.generate())  # commits between check and audit
        return keys

    monkeypatch.setattr(state_module, "_load_keys", load_then_rekey)
    outcome: list[BaseException | None] = []

    def unseal() -> None:
        try:
            state.unseal_with_key(kms.master)
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    worker = threading.Thread(target=unseal, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "unseal deadlocked"
    assert isinstance(outcome[0], KmsKeyChanged) and state.sealed
    state.seal()  # the lock is free again


def test_a_second_concurrent_rekey_is_told_wrong_key_not_tampering(kms_store: Store) -> None:
    """Rekey B starts while A holds the audit head: B waits, then reads the key-check value A
    committed and refuses with "not this KMS's key" (it read it before the lock, it would
    verify MACs made by A's key and cry tampering)."""
    import threading

    old = MasterKey.generate()
    initialize(kms_store, old)
    a_inside, b_started = threading.Event(), threading.Event()

    def slow_progress(phase: str, done: int, total: int) -> None:
        if phase == "audit" and not a_inside.is_set():
            a_inside.set()
            b_started.wait(timeout=10)
            time.sleep(0.5)  # B is now blocked on the head lock (or the SQLite writer lock)

    outcome: list[BaseException | None] = []

    def rekey_b() -> None:
        a_inside.wait(timeout=10)
        b_started.set()
        try:
            rekey(kms_store, old, MasterKey.generate())
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    b = threading.Thread(target=rekey_b)
    b.start()
    rekey(kms_store, old, MasterKey.generate(), progress=slow_progress)
    b.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError), outcome
    assert "not this KMS's key" in str(outcome[0])
