"""The Gramine manifest checker and the SIGSTRUCT reader on hostile input: the checker returns
problems for any TOML document (never raises); the reader raises MalformedEvidence or parses."""

from __future__ import annotations

import tomllib

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.errors import MalformedEvidence
from sealpod.gramine.manifest_check import SCHEMA, check_manifest
from sealpod.gramine.sigstruct import parse_sigstruct

HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
keys = st.sampled_from(sorted({p for k in SCHEMA for p in k.split(".")} | {"x", "env", "keys"}))
leaves = st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=12), st.booleans(),
                   st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
toml_values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=16,
)


@HOSTILE
@given(st.dictionaries(keys, toml_values, max_size=6))
def test_checker_never_raises(doc: dict[str, object]) -> None:
    text = tomli_w.dumps(doc)
    problems = check_manifest(tomllib.loads(text))
    assert all(isinstance(p, str) for p in problems)
    assert check_manifest(tomllib.loads(text), production=False) is not None


@HOSTILE
@given(st.binary(max_size=4096))
def test_sigstruct_reader_never_raises_anything_else(data: bytes) -> None:
    try:
        parse_sigstruct(data)
    except MalformedEvidence:
        pass
