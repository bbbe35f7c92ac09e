"""Hostile inputs for evidence-format detection and the envelope: random bytes, random text,
random JSON, every truncation and byte flip of an envelope -> a typed error or valid evidence."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import MalformedEvidence
from sealpod.evidence.envelope import EvidenceEnvelope, RawEvidence, load_evidence
from sealpod.evidence.snp_report import REPORT_SIZE

REPORT = (2).to_bytes(4, "little") + bytes(REPORT_SIZE - 4)
ENVELOPE = json.dumps(
    {
        "tee": "snp",
        "evidence": base64.b64encode(REPORT).decode(),
        "certificates": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        "runtime_data": "abc",
    }
).encode()


def _load(data: bytes) -> None:
    try:
        ev = load_evidence(data)
    except MalformedEvidence:
        return
    assert isinstance(ev, EvidenceEnvelope | RawEvidence)
    if isinstance(ev, EvidenceEnvelope):
        assert load_evidence(ev.to_json().encode()) == ev
        assert ev.raw  # decodes
    else:
        assert ev.raw and ev.encoding in ("binary", "hex", "base64")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _load(data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEFxX+/=_- \n{}\"':,", max_size=3000))
def test_random_text_in_the_encodings_alphabets(text: str) -> None:
    _load(text.encode())


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tee": st.sampled_from(["snp", "sgx", "tdx", "sim", "", 3]),
            "evidence": st.one_of(st.just(base64.b64encode(REPORT).decode()), _json),
            "certificates": _json,
            "runtime_data": _json,
            "extra": _json,
        },
    )
)
def test_random_envelopes(doc: dict[str, object]) -> None:
    _load(json.dumps(doc).encode())


def test_every_truncation_of_an_envelope_is_refused() -> None:
    assert isinstance(load_evidence(ENVELOPE), EvidenceEnvelope)
    for size in range(len(ENVELOPE)):
        with pytest.raises(MalformedEvidence):
            load_evidence(ENVELOPE[:size])


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_byte_flip_of_an_envelope_is_refused_or_still_valid(mask: int) -> None:
    for offset in range(len(ENVELOPE)):
        data = bytearray(ENVELOPE)
        data[offset] ^= mask
        _load(bytes(data))


def test_deeply_nested_json_is_a_typed_error() -> None:
    with pytest.raises(MalformedEvidence):
        load_evidence(b"{" + b'"a":[' * 5000 + b"]" * 5000 + b"}")
