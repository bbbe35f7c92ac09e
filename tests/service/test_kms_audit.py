"""The hash chain catches an edited, removed, reordered or re-hashed record."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.errors import ConfigError
from sealpod.kms.audit import AuditRecord, chain_record, head_mac_input, parse_head, verify_chain
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


def head_mac(seq: int, digest: bytes, key: MasterKey = KEY) -> bytes:
    return key.audit_mac(head_mac_input(seq, digest))


def codes(records: list[AuditRecord], **kw: object) -> set[str]:
    report = verify_chain(records, mac=KEY.audit_mac, **kw)  # type: ignore[arg-type]
    return {p.code for p in report.problems}


def test_intact_chain_verifies() -> None:
    chain = make_chain(5)
    report = verify_chain(
        chain, mac=KEY.audit_mac, head=(5, chain[-1].hash), head_mac=head_mac(5, chain[-1].hash)
    )
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


# -- the head row's MAC and a head kept outside (issue 17 item 3) ------------------------------
def test_tail_cut_with_head_rewound_fails_the_head_mac() -> None:
    # Delete records 4 and 5 and rewind the head to record 3: every record still links, the
    # head agrees with the last record, only the head's MAC (which needs the key) does not.
    chain = make_chain(5)
    rewound = (3, chain[2].hash)
    assert codes(chain[:3], head=rewound, head_mac=head_mac(5, chain[-1].hash)) == {"head_mac"}
    forged = head_mac(3, chain[2].hash, MasterKey.generate())
    assert codes(chain[:3], head=rewound, head_mac=forged) == {"head_mac"}
    assert codes(chain[:3], head=rewound, head_mac=None) == {"head_mac"}


def test_a_record_mac_cannot_be_copied_into_the_head() -> None:
    chain = make_chain(5)
    assert "head_mac" in codes(chain[:3], head=(3, chain[2].hash), head_mac=chain[2].mac)


def test_tail_cut_without_head_rewind_is_truncated() -> None:
    chain = make_chain(5)
    head = (5, chain[-1].hash)
    assert codes(chain[:3], head=head, head_mac=head_mac(*head)) == {"truncated"}


def test_kept_head_catches_a_rollback_to_an_old_copy() -> None:
    # A restored old copy of the database is consistent in itself (head and its MAC included);
    # only a head kept outside shows that records 4 and 5 existed.
    chain = make_chain(5)
    old_head = (3, chain[2].hash)
    kept = (5, chain[-1].hash)
    assert codes(chain[:3], head=old_head, head_mac=head_mac(*old_head)) == set()
    found = codes(chain[:3], head=old_head, head_mac=head_mac(*old_head), expect=kept)
    assert found == {"expected_head"}


def test_kept_head_older_than_the_log_is_a_prefix() -> None:
    chain = make_chain(5)
    head = (5, chain[-1].hash)
    for seq in (0, 1, 3, 5):
        kept = (seq, chain[seq - 1].hash if seq else bytes(32))
        assert codes(chain, head=head, head_mac=head_mac(*head), expect=kept) == set()


def test_kept_head_with_another_hash_means_a_rewrite() -> None:
    chain = make_chain(5)
    head = (5, chain[-1].hash)
    assert codes(chain, head=head, head_mac=head_mac(*head), expect=(3, b"\x01" * 32)) == {
        "expected_head"
    }
    assert "expected_head" in codes(chain, expect=(0, b"\x01" * 32))


@pytest.mark.parametrize(
    "text", ["", "5", "5:", ":" + "00" * 32, "-1:" + "00" * 32, "5:" + "00" * 31, "x:" + "0" * 64,
             "5:" + "zz" * 32, "5:" + "00" * 32 + ":1"],
)  # fmt: skip
def test_malformed_expected_heads_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_head(text)


@given(st.integers(min_value=0, max_value=2**62), st.binary(min_size=32, max_size=32))
def test_expected_head_round_trips(seq: int, digest: bytes) -> None:
    assert parse_head(f"{seq}:{digest.hex()}") == (seq, digest)
