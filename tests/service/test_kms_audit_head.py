"""The audit log's tail (issue 17 item 3): a cut tail is found with or without the head row
rewound, a forged head is found, and the server signs a checkpoint only of an intact head.
Rolling the whole database back to an old copy of itself is found only against a head kept
outside (the pure cases are in test_kms_audit.py; the CLI in tests/e2e/test_kms_audit_cli.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text

from sealpod.errors import CheckpointInvalid
from sealpod.kms.audit import AuditRecord, verify_chain
from sealpod.kms.checkpoint import sign_checkpoint, verify_checkpoint
from sealpod.kms.tokens import TokenSigner

if TYPE_CHECKING:
    from kms_harness import KmsHarness

pytest_plugins = ["kms_harness"]
pytestmark = pytest.mark.anyio


async def _verify(kms: KmsHarness) -> dict[str, object]:
    r = await kms.http.get("/v1/admin/audit/verify", headers=kms.auth())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _codes(report: dict[str, object]) -> set[str]:
    problems = report["problems"]
    assert isinstance(problems, list)
    return {p["code"] for p in problems}


def _cut_tail(kms: KmsHarness, keep: int, *, rewind: bool) -> None:
    with kms.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM kms_audit WHERE seq > :k"), {"k": keep})
        if rewind:  # the head now names the new last record, as an appender would have left it
            last = conn.execute(text("SELECT hash FROM kms_audit WHERE seq = :k"), {"k": keep})
            conn.execute(
                text("UPDATE kms_audit_head SET seq = :k, hash = :h"),
                {"k": keep, "h": last.scalar_one()},
            )


async def test_tail_cut_without_rewind_is_truncated(kms_any: KmsHarness) -> None:
    _cut_tail(kms_any, 3, rewind=False)
    report = await _verify(kms_any)
    assert report["ok"] is False and "truncated" in _codes(report)
    assert report["checkpoint"] is None


async def test_tail_cut_with_the_head_rewound_fails_the_head_mac(kms_any: KmsHarness) -> None:
    # Before the head had a MAC, this passed: every record links, the head names the last one.
    _cut_tail(kms_any, 3, rewind=True)
    report = await _verify(kms_any)
    assert report["ok"] is False and _codes(report) == {"head_mac"}
    assert report["checkpoint"] is None


@pytest.mark.parametrize("column", ["seq", "hash", "mac"])
async def test_a_forged_head_is_found(kms: KmsHarness, column: str) -> None:
    value = {"seq": 99, "hash": b"\x01" * 32, "mac": b"\x02" * 32}[column]
    with kms.store.engine.begin() as conn:
        conn.execute(text(f"UPDATE kms_audit_head SET {column} = :v"), {"v": value})
    assert "head_mac" in _codes(await _verify(kms))


async def test_a_record_mac_copied_into_the_head_is_found(kms: KmsHarness) -> None:
    with kms.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM kms_audit WHERE seq > 3"))
        row = conn.execute(text("SELECT hash, mac FROM kms_audit WHERE seq = 3")).one()
        conn.execute(
            text("UPDATE kms_audit_head SET seq = 3, hash = :h, mac = :m"),
            {"h": row.hash, "m": row.mac},
        )
    assert _codes(await _verify(kms)) == {"head_mac"}


async def test_an_intact_log_gets_a_signed_checkpoint_of_its_head(kms: KmsHarness) -> None:
    report = await _verify(kms)
    assert report["ok"] is True
    jwks = (await kms.http.get("/v1/jwks")).json()["keys"]
    checkpoint = verify_checkpoint(str(report["checkpoint"]), jwks)
    assert (checkpoint.seq, checkpoint.hash.hex()) == (report["last_seq"], report["last_hash"])
    assert checkpoint.records == report["records"]
    # Not a token: the secret routes refuse it as a bearer token.
    r = await kms.http.get(
        "/v1/secrets/db-password", headers={"Authorization": f"Bearer {report['checkpoint']}"}
    )
    assert r.status_code == 401


async def test_a_rollback_to_an_old_copy_needs_the_kept_head(kms: KmsHarness) -> None:
    # A checkpoint kept, then more records; an attacker restores the old rows *and* the old
    # head row with its MAC (a database backup). The log is consistent; the kept head is not
    # in it.
    with kms.store.engine.begin() as conn:
        old = conn.execute(text("SELECT seq, hash, mac FROM kms_audit_head")).one()
    await kms.put_secret("after-the-backup", b"x")
    kept = await _verify(kms)
    kept_head = (int(str(kept["last_seq"])), bytes.fromhex(str(kept["last_hash"])))
    with kms.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM kms_audit WHERE seq > :s"), {"s": old.seq})
        conn.execute(
            text("UPDATE kms_audit_head SET seq = :s, hash = :h, mac = :m"),
            {"s": old.seq, "h": old.hash, "m": old.mac},
        )
    assert (await _verify(kms))["ok"] is True  # what the database alone can show
    page = (await kms.http.get("/v1/admin/audit", headers=kms.auth())).json()
    records = [AuditRecord.from_json(r) for r in page["records"]]
    head = (page["head_seq"], bytes.fromhex(page["head_hash"]))
    found = verify_chain(records, head=head, expect=kept_head)
    assert {p.code for p in found.problems} == {"expected_head"}
    # A stale checkpoint (older than the head) is a prefix of the log, and passes.
    stale = (old.seq, bytes(old.hash))
    assert verify_chain(records, head=head, expect=stale).ok


def test_checkpoint_refusals() -> None:
    from datetime import UTC, datetime

    signer, other = TokenSigner(TokenSigner.generate_key()), TokenSigner(TokenSigner.generate_key())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    good = sign_checkpoint(signer, seq=5, digest=b"\x07" * 32, records=5, now=now)
    assert verify_checkpoint(good, signer.public_jwks()).head == f"5:{'07' * 32}"
    with pytest.raises(CheckpointInvalid, match="not in the given JWKS"):
        verify_checkpoint(good, other.public_jwks())
    head, body, sig = good.split(".")
    with pytest.raises(CheckpointInvalid):
        verify_checkpoint(f"{head}.{body[:-4]}AAAA.{sig}", signer.public_jwks())
    token, _ = signer.issue(
        jkt="x", subject="s", secrets_granted=["a"], policies=["p"], claims={}, now=now,
        ttl_secs=60,
    )  # fmt: skip
    with pytest.raises(CheckpointInvalid, match="typ/alg"):  # a token is not a checkpoint
        verify_checkpoint(token, signer.public_jwks())
    for junk in ("", "a.b.c", "x" * 20000):
        with pytest.raises(CheckpointInvalid):
            verify_checkpoint(junk, signer.public_jwks())
    with pytest.raises(CheckpointInvalid, match="not a P-256"):
        verify_checkpoint(good, [{"kty": "oct", "k": "AAAA"}])
