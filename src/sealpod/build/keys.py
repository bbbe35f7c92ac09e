"""Author keys: generate, store (0600, atomically, optionally passphrase-protected) and load.

Three key types are accepted, and nothing else: Ed25519 (the default), ECDSA on P-384, and
RSA-3072 with public exponent 3 — the only RSA key SGX's SIGSTRUCT accepts, so the same author
key can later sign SGX enclaves. The **signer id** is SHA-256 of the public key's DER
SubjectPublicKeyInfo (docs/protocol.md, Artifacts and identities), the bundle's equivalent of
MRSIGNER.
"""

from __future__ import annotations

import enum
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sealpod._files import read_limited
from sealpod.errors import ConfigError, CryptoError

AuthorPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
AuthorPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

#: Environment variable that may hold the key passphrase (never a command-line value: argv is
#: visible to every user of the machine through /proc).
PASSPHRASE_ENV = "SEALPOD_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
MAX_KEY_FILE_SIZE = 64 * 1024
#: OpenSSL's PEM encryption takes at most 1023 passphrase bytes; a longer one is refused rather
#: than silently cut (which would lock the author out of a key they believe they protected).
MAX_PASSPHRASE_SIZE = 1023
RSA_BITS = 3072
RSA_EXPONENT = 3  # SGX SIGSTRUCT: 3072-bit modulus, exponent 3


class KeyType(enum.StrEnum):
    ED25519 = "ed25519"
    ECDSA_P384 = "ecdsa-p384"
    RSA_3072 = "rsa-3072"


def generate_key(kind: KeyType = KeyType.ED25519) -> AuthorPrivateKey:
    """A fresh author key of ``kind``.

    Raises:
        ConfigError: an unknown key type.
    """
    if kind is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if kind is KeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if kind is KeyType.RSA_3072:
        return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS)
    raise ConfigError(f"key type is {kind!r}, expected one of {', '.join(KeyType)}")


def key_type(key: AuthorPrivateKey | AuthorPublicKey) -> KeyType:
    """The :class:`KeyType` of ``key``.

    Raises:
        ConfigError: a curve other than P-384, or an RSA key that is not 3072-bit with e=3.
    """
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise ConfigError(f"ECDSA key curve is {key.curve.name}, expected secp384r1 (P-384)")
        return KeyType.ECDSA_P384
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        public = key if isinstance(key, rsa.RSAPublicKey) else key.public_key()
        e = public.public_numbers().e
        if key.key_size != RSA_BITS or e != RSA_EXPONENT:
            raise ConfigError(
                f"RSA key is {key.key_size}-bit with e={e}, expected {RSA_BITS}-bit with"
                f" e={RSA_EXPONENT} (as SGX SIGSTRUCT requires)"
            )
        return KeyType.RSA_3072
    raise ConfigError(f"key is {type(key).__name__}, expected Ed25519, ECDSA P-384 or RSA-3072")


def public_key_der(key: AuthorPublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``.

    Raises:
        Nothing for the supported key types.
    """
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signer_id(key: AuthorPublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo (32 bytes): the bundle's MRSIGNER.

    Raises:
        Nothing for the supported key types.
    """
    return hashlib.sha256(public_key_der(key)).digest()


def private_key_pem(key: AuthorPrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when ``passphrase`` is given.

    Raises:
        ConfigError: an empty passphrase, or one longer than ``MAX_PASSPHRASE_SIZE`` bytes.
    """
    if passphrase is not None:
        _check_passphrase(passphrase, "the key passphrase")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def write_private_key(path: Path, pem: bytes, *, force: bool = False) -> None:
    """Write ``pem`` to ``path`` with mode 0600, atomically.

    The bytes go to a temporary file created 0600 with ``O_EXCL`` (so the key is never readable
    by others, not even for an instant), are synced, then linked into place: without ``force``
    the link fails if ``path`` exists, so a concurrent writer cannot be overwritten either.

    Raises:
        ConfigError: ``path`` exists and ``force`` is false, or the directory is not writable.
    """
    if not force and (path.exists() or path.is_symlink()):
        raise ConfigError(f"{path} already exists; use --force to overwrite it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _move_into_place(tmp, path, force=force)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _move_into_place(tmp: Path, path: Path, *, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists; use --force to overwrite it") from exc


def read_passphrase(passphrase_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The key passphrase from ``passphrase_file`` (one trailing newline dropped) or else from
    ``$SEALPOD_KEY_PASSPHRASE``; ``None`` when neither is given.

    Raises:
        ConfigError: the file cannot be read, or the passphrase is empty or longer than
            ``MAX_PASSPHRASE_SIZE`` bytes.
    """
    if passphrase_file is not None:
        raw = read_limited(
            passphrase_file, "passphrase file", limit=MAX_PASSPHRASE_SIZE + 2, error=ConfigError
        )
        value = raw.removesuffix(b"\n").removesuffix(b"\r")
        return _check_passphrase(value, f"passphrase file {passphrase_file}")
    env_value = environ.get(PASSPHRASE_ENV)
    if env_value is None:
        return None
    return _check_passphrase(env_value.encode("utf-8"), f"${PASSPHRASE_ENV}")


def _check_passphrase(value: bytes, source: str) -> bytes:
    # The message gives the length only: never the passphrase or any part of it.
    if not value:
        raise ConfigError(f"{source} is empty, expected a passphrase")
    if len(value) > MAX_PASSPHRASE_SIZE:
        raise ConfigError(
            f"{source} holds more than {MAX_PASSPHRASE_SIZE} bytes, expected at most "
            f"{MAX_PASSPHRASE_SIZE} (OpenSSL's limit for PEM encryption)"
        )
    return value


def parse_private_key(
    pem: bytes, passphrase: bytes | None, *, name: str = "key"
) -> AuthorPrivateKey:
    """Parse a PEM private key (PKCS#8 or traditional) and check it is a supported type.

    Raises:
        ConfigError: not a PEM private key, encrypted but no passphrase given, or a key type
            sealpod does not sign with.
        CryptoError: the passphrase does not decrypt the key.
    """
    encrypted = b"ENCRYPTED" in pem
    if encrypted and passphrase is None:
        raise ConfigError(
            f"{name} is passphrase-protected; give --passphrase-file or set ${PASSPHRASE_ENV}"
        )
    try:
        key = serialization.load_pem_private_key(pem, passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise CryptoError(f"cannot decrypt {name}: wrong passphrase or corrupt key") from exc
        raise ConfigError(f"{name} is not a PEM private key sealpod can read") from exc
    if not isinstance(key, AuthorPrivateKey):
        raise ConfigError(f"{name} is a {type(key).__name__}, expected Ed25519, ECDSA or RSA")
    key_type(key)
    return key


def load_private_key(path: Path, passphrase: bytes | None = None) -> AuthorPrivateKey:
    """Read and parse the author key at ``path``.

    An unencrypted key that other users can read is refused, as ssh refuses one.

    Raises:
        ConfigError: missing / unreadable / oversized / group- or world-readable file, not a
            key, a passphrase is needed, or an unsupported key type.
        CryptoError: wrong passphrase.
    """
    try:
        # O_NONBLOCK: a FIFO is refused below as not a regular file instead of hanging open().
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read author key {path}: {exc.strerror or exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"author key {path} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        pem = fh.read(MAX_KEY_FILE_SIZE + 1)
    if len(pem) > MAX_KEY_FILE_SIZE:
        raise ConfigError(f"author key {path} is larger than {MAX_KEY_FILE_SIZE} bytes")
    if b"ENCRYPTED" not in pem and info.st_mode & 0o077:
        raise ConfigError(
            f"author key {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
            f"; run: chmod 600 {path}"
        )
    return parse_private_key(pem, passphrase, name=f"author key {path}")
