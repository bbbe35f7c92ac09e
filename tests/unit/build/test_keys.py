"""Author keys: generation, 0600 atomic storage, passphrases, and every refusal when loading."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealpod.build.keys import (
    MAX_PASSPHRASE_SIZE,
    PASSPHRASE_ENV,
    AuthorPrivateKey,
    KeyType,
    generate_key,
    key_type,
    load_private_key,
    private_key_pem,
    public_key_der,
    read_passphrase,
    signer_id,
    write_private_key,
)
from sealpod.errors import ConfigError, CryptoError


@functools.cache
def cached_key(kind: KeyType) -> AuthorPrivateKey:
    return generate_key(kind)  # RSA-3072 generation is slow: once per type per session


@pytest.mark.parametrize("kind", list(KeyType))
def test_generate_each_type(kind: KeyType) -> None:
    assert key_type(cached_key(kind)) is kind
    assert key_type(cached_key(kind).public_key()) is kind


def test_rsa_key_has_sgx_shape() -> None:
    key = cached_key(KeyType.RSA_3072)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072
    assert key.public_key().public_numbers().e == 3


def test_signer_id_is_sha256_of_spki_der() -> None:
    public = cached_key(KeyType.ED25519).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public_key_der(public) == der
    assert signer_id(public) == hashlib.sha256(der).digest()
    assert len(signer_id(public)) == 32


@pytest.mark.parametrize("kind", list(KeyType))
def test_write_and_load_round_trip(tmp_path: Path, kind: KeyType) -> None:
    path = tmp_path / "author.pem"
    write_private_key(path, private_key_pem(cached_key(kind)))
    loaded = load_private_key(path)
    assert signer_id(loaded.public_key()) == signer_id(cached_key(kind).public_key())


def test_written_key_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_key(tmp_path / "k.pem", private_key_pem(cached_key(KeyType.ED25519)))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_refuses_to_overwrite_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        write_private_key(path, private_key_pem(cached_key(KeyType.ED25519)))
    assert path.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_force_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519)), force=True)
    assert load_private_key(path) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_unwritable_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create"):
        write_private_key(tmp_path / "missing-dir" / "k.pem", b"x")


def test_passphrase_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ECDSA_P384), b"correct horse"))
    assert b"ENCRYPTED" in path.read_bytes()
    key = load_private_key(path, b"correct horse")
    assert key_type(key) is KeyType.ECDSA_P384


def test_wrong_passphrase_is_a_crypto_error(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519), b"right"))
    with pytest.raises(CryptoError, match="wrong passphrase"):
        load_private_key(path, b"wrong")


def test_missing_passphrase_says_how_to_give_one(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519), b"pw"))
    with pytest.raises(ConfigError, match=PASSPHRASE_ENV):
        load_private_key(path)


def test_passphrase_for_an_unencrypted_key_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519)))
    assert load_private_key(path, b"unneeded") is not None


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        private_key_pem(cached_key(KeyType.ED25519), b"")


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["empty", "garbage", "bad-base64-body"],
)
def test_garbage_key_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_private_key(path)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), "expected secp384r1"),
        (lambda: rsa.generate_private_key(65537, 2048), "2048-bit with e=65537"),
    ],
    ids=["p256", "rsa2048"],
)
def test_unsupported_key_types_are_refused(tmp_path: Path, make: object, fragment: str) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_pem(make()))  # type: ignore[operator]
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=fragment):
        load_private_key(path)


def test_world_readable_unencrypted_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519)))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(path)


def test_world_readable_encrypted_key_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_key(path, private_key_pem(cached_key(KeyType.ED25519), b"pw"))
    path.chmod(0o644)
    assert load_private_key(path, b"pw") is not None


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read author key"):
        load_private_key(tmp_path / "none.pem")


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_private_key(tmp_path)


def test_read_passphrase_from_file_drops_one_newline(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret \n")
    assert read_passphrase(f, {}) == b"s3cret "


def test_read_passphrase_file_wins_over_env(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"from-file")
    assert read_passphrase(f, {PASSPHRASE_ENV: "from-env"}) == b"from-file"


def test_read_passphrase_from_env() -> None:
    assert read_passphrase(None, {PASSPHRASE_ENV: "from-env"}) == b"from-env"
    assert read_passphrase(None, {}) is None


@pytest.mark.parametrize("where", ["file", "env"])
def test_empty_passphrase_sources_are_refused(tmp_path: Path, where: str) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"\n")
    with pytest.raises(ConfigError, match="empty"):
        if where == "file":
            read_passphrase(f, {})
        else:
            read_passphrase(None, {PASSPHRASE_ENV: ""})


def test_unreadable_passphrase_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read passphrase file"):
        read_passphrase(tmp_path / "none", {})


def test_passphrase_longer_than_openssl_accepts_is_refused_not_cut(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"p" * (MAX_PASSPHRASE_SIZE + 1) + b"\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_PASSPHRASE_SIZE} bytes") as info:
        read_passphrase(f, {})
    assert "ppp" not in info.value.message  # the length is told, never the passphrase
    with pytest.raises(ConfigError, match=f"more than {MAX_PASSPHRASE_SIZE} bytes"):
        read_passphrase(None, {PASSPHRASE_ENV: "p" * (MAX_PASSPHRASE_SIZE + 1)})
    with pytest.raises(ConfigError, match=f"more than {MAX_PASSPHRASE_SIZE} bytes"):
        private_key_pem(generate_key(), b"p" * (MAX_PASSPHRASE_SIZE + 1))


def test_passphrase_of_exactly_the_limit_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_bytes(b"p" * MAX_PASSPHRASE_SIZE + b"\n")
    passphrase = read_passphrase(f, {})
    assert passphrase == b"p" * MAX_PASSPHRASE_SIZE
    key = generate_key()
    write_private_key(tmp_path / "k.pem", private_key_pem(key, passphrase))
    assert signer_id(load_private_key(tmp_path / "k.pem", passphrase).public_key()) == signer_id(
        key.public_key()
    )


def test_a_fifo_in_place_of_the_key_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_private_key(tmp_path / "k.pem")
