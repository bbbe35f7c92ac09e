"""Master key sources and envelope encryption of secret versions."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealpod.errors import ConfigError, CryptoError
from sealpod.kms.keys import (
    MASTER_KEY_ENV,
    MasterKey,
    decode_master_key,
    encode_master_key,
    load_master_key_env,
    load_master_key_file,
    write_master_key_file,
)

KEY = MasterKey(bytes(range(32)))


@given(value=st.binary(max_size=2048), version=st.integers(1, 10**6))
@settings(max_examples=40)
def test_version_round_trip(value: bytes, version: int) -> None:
    sealed = KEY.encrypt_version("db-password", version, value)
    assert KEY.decrypt_version("db-password", version, sealed) == value
    assert len(value) < 8 or value not in sealed.ciphertext


def test_each_version_has_its_own_data_key() -> None:
    a = KEY.encrypt_version("n", 1, b"same")
    b = KEY.encrypt_version("n", 1, b"same")
    assert a.wrapped_key != b.wrapped_key and a.ciphertext != b.ciphertext


def test_ciphertext_moved_to_another_name_does_not_open() -> None:
    sealed = KEY.encrypt_version("alpha", 1, b"v")
    with pytest.raises(CryptoError):
        KEY.decrypt_version("beta", 1, sealed)


def test_ciphertext_moved_to_another_version_does_not_open() -> None:
    sealed = KEY.encrypt_version("alpha", 1, b"v")
    with pytest.raises(CryptoError):
        KEY.decrypt_version("alpha", 2, sealed)


def test_swapped_data_key_does_not_open() -> None:
    a = KEY.encrypt_version("a", 1, b"v1")
    b = KEY.encrypt_version("a", 1, b"v2")
    with pytest.raises(CryptoError):
        KEY.decrypt_version("a", 1, replace(a, wrapped_key=b.wrapped_key))


@pytest.mark.parametrize("part", ["wrapped_key", "ciphertext"])
def test_every_flipped_byte_is_detected(part: str) -> None:
    sealed = KEY.encrypt_version("a", 3, b"hello world")
    blob = getattr(sealed, part)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(CryptoError):
            KEY.decrypt_version("a", 3, replace(sealed, **{part: bytes(bad)}))
    with pytest.raises(CryptoError):
        KEY.decrypt_version("a", 3, replace(sealed, **{part: blob[:10]}))


def test_another_master_key_fails_like_tampering() -> None:
    sealed = KEY.encrypt_version("a", 1, b"v")
    with pytest.raises(CryptoError, match="tampered or wrong key"):
        MasterKey.generate().decrypt_version("a", 1, sealed)


def test_internal_wrap_is_label_bound() -> None:
    blob = KEY.wrap_internal("token-signing", b"k")
    assert KEY.unwrap_internal("token-signing", blob) == b"k"
    with pytest.raises(CryptoError):
        KEY.unwrap_internal("ca", blob)


def test_check_value_identifies_the_key() -> None:
    check = KEY.check_value()
    assert KEY.matches(check)
    assert not MasterKey.generate().matches(check)
    assert len(KEY.key_id) == 8


def test_repr_hides_the_key() -> None:
    assert KEY.raw.hex() not in repr(KEY)
    assert "\\x00\\x01" not in repr(KEY)


def test_wrong_size_key_refused() -> None:
    with pytest.raises(ConfigError, match="expected 32"):
        MasterKey(b"short")


def test_key_file_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_master_key_file(path, KEY)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_master_key_file(path) == KEY
    with pytest.raises(ConfigError, match="already exists"):
        write_master_key_file(path, KEY)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="expected 600"):
        load_master_key_file(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_master_key_file(tmp_path / "absent")


def test_env_key() -> None:
    assert load_master_key_env({}) is None
    assert load_master_key_env({MASTER_KEY_ENV: encode_master_key(KEY)}) == KEY
    assert load_master_key_env({MASTER_KEY_ENV: KEY.raw.hex()}) == KEY
    with pytest.raises(ConfigError) as info:
        load_master_key_env({MASTER_KEY_ENV: "not base64!!"})
    assert "not base64!!" not in str(info.value)


def test_decode_wrong_length() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        decode_master_key(base64.b64encode(b"x" * 16).decode(), source="test")
