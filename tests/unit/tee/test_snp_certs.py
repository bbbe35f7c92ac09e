"""The GHCB certificate table: round trips, and hostile tables raise one typed error."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealpod.errors import EvidenceGenerationError, MalformedEvidence
from sealpod.tee.snp_certs import (
    ARK_GUID,
    ASK_GUID,
    ENTRY_SIZE,
    VCEK_GUID,
    build_cert_table,
    parse_cert_table,
)


def test_guid_wire_bytes_are_in_written_order() -> None:
    # AMD's tooling parses the GUID text with uuid_parse: bytes in the order written.
    assert VCEK_GUID.bytes.hex() == "63da758de6644564adc5f4b93be8accd"
    assert ARK_GUID.bytes.hex() == "c0b406a4a803495297433fb6014cd0ae"
    assert ASK_GUID.bytes.hex() == "4ab7b379bbac4fe4a02f05aef327c782"


def test_round_trip() -> None:
    certs = {"vcek": b"V" * 10, "ask": b"A" * 20, "ark": b"R" * 30}
    table = build_cert_table(certs)
    assert table[:16] == VCEK_GUID.bytes
    assert int.from_bytes(table[16:20], "little") == 4 * ENTRY_SIZE
    assert parse_cert_table(table) == certs


def test_unknown_guid_is_kept_by_its_text() -> None:
    guid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    table = guid.bytes + (48).to_bytes(4, "little") + (3).to_bytes(4, "little") + bytes(24) + b"xyz"
    assert parse_cert_table(table) == {str(guid): b"xyz"}


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (b"", "guid"),
        (VCEK_GUID.bytes + (48).to_bytes(4, "little") + (5).to_bytes(4, "little"), "guid"),
        (
            VCEK_GUID.bytes + (48).to_bytes(4, "little") + (99).to_bytes(4, "little") + bytes(24),
            "points at",
        ),
        (
            VCEK_GUID.bytes + (0).to_bytes(4, "little") + (8).to_bytes(4, "little") + bytes(24),
            "points at",
        ),
        (bytes(16) + (1).to_bytes(4, "little") + bytes(4), "terminator"),
        (
            (VCEK_GUID.bytes + (72).to_bytes(4, "little") + (1).to_bytes(4, "little")) * 2
            + bytes(24)
            + b"x",
            "appears twice",
        ),
    ],
    ids=["empty", "no-terminator", "past-end", "into-table", "bad-terminator", "duplicate"],
)
def test_malformed_tables(table: bytes, match: str) -> None:
    with pytest.raises(MalformedEvidence, match=match):
        parse_cert_table(table)


def test_error_class_is_a_parameter() -> None:
    with pytest.raises(EvidenceGenerationError):
        parse_cert_table(b"\x00" * 5, error=EvidenceGenerationError)


def test_entry_count_is_bounded() -> None:
    entry = uuid.uuid4().bytes + (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
    entries = b"".join(uuid.uuid4().bytes + bytes(8) for _ in range(70))
    with pytest.raises(MalformedEvidence):
        parse_cert_table(entry + entries)


@given(st.binary(max_size=400))
def test_hostile_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        out = parse_cert_table(data)
    except MalformedEvidence:
        return
    assert all(isinstance(v, bytes) and v for v in out.values())


@given(
    st.dictionaries(
        st.sampled_from(["vcek", "ask", "ark", "vlek", "crl"]), st.binary(min_size=1, max_size=64)
    )
)
def test_built_tables_round_trip(certs: dict[str, bytes]) -> None:
    assert parse_cert_table(build_cert_table(certs)) == certs
