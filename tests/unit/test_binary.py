from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod._binary import Reader, Writer
from sealpod.errors import MalformedEvidence, VolumeCorrupt


def test_reader_reads_named_fields_little_endian() -> None:
    data = Writer().u16(3).u32(0xDEADBEEF).raw(b"abc").zeros(2).getvalue()
    r = Reader(data, name="t")
    assert r.u16("version") == 3
    assert r.u32("x") == 0xDEADBEEF
    assert r.take(3, "s") == b"abc"
    r.zeros(2, "reserved")
    r.end()


def test_short_read_names_field_and_offset() -> None:
    r = Reader(b"\x01\x02\x03", name="quote")
    r.u16("version")
    with pytest.raises(MalformedEvidence) as info:
        r.u32("att_key_type")
    assert info.value.field == "att_key_type"
    assert info.value.offset == 2
    assert "needs 4 bytes, 1 left" in info.value.message


def test_nonzero_reserved_is_refused_at_its_offset() -> None:
    r = Reader(b"\x00\x00\x07\x00")
    with pytest.raises(MalformedEvidence) as info:
        r.zeros(4, "reserved1")
    assert info.value.offset == 2


def test_trailing_bytes_refused_unless_zero_padding_allowed() -> None:
    r = Reader(b"\x01\x00\x00")
    r.u8("a")
    Reader(b"\x01\x00\x00").u8("a")
    r.end(allow_zero_padding=True)
    r2 = Reader(b"\x01\x00\x05")
    r2.u8("a")
    with pytest.raises(MalformedEvidence):
        r2.end(allow_zero_padding=True)
    r3 = Reader(b"\x01\x00")
    r3.u8("a")
    with pytest.raises(MalformedEvidence):
        r3.end()


def test_error_class_is_a_parameter() -> None:
    with pytest.raises(VolumeCorrupt):
        Reader(b"", error=VolumeCorrupt).u8("magic")


@given(st.binary(max_size=64), st.lists(st.integers(min_value=0, max_value=9), max_size=12))
def test_reader_raises_only_its_typed_error(data: bytes, sizes: list[int]) -> None:
    r = Reader(data)
    try:
        for n in sizes:
            r.take(n, "f")
        r.end()
    except MalformedEvidence:
        pass
