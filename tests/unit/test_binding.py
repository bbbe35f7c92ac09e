from __future__ import annotations

import hashlib

import pytest

from sealpod.crypto.binding import attestation_report_data
from sealpod.errors import ConfigError


def test_report_data_matches_design_formula() -> None:
    nonce, key, meas = b"n" * 32, b"\x30\x59key", b"m" * 32
    expected = hashlib.sha512(b"sealpod-attest/v1\x00" + nonce + key + meas).digest()
    assert attestation_report_data(nonce, key, meas) == expected
    assert len(expected) == 64


def test_each_input_changes_the_result() -> None:
    base = attestation_report_data(b"n" * 32, b"k", b"m" * 32)
    assert attestation_report_data(b"N" + b"n" * 31, b"k", b"m" * 32) != base
    assert attestation_report_data(b"n" * 32, b"K", b"m" * 32) != base
    assert attestation_report_data(b"n" * 32, b"k", b"M" + b"m" * 31) != base


@pytest.mark.parametrize(
    ("nonce", "key", "meas"),
    [(b"n" * 31, b"k", b"m" * 32), (b"n" * 32, b"", b"m" * 32), (b"n" * 32, b"k", b"m" * 33)],
    ids=["short-nonce", "empty-key", "long-measurement"],
)
def test_wrong_sizes_are_refused(nonce: bytes, key: bytes, meas: bytes) -> None:
    with pytest.raises(ConfigError):
        attestation_report_data(nonce, key, meas)
