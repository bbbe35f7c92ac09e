"""Volume cryptography: key hierarchy, wrapping, node and metadata encryption.

All primitives come from ``cryptography`` (AES-256-GCM, HKDF-SHA256, HMAC-SHA256). The key
hierarchy (docs/volume-format.md, "Keys"):

* ``KEK = HKDF(key material, salt = header.kdf_salt, info = "sealpod/volume/v1/kek" || volume_id)``
  — the key-encryption key, from a key file or handed over by the runtime / KMS.
* ``VK`` — 32 random bytes, the volume key, stored only wrapped by the KEK (AES-256-GCM), so
  that ``rekey`` re-wraps it without touching the data.
* From VK by HKDF: the header MAC key, the journal MAC key and the metadata base key.
* Each metadata write uses a fresh key ``HKDF(meta base, salt = random 32 bytes, info = ...
  file_id)``; each batch of tree-node writes uses a fresh random key, stored in the parent entry.

Authentication failures are reported as :class:`VolumeCorrupt` whatever the cause: a wrong key
and a tampered byte look the same on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealpod.errors import ConfigError, VolumeCorrupt
from sealpod.volume import format as fmt

_LABEL = b"sealpod/volume/v1/"
_ZERO_NONCE = bytes(fmt.NONCE_SIZE)
VOLUME_KEY_SIZE = 32


def _hkdf(ikm: bytes, *, salt: bytes | None, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_kek(key: bytes, *, kdf_id: int, salt: bytes, volume_id: bytes) -> bytes:
    """The key-encryption key from caller-supplied key material.

    Raises:
        ConfigError: the key material is not 32 bytes.
        VolumeFormatError: unknown ``kdf_id`` (checked by the header parser).
    """
    if len(key) != VOLUME_KEY_SIZE:
        raise ConfigError(f"volume key is {len(key)} bytes, expected {VOLUME_KEY_SIZE}")
    if kdf_id != fmt.KDF_HKDF_SHA256:
        raise ConfigError(f"kdf_id is {kdf_id}, expected {fmt.KDF_HKDF_SHA256}")
    return _hkdf(key, salt=salt, info=_LABEL + b"kek" + volume_id)


def wrap_volume_key(kek: bytes, volume_key: bytes, *, nonce: bytes, aad: bytes) -> bytes:
    """Encrypt VK under the KEK; returns ciphertext (32) || tag (16)."""
    return AESGCM(kek).encrypt(nonce, volume_key, aad)


def unwrap_volume_key(kek: bytes, slot: fmt.HeaderSlot) -> bytes:
    """Recover VK from a header slot.

    Raises:
        VolumeCorrupt: authentication failed (wrong key or a changed header byte).
    """
    try:
        return AESGCM(kek).decrypt(
            slot.wrap_nonce, slot.wrapped_key + slot.wrap_tag, slot.wrap_aad()
        )
    except InvalidTag as exc:
        raise VolumeCorrupt(
            "volume header: the volume key does not unwrap (wrong key, or the header was "
            "corrupted or tampered with)"
        ) from exc


class VolumeKeys:
    """The keys derived from one volume key. Never printed: the repr hides them."""

    __slots__ = ("_header_mac_key", "_journal_mac_key", "_meta_base", "volume_id")

    def __init__(self, volume_key: bytes, volume_id: bytes) -> None:
        if len(volume_key) != VOLUME_KEY_SIZE:
            raise ValueError("volume key must be 32 bytes")
        self.volume_id = volume_id
        self._header_mac_key = _hkdf(volume_key, salt=None, info=_LABEL + b"header" + volume_id)
        self._journal_mac_key = _hkdf(volume_key, salt=None, info=_LABEL + b"journal" + volume_id)
        self._meta_base = _hkdf(volume_key, salt=None, info=_LABEL + b"meta" + volume_id)

    def __repr__(self) -> str:
        return f"VolumeKeys(volume_id={self.volume_id.hex()}, keys=<hidden>)"

    # --- MACs -------------------------------------------------------------------------------
    @staticmethod
    def _mac(key: bytes, data: bytes) -> bytes:
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(data)
        return h.finalize()

    @staticmethod
    def _verify(key: bytes, data: bytes, mac: bytes, what: str) -> None:
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(data)
        try:
            h.verify(mac)
        except InvalidSignature as exc:
            raise VolumeCorrupt(f"{what}: MAC does not verify (corrupt or tampered)") from exc

    def header_mac(self, data: bytes) -> bytes:
        return self._mac(self._header_mac_key, data)

    def verify_header_mac(self, data: bytes, mac: bytes) -> None:
        """Raises: VolumeCorrupt if the header slot's MAC is wrong."""
        self._verify(self._header_mac_key, data, mac, "volume header")

    def journal_mac(self, data: bytes) -> bytes:
        return self._mac(self._journal_mac_key, data)

    def verify_journal_mac(self, data: bytes, mac: bytes) -> None:
        """Raises: VolumeCorrupt if the journal's commit MAC is wrong."""
        self._verify(self._journal_mac_key, data, mac, "journal")

    # --- metadata nodes ---------------------------------------------------------------------
    def _meta_cipher(self, file_id: bytes, salt: bytes) -> AESGCM:
        return AESGCM(_hkdf(self._meta_base, salt=salt, info=_LABEL + b"meta-node" + file_id))

    def seal_meta(self, *, file_kind: int, file_id: bytes, body: fmt.MetaBody) -> fmt.MetaNode:
        """Encrypt a metadata body under a fresh derived key (a new random salt per write)."""
        salt = os.urandom(fmt.SALT_SIZE)
        draft = fmt.MetaNode(
            file_kind=file_kind,
            file_id=file_id,
            key_salt=salt,
            body_ciphertext=bytes(fmt.META_BODY_SIZE),
            tag=bytes(fmt.TAG_SIZE),
        )
        header = draft.header_bytes()
        sealed = self._meta_cipher(file_id, salt).encrypt(
            _ZERO_NONCE, body.to_bytes(), fmt.meta_aad(self.volume_id, header)
        )
        return fmt.MetaNode(
            file_kind=file_kind,
            file_id=file_id,
            key_salt=salt,
            body_ciphertext=sealed[: fmt.META_BODY_SIZE],
            tag=sealed[fmt.META_BODY_SIZE :],
        )

    def open_meta(self, node: fmt.MetaNode, what: str) -> fmt.MetaBody:
        """Decrypt and parse a metadata node.

        Raises:
            VolumeCorrupt: authentication fails or the body does not parse.
        """
        try:
            body = self._meta_cipher(node.file_id, node.key_salt).decrypt(
                _ZERO_NONCE,
                node.body_ciphertext + node.tag,
                fmt.meta_aad(self.volume_id, node.header_bytes()),
            )
        except InvalidTag as exc:
            raise VolumeCorrupt(
                f"{what}: metadata node fails authentication (corrupt, tampered or wrong key)"
            ) from exc
        return fmt.MetaBody.from_bytes(body)


class BatchCipher:
    """Encrypts one batch of tree nodes under one fresh random key.

    Every node in a batch has a distinct (kind, index), hence a distinct nonce, so a key is
    never used twice with one nonce; a new batch (a new key) starts for every flush.
    """

    __slots__ = ("_aad_prefix", "_aead", "key")

    def __init__(self, volume_id: bytes, file_id: bytes) -> None:
        self.key = os.urandom(fmt.KEY_SIZE)
        self._aead = AESGCM(self.key)
        self._aad_prefix = volume_id + file_id

    def __repr__(self) -> str:
        return "BatchCipher(key=<hidden>)"

    def encrypt_into(
        self, kind: int, index: int, plaintext: bytes | bytearray | memoryview, out: memoryview
    ) -> bytes:
        """Write the 4096-byte ciphertext and 16-byte tag into ``out`` (4112 bytes); return
        the entry (key || tag) for the parent."""
        position = index.to_bytes(8, "little")
        kind_byte = _KIND_BYTES[kind]
        self._aead.encrypt_into(
            kind_byte + b"\0\0\0" + position,  # fmt.tree_nonce
            plaintext,
            self._aad_prefix + kind_byte + position,  # fmt.tree_aad
            out,
        )
        return self.key + bytes(out[fmt.NODE_SIZE :])

    def seal_run(
        self,
        kind: int,
        indices: Sequence[int],
        plaintexts: Sequence[bytes | bytearray | memoryview],
        out: memoryview,
    ) -> list[bytes]:
        """Encrypt a run of nodes into ``out`` (``len * 4096 + 16`` bytes), back to back;
        return each node's tag. Node ``k``'s tag lands where node ``k + 1`` starts, so it is
        copied out before the next encryption overwrites it."""
        aead, prefix, kind_byte = self._aead, self._aad_prefix, _KIND_BYTES[kind]
        tags: list[bytes] = []
        at = 0
        for index, plaintext in zip(indices, plaintexts, strict=True):
            position = index.to_bytes(8, "little")
            aead.encrypt_into(
                kind_byte + b"\0\0\0" + position,
                plaintext,
                prefix + kind_byte + position,
                out[at : at + _SEALED],
            )
            at += fmt.NODE_SIZE
            tags.append(bytes(out[at : at + fmt.TAG_SIZE]))
        return tags


_SEALED = fmt.NODE_SIZE + fmt.TAG_SIZE
_ZERO_NODE = bytes(fmt.NODE_SIZE)
_ZERO_KEY = bytes(fmt.KEY_SIZE)


def _no_key(nonce: bytes, data: memoryview, aad: bytes, out: bytearray | memoryview) -> int:
    raise AssertionError("unreachable: a non-hole entry always selects a key first")


_KIND_BYTES = (bytes((fmt.NODE_KIND_DATA,)), bytes((fmt.NODE_KIND_MHT,)))


class TreeDecryptor:
    """Decrypts tree nodes given their parent entries; caches one AESGCM per batch key."""

    __slots__ = ("_aad_prefix", "_aeads")

    def __init__(self, volume_id: bytes, file_id: bytes) -> None:
        self._aad_prefix = volume_id + file_id
        self._aeads: dict[bytes, AESGCM] = {}

    def __repr__(self) -> str:
        return "TreeDecryptor(keys=<hidden>)"

    def open_run(
        self,
        kind: int,
        first: int,
        entries: bytes,
        sealed: memoryview,
        outs: Sequence[bytearray | memoryview],
        what: Callable[[], str],
    ) -> None:
        """Authenticate and decrypt consecutive nodes ``first, first + 1, ...``.

        ``entries`` holds their parent entries back to back; ``sealed`` holds the ciphertexts
        with a 4112-byte stride (16 spare bytes after each, where the tag is placed). An all-zero
        entry is a hole: its output is zero-filled.

        Raises:
            VolumeCorrupt: a ciphertext is not what its parent entry commits to.
        """
        aeads, kind_byte = self._aeads, _KIND_BYTES[kind]
        nonce_head, aad_head = kind_byte + b"\0\0\0", self._aad_prefix + kind_byte
        node, sealed_size, key_size, entry_size = fmt.NODE_SIZE, _SEALED, fmt.KEY_SIZE, 48
        last_key = b""
        decrypt: Callable[[bytes, memoryview, bytes, bytearray | memoryview], int] = _no_key
        at = base = 0
        for k, out in enumerate(outs):
            key = entries[at : at + key_size]
            if key != last_key:
                if key == _ZERO_KEY and entries[at : at + entry_size] == fmt.ZERO_ENTRY:
                    out[:] = _ZERO_NODE  # a hole
                    at += entry_size
                    base += sealed_size
                    continue
                aead = aeads.get(key)
                if aead is None:
                    if len(aeads) > 4096:
                        aeads.clear()
                    aead = aeads[key] = AESGCM(key)
                decrypt = aead.decrypt_into
                last_key = key
            sealed[base + node : base + sealed_size] = entries[at + key_size : at + entry_size]
            position = (first + k).to_bytes(8, "little")
            try:
                decrypt(
                    nonce_head + position,
                    sealed[base : base + sealed_size],
                    aad_head + position,
                    out,
                )
            except InvalidTag as exc:
                name = "data" if kind == fmt.NODE_KIND_DATA else "MHT"
                raise VolumeCorrupt(
                    f"{what()}: {name} node {first + k} fails authentication (corrupt, "
                    "tampered, swapped or rolled back)"
                ) from exc
            at += entry_size
            base += sealed_size

    def decrypt_into(
        self,
        entry: bytes,
        kind: int,
        index: int,
        sealed: bytearray,
        out: bytearray | memoryview,
        what: Callable[[], str],
    ) -> None:
        """Authenticate and decrypt one node. ``sealed`` holds the 4096-byte ciphertext and has
        16 spare bytes at its end, where the tag from ``entry`` is placed.

        Raises:
            VolumeCorrupt: the ciphertext is not what the parent entry commits to.
        """
        key = entry[: fmt.KEY_SIZE]
        aead = self._aeads.get(key)
        if aead is None:
            if len(self._aeads) > 4096:
                self._aeads.clear()
            aead = self._aeads[key] = AESGCM(key)
        sealed[fmt.NODE_SIZE :] = entry[fmt.KEY_SIZE :]
        position = index.to_bytes(8, "little")
        kind_byte = _KIND_BYTES[kind]
        try:
            aead.decrypt_into(
                kind_byte + b"\0\0\0" + position,
                sealed,
                self._aad_prefix + kind_byte + position,
                out,
            )
        except InvalidTag as exc:
            name = "data" if kind == fmt.NODE_KIND_DATA else "MHT"
            raise VolumeCorrupt(
                f"{what()}: {name} node {index} fails authentication (corrupt, tampered, "
                "swapped or rolled back)"
            ) from exc
