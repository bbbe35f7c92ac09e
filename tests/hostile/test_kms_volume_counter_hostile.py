"""Hostile volume counter requests and answers: every input is a valid request or a typed error.

The server parses a compare-and-swap body with ``VolumeCounterAdvance.model_validate_json``
(its 400 comes from the ValidationError); the client checks a request before signing it
(``advance_body``: ConfigError) and reads answers with ``read_counter`` (KmsError) and problem
documents with ``raise_for_problem`` (RollbackDetected for a refused swap).
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sealpod.errors import ConfigError, KmsError, RollbackDetected, SealpodError
from sealpod.kms.models import MAX_VOLUME_COUNTER, VolumeCounterAdvance
from sealpod.kms.wire import advance_body, counter_path, raise_for_problem, read_counter

HEX32 = re.compile(r"^[0-9a-f]{32}$")
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
ints = st.one_of(st.integers(), st.integers(-2, 5), st.just(MAX_VOLUME_COUNTER + 1))
volume_ids = st.one_of(st.text(max_size=40), st.from_regex(HEX32, fullmatch=True))


def valid(volume_id: object, expected: object, new: object) -> bool:
    return (
        isinstance(volume_id, str)
        and bool(HEX32.fullmatch(volume_id))
        and type(expected) is int
        and type(new) is int
        and 0 <= expected < new <= MAX_VOLUME_COUNTER
    )


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries({"volume_id": volume_ids, "expected": ints, "new": ints}),
        st.fixed_dictionaries(
            {"volume_id": volume_ids, "expected": json_values, "new": json_values}
        ),
    )
)
def test_a_swap_body_parses_exactly_when_it_is_valid(body: object) -> None:
    text = json.dumps(body)
    ok = isinstance(body, dict) and set(body) == {"volume_id", "expected", "new"}
    ok = ok and valid(body["volume_id"], body["expected"], body["new"])  # type: ignore[index]
    try:
        req = VolumeCounterAdvance.model_validate_json(text)
    except ValidationError:
        assert not ok, text
        return
    assert ok, text
    assert json.loads(req.model_dump_json()) == body


@settings(max_examples=300, deadline=None)
@given(volume_id=volume_ids, expected=ints, new=ints)
def test_the_client_sends_only_valid_swaps(volume_id: str, expected: int, new: int) -> None:
    try:
        body = advance_body(volume_id, expected, new)
    except ConfigError:
        assert not valid(volume_id, expected, new)
        return
    assert valid(volume_id, expected, new)
    assert body == {"volume_id": volume_id, "expected": expected, "new": new}


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=130))
def test_volume_names_become_one_path_segment_or_are_refused(name: str) -> None:
    try:
        path = counter_path(name)
    except ConfigError:
        return
    assert path == f"/v1/volumes/{name}/counter"
    assert "/" not in name and name not in (".", "..") and len(f"volume.{name}") <= 128


@settings(max_examples=300, deadline=None)
@given(answer=json_values)
def test_a_malformed_counter_answer_is_a_kms_error(answer: object) -> None:
    try:
        got = read_counter(answer if isinstance(answer, dict) else {"x": answer}, "data")
    except KmsError:
        return
    assert got.name == "data"


@settings(max_examples=200, deadline=None)
@given(body=json_values, code=st.sampled_from(["kms.volume_rollback", "kms.conflict", "x"]))
def test_a_409_is_a_typed_error_whatever_its_body(body: object, code: str) -> None:
    if isinstance(body, dict):
        body = {**body, "code": code}
    response = httpx.Response(409, json=body)
    with pytest.raises(SealpodError) as caught:
        raise_for_problem(response)
    if isinstance(body, dict) and code == "kms.volume_rollback":
        assert isinstance(caught.value, RollbackDetected)
        assert caught.value.exit_code == 15
        assert isinstance(caught.value.counter, int)
    else:
        assert isinstance(caught.value, KmsError)
