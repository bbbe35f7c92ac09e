"""canonical_json: exact bytes for known values, refusals, and the round-trip property."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.spec.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonical_json


def test_keys_sorted_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'


def test_nested_objects_are_sorted_too() -> None:
    assert canonical_json({"z": {"d": 1, "c": 2}, "y": []}) == b'{"y":[],"z":{"c":2,"d":1}}'


def test_non_ascii_is_raw_utf8() -> None:
    assert canonical_json({"k": "é✓"}) == '{"k":"é✓"}'.encode()
    assert b"\\u" not in canonical_json("é")


def test_control_characters_are_escaped() -> None:
    assert canonical_json("a\nb\x00") == b'"a\\nb\\u0000"'


def test_keys_sort_by_code_point() -> None:
    # "Z" (0x5A) < "a" (0x61) < "é" (0xE9)
    assert canonical_json({"é": 1, "a": 2, "Z": 3}) == '{"Z":3,"a":2,"é":1}'.encode()


def test_tuples_serialize_as_arrays() -> None:
    assert canonical_json((1, 2)) == b"[1,2]"


def test_integer_bounds() -> None:
    assert canonical_json(MAX_SAFE_INTEGER) == str(MAX_SAFE_INTEGER).encode()
    assert canonical_json(-MAX_SAFE_INTEGER) == str(-MAX_SAFE_INTEGER).encode()


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), float("inf"), b"bytes", {1, 2}, {1: "x"}, {"a": object()}],
    ids=["float", "nan", "inf", "bytes", "set", "int-key", "object"],
)
def test_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, "\ud800", {"\udcff": 1}],
    ids=["int-too-big", "int-too-small", "lone-surrogate", "surrogate-key"],
)
def test_out_of_range_values_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


def test_deep_nesting_is_refused() -> None:
    value: object = 1
    for _ in range(MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(ValueError, match="nested deeper"):
        canonical_json(value)


def test_error_names_the_location() -> None:
    with pytest.raises(TypeError, match=r"\$\.a\[1\]"):
        canonical_json({"a": [1, 2.0]})


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | _text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=30,
)


@given(_json)
def test_round_trips(value: object) -> None:
    raw = canonical_json(value)
    assert json.loads(raw) == value
    # and is a fixed point: re-serializing the parsed value gives the same bytes
    assert canonical_json(json.loads(raw)) == raw


@given(st.dictionaries(_text, st.integers(0, 10), min_size=2, max_size=8))
def test_insertion_order_does_not_matter(value: dict[str, int]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(reversed_value)


def test_str_and_int_subclasses_serialize_as_their_values() -> None:
    import enum

    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert canonical_json({"c": Color.RED, "l": Level.HIGH}) == b'{"c":"red","l":3}'
