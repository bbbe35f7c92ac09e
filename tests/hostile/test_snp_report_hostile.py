"""Hostile inputs for the SEV-SNP report codec: byte flips over every field and reserved range,
every truncation, and random bytes (each input is a typed error or an exact round trip)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.errors import MalformedEvidence
from sealpod.evidence.snp_report import REPORT_SIZE, SnpReport, TcbVersion, parse_report

# (name, start, end) of every field of the v5 layout (ABI 1.58 table 23); the sum is 0x4A0.
# Names are SnpReport attributes, or "reserved_*" for must-be-zero ranges.
LAYOUT_V5: list[tuple[str, int, int]] = [
    ("version", 0x000, 0x004),
    ("guest_svn", 0x004, 0x008),
    ("policy", 0x008, 0x010),
    ("family_id", 0x010, 0x020),
    ("image_id", 0x020, 0x030),
    ("vmpl", 0x030, 0x034),
    ("signature_algo", 0x034, 0x038),
    ("current_tcb", 0x038, 0x040),
    ("platform_info", 0x040, 0x048),
    ("key_info", 0x048, 0x04C),
    ("reserved_0x4c", 0x04C, 0x050),
    ("report_data", 0x050, 0x090),
    ("measurement", 0x090, 0x0C0),
    ("host_data", 0x0C0, 0x0E0),
    ("id_key_digest", 0x0E0, 0x110),
    ("author_key_digest", 0x110, 0x140),
    ("report_id", 0x140, 0x160),
    ("report_id_ma", 0x160, 0x180),
    ("reported_tcb", 0x180, 0x188),
    ("cpuid_fam_id", 0x188, 0x189),
    ("cpuid_mod_id", 0x189, 0x18A),
    ("cpuid_step", 0x18A, 0x18B),
    ("reserved_0x18b", 0x18B, 0x1A0),
    ("chip_id", 0x1A0, 0x1E0),
    ("committed_tcb", 0x1E0, 0x1E8),
    ("current_build", 0x1E8, 0x1E9),
    ("current_minor", 0x1E9, 0x1EA),
    ("current_major", 0x1EA, 0x1EB),
    ("reserved_0x1eb", 0x1EB, 0x1EC),
    ("committed_build", 0x1EC, 0x1ED),
    ("committed_minor", 0x1ED, 0x1EE),
    ("committed_major", 0x1EE, 0x1EF),
    ("reserved_0x1ef", 0x1EF, 0x1F0),
    ("launch_tcb", 0x1F0, 0x1F8),
    ("launch_mit_vector", 0x1F8, 0x200),
    ("current_mit_vector", 0x200, 0x208),
    ("reserved_0x208", 0x208, 0x2A0),
    ("signature_r", 0x2A0, 0x2E8),
    ("signature_s", 0x2E8, 0x330),
    ("signature_reserved", 0x330, 0x4A0),
]


def layout(version: int) -> list[tuple[str, int, int]]:
    """The v5 table, with the ranges older versions reserve merged into reserved ranges."""
    out = []
    for name, lo, hi in LAYOUT_V5:
        if version < 3 and name.startswith("cpuid_"):
            name = "reserved_0x188"
        elif version < 3 and name == "reserved_0x18b":
            name = "reserved_0x188"
        elif version < 5 and name in ("launch_mit_vector", "current_mit_vector", "reserved_0x208"):
            name = "reserved_0x1f8"
        out.append((name, lo, hi))
    return out


def base_report(version: int) -> bytes:
    tcb = TcbVersion(bootloader=3, tee=1, snp=8, microcode=115).to_u64()
    report = SnpReport(
        version=version, guest_svn=3, policy=0x3_0102, family_id=b"\x01" * 16,
        image_id=b"\x02" * 16, vmpl=0, signature_algo=1, current_tcb=tcb, platform_info=1,
        key_info=0, report_data=b"\x03" * 64, measurement=b"\x04" * 48, host_data=b"\x05" * 32,
        id_key_digest=b"\x06" * 48, author_key_digest=b"\x07" * 48, report_id=b"\x08" * 32,
        report_id_ma=b"\xff" * 32, reported_tcb=tcb,
        cpuid_fam_id=0x19 if version >= 3 else None, cpuid_mod_id=0x01 if version >= 3 else None,
        cpuid_step=0x01 if version >= 3 else None, chip_id=b"\x09" * 64, committed_tcb=tcb,
        current_build=4, current_minor=52, current_major=1, committed_build=4,
        committed_minor=52, committed_major=1, launch_tcb=tcb,
        launch_mit_vector=5 if version >= 5 else None,
        current_mit_vector=6 if version >= 5 else None,
        signature_r=b"\x0a" * 72, signature_s=b"\x0b" * 72,
    )  # fmt: skip
    return report.to_bytes()


def test_layout_covers_every_byte_once() -> None:
    assert LAYOUT_V5[0][1] == 0 and LAYOUT_V5[-1][2] == REPORT_SIZE
    for (_, _, hi), (_, lo, _) in itertools.pairwise(LAYOUT_V5):
        assert hi == lo


def _value_is_valid(name: str, raw: bytes, lo: int, hi: int) -> bool:
    """The spec's rule for fields whose values the parser constrains (independent of it)."""
    value = int.from_bytes(raw[lo:hi], "little")
    if name == "policy":
        return bool(value >> 17 & 1) and value >> 26 == 0
    if name == "signature_algo":
        return value == 1
    if name == "key_info":
        return value >> 5 == 0 and (value >> 2 & 7) in (0, 1, 7)
    return True


@pytest.mark.parametrize("version", [2, 3, 5])
@pytest.mark.parametrize("mask", [0xFF, 0x01])
def test_byte_flip_table(version: int, mask: int) -> None:
    """Flip every byte: reserved ranges are refused naming the range, constrained fields follow
    the spec's rule, every other field parses, changes only itself and round-trips."""
    original = base_report(version)
    reference = parse_report(original)
    for name, lo, hi in layout(version):
        for offset in range(lo, hi):
            flipped = bytearray(original)
            flipped[offset] ^= mask
            data = bytes(flipped)
            if name.startswith("reserved") or name == "signature_reserved":
                with pytest.raises(MalformedEvidence) as info:
                    parse_report(data)
                assert info.value.field == name, (name, offset)
                continue
            if name == "version":  # another version changes the layout: error or round trip
                _parse_or_typed_error(data)
                continue
            if not _value_is_valid(name, data, lo, hi):
                with pytest.raises(MalformedEvidence) as info:
                    parse_report(data)
                assert info.value.field in (name, "key_info"), (name, offset)
                continue
            parsed = parse_report(data)
            assert parsed.to_bytes() == data, (name, offset)
            changed = [
                f.name
                for f in dataclasses.fields(SnpReport)
                if f.name != "raw" and getattr(parsed, f.name) != getattr(reference, f.name)
            ]
            assert changed == [name], (name, offset, changed)


@pytest.mark.parametrize("version", [2, 3, 5])
def test_every_truncation_is_refused(version: int) -> None:
    original = base_report(version)
    for size in range(REPORT_SIZE):
        with pytest.raises(MalformedEvidence):
            parse_report(original[:size])


@pytest.mark.parametrize("extra", [b"\x00", b"\x01", b"\x00" * 100])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        parse_report(base_report(5) + extra)


def _parse_or_typed_error(data: bytes) -> None:
    try:
        report = parse_report(data)
    except MalformedEvidence:
        return
    assert report.to_bytes() == data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=REPORT_SIZE + 64))
def test_random_bytes_typed_error_or_round_trip(data: bytes) -> None:
    _parse_or_typed_error(data)


def _patch(data: bytearray, offset: int, value: int, size: int) -> None:
    data[offset : offset + size] = value.to_bytes(size, "little")


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE),
    version=st.sampled_from([2, 3, 4, 5]),
    zero_reserved=st.booleans(),
)
def test_mostly_valid_reports_typed_error_or_round_trip(
    body: bytes, version: int, zero_reserved: bool
) -> None:
    """Random reports with a valid header, so the parser gets past the first checks."""
    data = bytearray(body)
    _patch(data, 0x00, version, 4)
    _patch(data, 0x08, (int.from_bytes(data[0x08:0x10], "little") & 0x3FF_FFFF) | 1 << 17, 8)
    _patch(data, 0x34, 1, 4)
    _patch(data, 0x48, data[0x48] & 0x07, 4)
    if zero_reserved:
        for name, lo, hi in layout(version):
            if name.startswith("reserved") or name == "signature_reserved":
                data[lo:hi] = bytes(hi - lo)
        report = parse_report(bytes(data))
        assert report.to_bytes() == bytes(data)
    else:
        _parse_or_typed_error(bytes(data))
