"""The pure volume format: layout arithmetic, round trips, hostile bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import VolumeCorrupt, VolumeFormatError
from sealpod.volume import format as fmt


def _header(**over: object) -> fmt.HeaderSlot:
    fields: dict[str, object] = {
        "volume_id": os.urandom(16),
        "kdf_salt": os.urandom(32),
        "wrap_nonce": os.urandom(12),
        "wrapped_key": os.urandom(32),
        "wrap_tag": os.urandom(16),
        "counter": 7,
        "index_file_id": os.urandom(16),
        "index_meta_tag": os.urandom(16),
        "mac": os.urandom(32),
    }
    fields.update(over)
    return fmt.HeaderSlot(**fields)  # type: ignore[arg-type]


def test_layout_slots_are_distinct_and_dense() -> None:
    n_data = 5000
    slots = {fmt.data_slot(i) for i in range(n_data)}
    slots |= {fmt.mht_slot(j) for j in range(fmt.mht_nodes_for(n_data))}
    assert len(slots) == n_data + fmt.mht_nodes_for(n_data)
    assert 0 not in slots
    # A file's nodes occupy exactly the prefix [1, slots_for(size)) of its host file.
    size = n_data * fmt.NODE_SIZE
    assert slots == set(range(1, fmt.slots_for(size)))


def test_mht_heap_parent_child_inverse() -> None:
    for j in range(1, 3000):
        p, k = fmt.mht_parent(j)
        assert p < j
        assert fmt.mht_child(p, k) == j
    with pytest.raises(ValueError):
        fmt.mht_parent(0)


def test_entries_fill_an_mht_node() -> None:
    last_child = fmt.child_entry_offset(fmt.CHILDREN_PER_MHT - 1) + fmt.ENTRY_SIZE
    assert last_child == fmt.MHT_ENTRIES_SIZE == 4080
    assert fmt.data_entry_offset(fmt.DATA_PER_MHT - 1) + fmt.ENTRY_SIZE == fmt.child_entry_offset(0)


def test_nonce_and_aad_bind_kind_and_position() -> None:
    vid, fid = os.urandom(16), os.urandom(16)
    nonces = {fmt.tree_nonce(k, i) for k in (0, 1) for i in range(100)}
    assert len(nonces) == 200 and all(len(n) == 12 for n in nonces)
    assert fmt.tree_aad(vid, fid, 0, 5) != fmt.tree_aad(vid, fid, 1, 5)
    assert fmt.tree_aad(vid, fid, 0, 5) != fmt.tree_aad(vid, os.urandom(16), 0, 5)


def test_header_slot_roundtrip_and_offsets() -> None:
    slot = _header()
    raw = slot.to_bytes()
    assert len(raw) == fmt.HEADER_SLOT_SIZE
    assert fmt.HeaderSlot.from_bytes(raw) == slot
    assert raw[fmt.HEADER_COUNTER_OFFSET : fmt.HEADER_COUNTER_OFFSET + 8] == (7).to_bytes(
        8, "little"
    )
    assert raw[fmt.HEADER_MAC_OFFSET : fmt.HEADER_USED_SIZE] == slot.mac
    assert raw[fmt.HEADER_WRAP_NONCE_OFFSET : fmt.HEADER_WRAP_NONCE_OFFSET + 12] == slot.wrap_nonce
    assert slot.wrap_aad() == raw[:72]
    assert slot.mac_input() == raw[:176]


def test_header_refusals() -> None:
    raw = bytearray(_header().to_bytes())
    with pytest.raises(VolumeFormatError, match="not a sealpod volume"):
        fmt.HeaderSlot.from_bytes(b"X" + raw[1:])
    bad = bytearray(raw)
    bad[8] = 9
    with pytest.raises(VolumeFormatError, match="unsupported"):
        fmt.HeaderSlot.from_bytes(bad)
    bad = bytearray(raw)
    bad[32] = 7
    with pytest.raises(VolumeFormatError, match="kdf_id"):
        fmt.HeaderSlot.from_bytes(bad)
    for reserved in (10, 12, 33, 132, 300, 4095):
        bad = bytearray(raw)
        bad[reserved] ^= 1
        with pytest.raises(VolumeCorrupt):
            fmt.HeaderSlot.from_bytes(bad)
    with pytest.raises(VolumeFormatError):
        fmt.HeaderSlot.from_bytes(raw[:-1])


def test_meta_node_and_body_roundtrip() -> None:
    node = fmt.MetaNode(
        file_kind=fmt.FILE_KIND_DATA,
        file_id=os.urandom(16),
        key_salt=os.urandom(32),
        body_ciphertext=os.urandom(fmt.META_BODY_SIZE),
        tag=os.urandom(16),
    )
    raw = node.to_bytes()
    assert len(raw) == fmt.NODE_SIZE and raw[:8] == fmt.META_MAGIC
    assert fmt.MetaNode.from_bytes(raw) == node
    for body in (
        fmt.MetaBody(size=5, generation=3, path=b"a/b", inline_data=b"hello"),
        fmt.MetaBody(size=10**6, generation=1, path=b"x" * 1024, root_entry=os.urandom(48)),
        fmt.MetaBody(size=0, generation=0, path=b""),
    ):
        assert fmt.MetaBody.from_bytes(body.to_bytes()) == body


def test_meta_body_refusals() -> None:
    good = bytearray(fmt.MetaBody(size=5, generation=1, path=b"p", inline_data=b"12345").to_bytes())
    cases = {
        "flags": (16, 0),  # inline flag cleared although size is inline
        "path_len": (20, 0xFF),
        "inline padding": (fmt.META_INLINE_OFFSET + 6, 1),
        "path padding": (fmt.META_PATH_OFFSET + 5, 1),
    }
    for what, (offset, value) in cases.items():
        bad = bytearray(good)
        bad[offset] = value
        with pytest.raises(VolumeCorrupt):
            fmt.MetaBody.from_bytes(bad)
        del what
    tree = fmt.MetaBody(size=10**6, generation=1, path=b"p", root_entry=os.urandom(48))
    bad = bytearray(tree.to_bytes())
    bad[fmt.META_INLINE_OFFSET] = 1
    with pytest.raises(VolumeCorrupt):
        fmt.MetaBody.from_bytes(bad)
    with pytest.raises(ValueError):
        fmt.MetaBody(size=5, generation=1, path=b"p", inline_data=b"1").to_bytes()


def test_index_record_roundtrip_and_refusals() -> None:
    rec = fmt.IndexRecord(
        kind=fmt.KIND_FILE, mode=0o640, parent=3, uid=1000, gid=1000, generation=2, size=99,
        mtime_ns=-5, ctime_ns=10**18, file_id=os.urandom(16), meta_tag=os.urandom(16),
        name=b"n" * 255,
    )  # fmt: skip
    raw = rec.to_bytes()
    assert len(raw) == fmt.INDEX_RECORD_SIZE
    assert fmt.IndexRecord.from_bytes(raw) == rec
    assert fmt.IndexRecord.from_bytes(bytes(512)).kind == fmt.KIND_FREE
    for offset, value in ((0, 9), (1, 1), (3, 1), (6, 0xFF), (400, 1)):
        bad = bytearray(raw)
        bad[offset] = value
        with pytest.raises(VolumeCorrupt):
            fmt.IndexRecord.from_bytes(bad)


def _journal(entries: int) -> bytes:
    vid = os.urandom(16)
    parts = [fmt.journal_header_bytes(vid, 9, base=7, entry_count=entries)]
    parts += [
        fmt.JournalEntry(file_id=os.urandom(16), slot=i, node=os.urandom(4096)).to_bytes()
        for i in range(entries)
    ]
    parts.append(
        fmt.JournalCommit(entry_count=entries, counter=9, index_meta_tag=os.urandom(16)).to_bytes()
    )
    return b"".join(parts)


def test_journal_roundtrip_and_truncation() -> None:
    raw = _journal(3)
    journal = fmt.Journal.from_bytes(raw)
    assert (journal.counter, journal.base, len(journal.entries)) == (9, 7, 3)
    assert journal.size == len(raw) == fmt.journal_record_size(3)
    assert journal.mac_input == raw[: len(raw) - 32]
    for cut in (0, 10, 64, 64 + 4128, len(raw) - 1):
        with pytest.raises(VolumeCorrupt):
            fmt.Journal.from_bytes(raw[:cut])
    with pytest.raises(VolumeCorrupt):
        fmt.Journal.from_bytes(raw + b"\0")  # one record, exactly
    for offset, value in ((len(raw) - 96 + 8, 5), (48, 5)):  # the two entry counts disagree
        bad = bytearray(raw)
        bad[offset] = value
        with pytest.raises(VolumeCorrupt):
            fmt.Journal.from_bytes(bad)


def test_journal_records_follow_each_other_and_refuse_a_base_not_below_the_counter() -> None:
    one, two = _journal(1), _journal(2)
    log = b"XX" + one + two + b"tail"
    first = fmt.Journal.record_at(log, 2)
    second = fmt.Journal.record_at(log, 2 + first.size)
    assert (len(first.entries), len(second.entries)) == (1, 2)
    with pytest.raises(VolumeCorrupt):
        fmt.Journal.record_at(log, 2 + first.size + second.size)
    with pytest.raises(VolumeCorrupt):  # a count that runs past the end of the file
        fmt.Journal.record_at(log[: 2 + first.size - 1], 2)
    bad = bytearray(one)
    bad[40:48] = (9).to_bytes(8, "little")  # base == counter: not a commit
    with pytest.raises(VolumeCorrupt, match="base"):
        fmt.Journal.from_bytes(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_hostile_bytes_never_crash_parsers(data: bytes) -> None:
    for parse, errors in (
        (fmt.HeaderSlot.from_bytes, (VolumeFormatError, VolumeCorrupt)),
        (fmt.MetaNode.from_bytes, (VolumeCorrupt,)),
        (fmt.MetaBody.from_bytes, (VolumeCorrupt,)),
        (fmt.IndexRecord.from_bytes, (VolumeCorrupt,)),
        (fmt.Journal.from_bytes, (VolumeCorrupt,)),
        (lambda raw: fmt.Journal.record_at(raw, len(raw) // 3), (VolumeCorrupt,)),
        (fmt.journal_record_head, (VolumeCorrupt,)),
    ):
        try:
            parse(data)
        except errors:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 4095), st.integers(1, 255))
def test_header_bitflip_parses_or_raises_typed(offset: int, mask: int) -> None:
    raw = bytearray(_header().to_bytes())
    raw[offset] ^= mask
    try:
        slot = fmt.HeaderSlot.from_bytes(raw)
    except (VolumeFormatError, VolumeCorrupt):
        return
    assert slot.to_bytes() == bytes(raw)  # if it parses, it round-trips


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 511), st.integers(1, 255))
def test_index_record_bitflip_parses_or_raises_typed(offset: int, mask: int) -> None:
    rec = fmt.IndexRecord(kind=fmt.KIND_DIR, mode=0o755, name=b"dir", file_id=os.urandom(16))
    raw = bytearray(rec.to_bytes())
    raw[offset] ^= mask
    try:
        parsed = fmt.IndexRecord.from_bytes(raw)
    except VolumeCorrupt:
        return
    assert parsed.to_bytes() == bytes(raw)
