"""The hash chain catches an edited, removed, reordered or re-hashed record."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.kms.audit import AuditRecord, chain_record, verify_chain
from sealpod.kms.keys import MasterKey

KEY = MasterKey(bytes(range(32)))


def make_chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    seq, prev = 0, bytes(32)
    for i in range(n):
        rec = chain_record(
            seq, prev, ts_ms=1000 + i, kind="secret.put", actor="alice", subject=f"s{i}",
            outcome="ok", details={"version": i, "codes": ("a", "b")}, mac=KEY.audit_mac,
        )  # fmt: skip
        out.append(rec)
        seq, prev = rec.seq, rec.hash
    return out


def codes(records: list[AuditRecord], **kw: object) -> set[str]:
    report = verify_chain(records, mac=KEY.audit_mac, **kw)  # type: ignore[arg-type]
    return {p.code for p in report.problems}


def test_intact_chain_verifies() -> None:
    chain = make_chain(5)
    report = verify_chain(chain, mac=KEY.audit_mac, head=(5, chain[-1].hash))
    assert report.ok and report.records == 5 and report.last_seq == 5 and report.macs_checked


def test_edited_record_is_detected() -> None:
    chain = make_chain(5)
    chain[2] = replace(chain[2], subject="other")
    assert "edited" in codes(chain)


def test_edited_and_rehashed_record_breaks_next_link_and_mac() -> None:
    chain = make_chain(5)
    edited = replace(chain[2], outcome="refused")
    chain[2] = replace(edited, hash=edited.compute_hash())
    found = codes(chain)
    assert "mac" in found and "broken_link" in found


def test_rewritten_chain_without_the_key_fails_the_mac() -> None:
    # An attacker re-hashes every record from the edit on, with a key they made up.
    chain = make_chain(4)
    forged: list[AuditRecord] = chain[:1]
    other = MasterKey.generate()
    for rec in chain[1:]:
        body = replace(rec, actor="mallory", prev_hash=forged[-1].hash)
        h = body.compute_hash()
        forged.append(replace(body, hash=h, mac=other.audit_mac(h)))
    assert codes(forged) == {"mac"}
    assert verify_chain(forged).ok  # without the key only the structure can be checked


def test_removed_record_is_detected() -> None:
    chain = make_chain(5)
    del chain[2]
    assert {"gap", "broken_link"} <= codes(chain)


def test_reordered_records_are_detected() -> None:
    chain = make_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    assert {"gap", "broken_link"} <= codes(chain)


def test_removed_tail_is_detected_against_the_head() -> None:
    chain = make_chain(5)
    assert "truncated" in codes(chain[:3], head=(5, chain[-1].hash))
    assert "head_mismatch" in codes(chain, head=(5, b"\x00" * 32))
    assert "head_mismatch" in codes(chain, head=(3, chain[2].hash))


def test_suffix_verification() -> None:
    chain = make_chain(6)
    assert verify_chain(chain[3:], mac=KEY.audit_mac, start=(3, chain[2].hash)).ok


def test_json_round_trip() -> None:
    for rec in make_chain(3):
        assert AuditRecord.from_json(rec.to_json()) == rec


@given(index=st.integers(0, 3), field=st.sampled_from(["kind", "actor", "subject", "outcome"]),
       value=st.text(max_size=10))  # fmt: skip
def test_any_field_edit_is_detected(index: int, field: str, value: str) -> None:
    chain = make_chain(4)
    if getattr(chain[index], field) == value:
        return
    chain[index] = replace(chain[index], **{field: value})  # type: ignore[arg-type]
    assert not verify_chain(chain, mac=KEY.audit_mac).ok


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_chains(n: int) -> None:
    assert verify_chain(make_chain(n), mac=KEY.audit_mac).ok
