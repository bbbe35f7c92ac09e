"""The KMS key hierarchy: the master key and envelope encryption of secret versions.

Master key (32 random bytes; from a file, an environment variable, or Shamir shares)
  ├─ HKDF "wrap"     → KEK: wraps each secret version's data key (AES-256-GCM)
  ├─ HKDF "internal" → wraps the KMS's own keys (token signing key, CA key)
  ├─ HKDF "audit"    → HMAC key over each audit record hash
  └─ HKDF "check"    → key-check value stored in the database, so a wrong key or a wrong set
                       of shares is refused at unseal instead of failing later

Each secret version gets its own random 32-byte data key; the value is sealed with AES-256-GCM
under it, with the secret's name and version as associated data, so a ciphertext moved to
another name or version does not open. The data key is wrapped the same way under the KEK.
Tampering and a wrong key raise the same :class:`CryptoError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealpod._files import read_limited
from sealpod.errors import ConfigError, CryptoError

MASTER_KEY_SIZE = 32
DATA_KEY_SIZE = 32
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
MASTER_KEY_ENV = "SEALPOD_KMS_MASTER_KEY"
log = logging.getLogger("sealpod.kms.keys")
_CHECK_LABEL = b"sealpod-kms/v1 key check"


def _derive(master: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"sealpod-kms/v1",
        info=label.encode(),
    ).derive(master)


def _aad(kind: bytes, name: str, version: int) -> bytes:
    # NUL can never appear in a secret name (models refuse it), so the framing is unambiguous.
    return kind + b"\x00" + name.encode() + b"\x00" + str(version).encode()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: returns ``nonce || ciphertext || tag`` (fresh random 96-bit nonce)."""
    nonce = os.urandom(GCM_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`seal`.

    Raises:
        CryptoError: too short, tampered, wrong key or wrong associated data (alike).
    """
    if len(blob) < GCM_NONCE_SIZE + GCM_TAG_SIZE:
        raise CryptoError(
            f"sealed blob is {len(blob)} bytes, expected at least {GCM_NONCE_SIZE + GCM_TAG_SIZE}"
        )
    try:
        return AESGCM(key).decrypt(blob[:GCM_NONCE_SIZE], blob[GCM_NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise CryptoError("decryption failed: data tampered or wrong key") from exc


@dataclass(frozen=True, slots=True)
class SealedValue:
    """A secret version at rest: its wrapped data key and its ciphertext."""

    wrapped_key: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The unsealed master key and the subkeys derived from it. Never printed."""

    raw: bytes = field(repr=False)
    _kek: bytes = field(init=False, repr=False)
    _internal: bytes = field(init=False, repr=False)
    _audit: bytes = field(init=False, repr=False)
    _check: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != MASTER_KEY_SIZE:
            raise ConfigError(f"master key is {len(self.raw)} bytes, expected {MASTER_KEY_SIZE}")
        object.__setattr__(self, "_kek", _derive(self.raw, "wrap"))
        object.__setattr__(self, "_internal", _derive(self.raw, "internal"))
        object.__setattr__(self, "_audit", _derive(self.raw, "audit"))
        check = hmac.new(_derive(self.raw, "check"), _CHECK_LABEL, hashlib.sha256).digest()
        object.__setattr__(self, "_check", check)

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(MASTER_KEY_SIZE))

    @property
    def key_id(self) -> str:
        """A short public identifier (first 8 hex digits of the key-check value)."""
        return self.check_value()[:4].hex()

    def check_value(self) -> bytes:
        """HMAC of a fixed label under a derived key: stored, compared at unseal (and, as hex,
        before every audit append, so a process left on a replaced key stops writing)."""
        return self._check

    def matches(self, stored_check: bytes) -> bool:
        """Constant-time comparison with a stored key-check value."""
        return hmac.compare_digest(self.check_value(), stored_check)

    # -- secret versions ---------------------------------------------------------------------
    def encrypt_version(self, name: str, version: int, value: bytes) -> SealedValue:
        """Seal ``value`` under a fresh data key, and wrap the data key under the KEK."""
        data_key = secrets.token_bytes(DATA_KEY_SIZE)
        return SealedValue(
            wrapped_key=seal(self._kek, data_key, _aad(b"dk", name, version)),
            ciphertext=seal(data_key, value, _aad(b"value", name, version)),
        )

    def decrypt_version(self, name: str, version: int, sealed: SealedValue) -> bytes:
        """Open a sealed secret version.

        Raises:
            CryptoError: tampered, moved to another name/version, or another master key.
        """
        data_key = unseal(self._kek, sealed.wrapped_key, _aad(b"dk", name, version))
        return unseal(data_key, sealed.ciphertext, _aad(b"value", name, version))

    # -- the KMS's own keys ----------------------------------------------------------------
    def wrap_internal(self, label: str, value: bytes) -> bytes:
        return seal(self._internal, value, _aad(b"internal", label, 0))

    def unwrap_internal(self, label: str, blob: bytes) -> bytes:
        """Raises: CryptoError on tampering or another master key."""
        return unseal(self._internal, blob, _aad(b"internal", label, 0))

    # -- audit -------------------------------------------------------------------------------
    def audit_mac(self, record_hash: bytes) -> bytes:
        return hmac.new(self._audit, record_hash, hashlib.sha256).digest()


def rewrap_data_key(
    old: MasterKey, new: MasterKey, name: str, version: int, wrapped: bytes
) -> bytes:
    """A secret version's data key, unwrapped under ``old``'s KEK and wrapped under ``new``'s
    (a rekey: the value's ciphertext, sealed under the data key itself, is left alone).

    Raises:
        CryptoError: the wrapped key is tampered or not ``old``'s.
    """
    aad = _aad(b"dk", name, version)
    return seal(new._kek, unseal(old._kek, wrapped, aad), aad)


_ESCROW_AAD = b"sealpod-kms/v1 recovery escrow"


def escrow_master(recovery: bytes, master: MasterKey) -> bytes:
    """The master key sealed under a key derived from the recovery key (what recovery shares,
    once combined, open; stored in the database beside the recovery key wrapped the other way).
    """
    return seal(_derive(recovery, "escrow"), master.raw, _ESCROW_AAD)


def open_escrow(recovery: bytes, blob: bytes) -> MasterKey:
    """Inverse of :func:`escrow_master`.

    Raises:
        CryptoError: another recovery key, or a tampered escrow.
    """
    return MasterKey(unseal(_derive(recovery, "escrow"), blob, _ESCROW_AAD))


# -- master key sources ----------------------------------------------------------------------
def encode_master_key(key: MasterKey) -> str:
    """Text form for a key file or environment variable: base64 of the 32 bytes."""
    return base64.b64encode(key.raw).decode()


def decode_master_key(text: str, *, source: str) -> MasterKey:
    """Parse base64 (or 64 hex digits) into a master key.

    Raises:
        ConfigError: not base64/hex or not 32 bytes. The message names ``source``, never the value.
    """
    text = text.strip()
    raw: bytes
    try:
        if len(text) == 2 * MASTER_KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in text):
            raw = bytes.fromhex(text)
        else:
            raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"master key in {source} is not base64 or hex") from exc
    if len(raw) != MASTER_KEY_SIZE:
        raise ConfigError(f"master key in {source} is {len(raw)} bytes, expected {MASTER_KEY_SIZE}")
    return MasterKey(raw)


def load_master_key_file(path: Path) -> MasterKey:
    """Read a master key file, refusing one that others can read.

    Raises:
        ConfigError: missing, unreadable, group/world-accessible, or malformed.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read master key file {path}: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"master key file {path} has mode {stat.S_IMODE(st.st_mode):o}, expected 600"
        )
    raw = read_limited(path, "master key file", limit=1024, error=ConfigError)
    return decode_master_key(raw.decode("ascii", "replace"), source=str(path))


def write_master_key_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` (mode 0600, refusing to overwrite) holding the key.

    Raises:
        ConfigError: the file exists or cannot be created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"master key file {path} already exists; refusing to overwrite") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create master key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(encode_master_key(key) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    # The directory entry too: a key whose file vanishes with a power cut is a key lost.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:  # some filesystems cannot sync a directory: say so, carry on
        log.warning("event=key_dir_not_synced path=%s reason=%s", path.parent, exc.strerror)


def load_master_key_env(environ: dict[str, str] | None = None) -> MasterKey | None:
    """The key from ``SEALPOD_KMS_MASTER_KEY`` if set, else None.

    Raises:
        ConfigError: set but malformed.
    """
    env = os.environ if environ is None else environ
    value = env.get(MASTER_KEY_ENV)
    if not value:
        return None
    return decode_master_key(value, source=f"${MASTER_KEY_ENV}")
