"""The agent's wire under hostile input: whatever bytes arrive, each parser returns a value or
raises AgentError (the agent answers with a refusal and goes on), never anything else."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.agent import protocol
from sealpod.errors import AgentError

PARSERS = (protocol.parse_request, protocol.parse_control, protocol.parse_reply)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.parametrize("parse", PARSERS)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_give_a_message_or_agent_error(
    parse: Callable[[bytes], object], data: bytes
) -> None:
    try:
        parse(data)
    except AgentError:
        pass


@pytest.mark.parametrize("parse", PARSERS)
@given(doc=json_values)
def test_arbitrary_json_gives_a_message_or_agent_error(
    parse: Callable[[bytes], object], doc: object
) -> None:
    try:
        parse(json.dumps(doc).encode())
    except AgentError:
        pass


@given(
    argv=st.lists(st.text(max_size=30), min_size=1, max_size=8),
    env=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=8),
    umask=st.integers(min_value=-10, max_value=0o1000),
)
def test_a_run_request_round_trips_or_is_refused_for_a_named_reason(
    argv: list[str], env: dict[str, str], umask: int
) -> None:
    data = protocol.run_request(argv, env, umask)
    try:
        request = protocol.parse_request(data)
    except AgentError as exc:
        assert any(w in exc.message for w in ("argv", "env", "umask"))
        assert (
            any("\0" in a for a in argv)
            or any("\0" in k or "=" in k or "\0" in v for k, v in env.items())
            or not 0 <= umask <= 0o777
        )
        return
    assert isinstance(request, protocol.RunRequest)
    assert request.argv == tuple(argv) and request.env == env and request.umask == umask


def test_a_request_with_a_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(AgentError):
        protocol.parse_request(b"[" * 100_000 + b"]" * 100_000)


def test_an_oversized_message_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(AgentError, match="too large"):
        protocol.parse_request(b" " * (protocol.MAX_MESSAGE + 1))
    with pytest.raises(AgentError, match="too large"):
        protocol.run_request(["run"], {"X": "y" * protocol.MAX_MESSAGE}, 0o022)


GOOD_STATUS = {"pid": 7, "version": "0.1.0", "socket": "/s", "pods": []}


@pytest.mark.parametrize(
    "status",
    [
        {**GOOD_STATUS, "pid": "7"},
        {**GOOD_STATUS, "pods": {}},
        {**GOOD_STATUS, "pods": [{"pid": 1, "argv": ["run"], "started": "yesterday"}]},
        {**GOOD_STATUS, "pods": [{"pid": 1, "argv": ["run"], "started": 1e300}]},
        {**GOOD_STATUS, "pods": [{"pid": 1, "argv": [3], "started": 1.0}]},
        {"pid": 7},
    ],
)
def test_a_status_of_another_shape_is_refused_not_rendered(status: dict[str, object]) -> None:
    # `sealpod agent status` renders what passes without further checks (a start time of
    # 1e300 would otherwise be an OverflowError in the CLI: exit 70).
    with pytest.raises(AgentError, match="agent status"):
        protocol.parse_reply(json.dumps({"status": status}).encode())


def test_a_good_status_is_read() -> None:
    pods = [{"pid": 9, "argv": ["run", "b"], "started": 1.5}]
    reply = protocol.parse_reply(json.dumps({"status": {**GOOD_STATUS, "pods": pods}}).encode())
    assert reply.status is not None and reply.status["pods"] == pods
