"""One canonical-JSON writer for our own hashes, RFC 8785 where a peer hashes the same JSON."""

from __future__ import annotations

import pytest

from sealpod.errors import MalformedEvidence
from sealpod.kms.audit import canonical
from sealpod.kms.kbs import canonical_json as kbs_canonical
from sealpod.spec.canonical import canonical_json


def test_kbs_runtime_data_is_rfc8785() -> None:
    # JCS sorts keys by UTF-16 code units (U+1F600 is D83D DE00, before U+FFFF) and writes 1.0
    # as 1; Python's sort_keys and json.dumps do neither.
    got = kbs_canonical({"\uffff": 1, "\U0001f600": 2, "n": 1.0, "nonce": "abc"})
    assert got == '{"n":1,"nonce":"abc","\U0001f600":2,"\uffff":1}'.encode()


def test_kbs_refuses_what_has_no_canonical_form() -> None:
    with pytest.raises(MalformedEvidence, match="no canonical form"):
        kbs_canonical({"x": float("nan")})


def test_the_audit_log_writes_what_the_measurement_writer_writes() -> None:
    record = {"seq": 3, "kind": "release", "details": {"codes": ["a", "b"], "é": None}}
    assert canonical(record) == canonical_json(record)
    with pytest.raises(TypeError):
        canonical({"rate": 1.5})  # no float: its text differs between implementations
