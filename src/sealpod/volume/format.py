"""The on-disk format of sealpod volumes: pure structures, layout arithmetic, no I/O, no crypto.

Every structure here is specified byte by byte in ``docs/volume-format.md``; the offsets below are
that document's tables. All integers are little-endian. A volume directory on the host holds:

``sealpod-volume``  the header file: two 4096-byte header slots (A/B), see :class:`HeaderSlot`
``journal``         the commit journal (absent or empty when the volume is clean)
``files/<hex id>``  one *protected file* per logical file (and one for the inode index)

A protected file is a sequence of 4096-byte *slots*. Slot 0 holds the metadata node
(:class:`MetaNode`); the other slots hold Merkle-tree (MHT) nodes and data nodes laid out as in
Gramine's protected files: MHT node ``j`` is followed by the data nodes it covers. Each MHT node
holds ``DATA_PER_MHT`` data-node entries and ``CHILDREN_PER_MHT`` child-MHT entries; an entry is
the child's AES-256 key and GCM tag, so the parent authenticates the exact child ciphertext.
Data and MHT nodes carry no header of their own: 4096 bytes of plaintext become exactly 4096
bytes of ciphertext, which keeps the storage overhead near 1/77 (1.3 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from sealpod._binary import Reader, Writer
from sealpod.errors import VolumeCorrupt, VolumeFormatError

# --- sizes and constants (docs/volume-format.md, "Constants") ---------------------------------
FORMAT_VERSION = 2
"""What this code writes. Version 2 made the journal a log of records (docs/volume-format.md
§13); header slots and metadata nodes kept their layout, so version 1's are still read."""
READ_VERSIONS = (1, 2)
NODE_SIZE = 4096
KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 12
ENTRY_SIZE = KEY_SIZE + TAG_SIZE  # one child reference in a parent: key || tag
ID_SIZE = 16
SALT_SIZE = 32
MAC_SIZE = 32

DATA_PER_MHT = 76
CHILDREN_PER_MHT = 9
MHT_ENTRIES_SIZE = (DATA_PER_MHT + CHILDREN_PER_MHT) * ENTRY_SIZE  # 4080
MHT_RESERVED_SIZE = NODE_SIZE - MHT_ENTRIES_SIZE  # 16, must be zero
ZERO_ENTRY = bytes(ENTRY_SIZE)  # an all-zero entry is a hole: the child reads as zeros

NODE_KIND_DATA = 0
NODE_KIND_MHT = 1

FILE_KIND_DATA = 1  # a regular file's or a symlink's content
FILE_KIND_INDEX = 2  # the volume's inode index

MAX_PATH_SIZE = 1024  # bytes of UTF-8 logical path bound into a metadata node
MAX_NAME_SIZE = 255
MAX_FILE_SIZE = 1 << 46  # 64 TiB; keeps every slot offset well inside a signed 64-bit off_t

# --- header file -----------------------------------------------------------------------------
HEADER_MAGIC = b"SEALPODV"
HEADER_SLOT_SIZE = 4096
HEADER_FILE_SIZE = 2 * HEADER_SLOT_SIZE
KDF_HKDF_SHA256 = 1
HEADER_WRAP_AAD_SIZE = 72  # bytes [0, 72) are the wrap's associated data
HEADER_WRAP_NONCE_OFFSET = 72
HEADER_WRAP_TAG_OFFSET = 116
HEADER_COUNTER_OFFSET = 136
HEADER_INDEX_ID_OFFSET = 144
HEADER_INDEX_TAG_OFFSET = 160
HEADER_MAC_OFFSET = 176  # HMAC over bytes [0, 176)
HEADER_USED_SIZE = HEADER_MAC_OFFSET + MAC_SIZE  # 208; the rest of the slot must be zero

# --- metadata node ---------------------------------------------------------------------------
META_MAGIC = b"SEALPODF"
META_HEADER_SIZE = 64  # plaintext, the GCM associated data (with the volume id)
META_BODY_SIZE = NODE_SIZE - META_HEADER_SIZE - TAG_SIZE  # 4016 encrypted bytes
META_TAG_OFFSET = NODE_SIZE - TAG_SIZE  # 4080
META_BODY_FIXED_SIZE = 72
META_PATH_OFFSET = META_BODY_FIXED_SIZE
META_INLINE_OFFSET = META_PATH_OFFSET + MAX_PATH_SIZE  # 1096
INLINE_CAPACITY = META_BODY_SIZE - META_INLINE_OFFSET  # 2920 bytes of data kept in the node
META_FLAG_INLINE = 0x1

# --- inode index -----------------------------------------------------------------------------
INDEX_RECORD_SIZE = 512
RECORDS_PER_NODE = NODE_SIZE // INDEX_RECORD_SIZE
ROOT_INO = 0
ORPHAN_PARENT = 0xFFFFFFFF  # unlinked while still open; reclaimed on the next writable open
MAX_RECORDS = 1 << 24
KIND_FREE = 0
KIND_FILE = 1
KIND_DIR = 2
KIND_SYMLINK = 3
_INDEX_NAME_OFFSET = 80
_INDEX_USED_SIZE = _INDEX_NAME_OFFSET + 256

# --- journal ---------------------------------------------------------------------------------
JOURNAL_MAGIC = b"SEALPODJ"
COMMIT_MAGIC = b"SPJCOMMT"
JOURNAL_HEADER_SIZE = 64
JOURNAL_ENTRY_HEADER_SIZE = 32
JOURNAL_ENTRY_SIZE = JOURNAL_ENTRY_HEADER_SIZE + NODE_SIZE
JOURNAL_COMMIT_SIZE = 96
JOURNAL_COMMIT_MAC_OFFSET = 64  # within the commit record
MAX_JOURNAL_ENTRIES = 1 << 22


# ============================================================================================
# Layout arithmetic
# ============================================================================================
def data_nodes_for(size: int) -> int:
    """Number of data nodes a file of ``size`` bytes spans (the last one may be partial)."""
    return -(-size // NODE_SIZE)


def mht_nodes_for(n_data: int) -> int:
    """Number of MHT nodes for ``n_data`` data nodes: MHT ``j`` covers data ``[76j, 76j+76)``."""
    return -(-n_data // DATA_PER_MHT)


def is_inline(size: int) -> bool:
    """Files of at most ``INLINE_CAPACITY`` bytes keep their data inside the metadata node."""
    return size <= INLINE_CAPACITY


def mht_slot(j: int) -> int:
    """Slot of MHT node ``j``: right after the metadata node, then every 77 slots."""
    return 1 + j * (DATA_PER_MHT + 1)


def data_slot(i: int) -> int:
    """Slot of data node ``i``: after its MHT node, at its position within that node's range."""
    j, k = divmod(i, DATA_PER_MHT)
    return mht_slot(j) + 1 + k


def mht_parent(j: int) -> tuple[int, int]:
    """Parent MHT node of MHT ``j >= 1`` and the child position in it (a 9-ary heap)."""
    if j < 1:
        raise ValueError("MHT node 0 is the root and has no parent")
    return divmod(j - 1, CHILDREN_PER_MHT)


def mht_child(j: int, k: int) -> int:
    """MHT index of child ``k`` of MHT ``j``."""
    return j * CHILDREN_PER_MHT + 1 + k


def data_entry_offset(i: int) -> int:
    """Offset, within its MHT node's plaintext, of data node ``i``'s entry."""
    return (i % DATA_PER_MHT) * ENTRY_SIZE


def child_entry_offset(k: int) -> int:
    """Offset, within an MHT node's plaintext, of child MHT ``k``'s entry."""
    return (DATA_PER_MHT + k) * ENTRY_SIZE


def slots_for(size: int) -> int:
    """Slots a committed file of ``size`` bytes occupies (a prefix of the host file)."""
    if is_inline(size):
        return 1
    return data_slot(data_nodes_for(size) - 1) + 1


def storage_size(size: int) -> int:
    """Host bytes of a protected file holding ``size`` bytes (for overhead reports)."""
    return slots_for(size) * NODE_SIZE


def tree_nonce(kind: int, index: int) -> bytes:
    """GCM nonce of a tree node: kind || 3 zero bytes || index (unique within one batch key)."""
    return bytes((kind, 0, 0, 0)) + index.to_bytes(8, "little")


def tree_aad(volume_id: bytes, file_id: bytes, kind: int, index: int) -> bytes:
    """Associated data of a tree node: binds the volume, the file and the node's position."""
    return volume_id + file_id + bytes((kind,)) + index.to_bytes(8, "little")


def _check_id(value: bytes, field: str) -> None:
    if len(value) != ID_SIZE:
        raise ValueError(f"field {field} is {len(value)} bytes, expected {ID_SIZE}")


# ============================================================================================
# Header slot
# ============================================================================================
@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderSlot:
    """One of the two header slots. Authenticated by ``mac`` (HMAC-SHA256 under a key derived
    from the volume key); the volume key itself is wrapped by the key-encryption key."""

    format_version: int = FORMAT_VERSION
    volume_id: bytes
    kdf_id: int = KDF_HKDF_SHA256
    kdf_salt: bytes
    wrap_nonce: bytes
    wrapped_key: bytes
    wrap_tag: bytes
    counter: int
    index_file_id: bytes
    index_meta_tag: bytes
    mac: bytes = bytes(MAC_SIZE)

    def wrap_aad(self) -> bytes:
        """Associated data of the volume-key wrap: bytes [0, 72) of the slot."""
        return self.to_bytes()[:HEADER_WRAP_AAD_SIZE]

    def mac_input(self) -> bytes:
        """The bytes the header MAC covers: [0, 176)."""
        return self.to_bytes()[:HEADER_MAC_OFFSET]

    def to_bytes(self) -> bytes:
        _check_id(self.volume_id, "volume_id")
        _check_id(self.index_file_id, "index_file_id")
        w = Writer()
        w.raw(HEADER_MAGIC).u16(self.format_version).zeros(2).zeros(4)
        w.raw(self.volume_id, ID_SIZE)
        w.u8(self.kdf_id).zeros(7).raw(self.kdf_salt, SALT_SIZE)
        w.raw(self.wrap_nonce, NONCE_SIZE).raw(self.wrapped_key, KEY_SIZE)
        w.raw(self.wrap_tag, TAG_SIZE).zeros(4)
        w.u64(self.counter).raw(self.index_file_id, ID_SIZE).raw(self.index_meta_tag, TAG_SIZE)
        w.raw(self.mac, MAC_SIZE)
        w.zeros(HEADER_SLOT_SIZE - HEADER_USED_SIZE)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> HeaderSlot:
        """Parse one slot.

        Raises:
            VolumeFormatError: wrong size, magic or an unsupported format version.
            VolumeCorrupt: a reserved range is not zero or a field is out of range.
        """
        if len(raw) != HEADER_SLOT_SIZE:
            raise VolumeFormatError(f"header slot is {len(raw)} bytes, expected {HEADER_SLOT_SIZE}")
        head = Reader(raw, name="volume header", error=VolumeFormatError)
        magic = head.take(8, "magic")
        if magic != HEADER_MAGIC:
            raise VolumeFormatError(
                f"field magic is {magic.hex()}, expected {HEADER_MAGIC.hex()} "
                "(not a sealpod volume)"
            )
        version = head.u16("format_version")
        if version not in READ_VERSIONS:
            raise VolumeFormatError(
                f"field format_version is {version}, expected one of {READ_VERSIONS} (unsupported)"
            )
        r = Reader(raw, name="volume header", error=VolumeCorrupt)
        r.take(10, "magic and version")
        r.zeros(2, "flags")
        r.zeros(4, "reserved0")
        volume_id = r.take(ID_SIZE, "volume_id")
        kdf_id = r.u8("kdf_id")
        if kdf_id != KDF_HKDF_SHA256:
            raise VolumeFormatError(f"field kdf_id is {kdf_id}, expected {KDF_HKDF_SHA256}")
        r.zeros(7, "reserved1")
        kdf_salt = r.take(SALT_SIZE, "kdf_salt")
        wrap_nonce = r.take(NONCE_SIZE, "wrap_nonce")
        wrapped_key = r.take(KEY_SIZE, "wrapped_key")
        wrap_tag = r.take(TAG_SIZE, "wrap_tag")
        r.zeros(4, "reserved2")
        counter = r.u64("counter")
        index_file_id = r.take(ID_SIZE, "index_file_id")
        index_meta_tag = r.take(TAG_SIZE, "index_meta_tag")
        mac = r.take(MAC_SIZE, "mac")
        r.end(allow_zero_padding=True)
        return cls(
            format_version=version,
            volume_id=volume_id,
            kdf_id=kdf_id,
            kdf_salt=kdf_salt,
            wrap_nonce=wrap_nonce,
            wrapped_key=wrapped_key,
            wrap_tag=wrap_tag,
            counter=counter,
            index_file_id=index_file_id,
            index_meta_tag=index_meta_tag,
            mac=mac,
        )


# ============================================================================================
# Metadata node
# ============================================================================================
@dataclass(frozen=True, slots=True, kw_only=True)
class MetaNode:
    """Slot 0 of a protected file: a plaintext header, the encrypted body, the GCM tag."""

    format_version: int = FORMAT_VERSION
    file_kind: int
    file_id: bytes
    key_salt: bytes
    body_ciphertext: bytes
    tag: bytes

    def header_bytes(self) -> bytes:
        """Bytes [0, 64): the plaintext header, part of the GCM associated data."""
        _check_id(self.file_id, "file_id")
        w = Writer()
        w.raw(META_MAGIC).u16(self.format_version).u8(self.file_kind).zeros(5)
        w.raw(self.file_id, ID_SIZE).raw(self.key_salt, SALT_SIZE)
        return w.getvalue()

    def to_bytes(self) -> bytes:
        return (
            self.header_bytes()
            + _sized(self.body_ciphertext, META_BODY_SIZE, "body_ciphertext")
            + _sized(self.tag, TAG_SIZE, "tag")
        )

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> MetaNode:
        """Parse a metadata node's framing (the body stays encrypted).

        Raises:
            VolumeCorrupt: wrong size, magic, version, kind or a non-zero reserved byte.
        """
        if len(raw) != NODE_SIZE:
            raise VolumeCorrupt(f"metadata node is {len(raw)} bytes, expected {NODE_SIZE}")
        r = Reader(raw, name="metadata node", error=VolumeCorrupt)
        magic = r.take(8, "magic")
        if magic != META_MAGIC:
            raise VolumeCorrupt(
                f"metadata node: field magic is {magic.hex()}, expected {META_MAGIC.hex()}"
            )
        version = r.u16("format_version")
        if version not in READ_VERSIONS:
            raise VolumeCorrupt(
                f"metadata node: field format_version is {version}, expected one of {READ_VERSIONS}"
            )
        kind = r.u8("file_kind")
        if kind not in (FILE_KIND_DATA, FILE_KIND_INDEX):
            raise VolumeCorrupt(f"metadata node: field file_kind is {kind}, expected 1 or 2")
        r.zeros(5, "reserved")
        file_id = r.take(ID_SIZE, "file_id")
        key_salt = r.take(SALT_SIZE, "key_salt")
        body = r.take(META_BODY_SIZE, "body_ciphertext")
        tag = r.take(TAG_SIZE, "tag")
        r.end()
        return cls(
            format_version=version,
            file_kind=kind,
            file_id=file_id,
            key_salt=key_salt,
            body_ciphertext=body,
            tag=tag,
        )


def meta_aad(volume_id: bytes, header: bytes) -> bytes:
    """Associated data of a metadata node: the volume id and the node's plaintext header."""
    return volume_id + header


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaBody:
    """The decrypted body of a metadata node."""

    size: int
    generation: int
    path: bytes  # the file's logical path within the volume, UTF-8, no leading slash
    root_entry: bytes = ZERO_ENTRY  # key || tag of MHT node 0 (zero when inline or empty)
    inline_data: bytes = b""  # the whole content when the file is inline

    @property
    def inline(self) -> bool:
        return is_inline(self.size)

    def to_bytes(self) -> bytes:
        if len(self.path) > MAX_PATH_SIZE:
            raise ValueError(f"path is {len(self.path)} bytes, expected at most {MAX_PATH_SIZE}")
        if self.inline:
            if len(self.inline_data) != self.size or self.root_entry != ZERO_ENTRY:
                raise ValueError("an inline body holds exactly size bytes and no root entry")
        elif self.inline_data:
            raise ValueError("a tree body holds no inline data")
        w = Writer()
        w.u64(self.size).u64(self.generation).u32(META_FLAG_INLINE if self.inline else 0)
        w.u16(len(self.path)).zeros(2).raw(self.root_entry, ENTRY_SIZE)
        w.raw(self.path).zeros(MAX_PATH_SIZE - len(self.path))
        w.raw(self.inline_data).zeros(INLINE_CAPACITY - len(self.inline_data))
        return w.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> MetaBody:
        """Parse a decrypted body; authenticated bytes that do not parse mean corruption.

        Raises:
            VolumeCorrupt: any field out of range or a must-be-zero byte set.
        """
        r = Reader(raw, name="metadata body", error=VolumeCorrupt)
        size = r.u64("size")
        if size > MAX_FILE_SIZE:
            r.fail(f"field size is {size}, expected at most {MAX_FILE_SIZE}", "size")
        generation = r.u64("generation")
        flags = r.u32("flags")
        expected_flags = META_FLAG_INLINE if is_inline(size) else 0
        if flags != expected_flags:
            r.fail(f"field flags is {flags:#x}, expected {expected_flags:#x}", "flags")
        path_len = r.u16("path_len")
        if path_len > MAX_PATH_SIZE:
            r.fail(f"field path_len is {path_len}, expected at most {MAX_PATH_SIZE}", "path_len")
        r.zeros(2, "reserved")
        root_entry = r.take(ENTRY_SIZE, "root_entry")
        path = r.take(path_len, "path")
        if b"\0" in path:
            r.fail("field path contains a NUL byte", "path")
        r.zeros(MAX_PATH_SIZE - path_len, "path padding")
        inline_data = b""
        if flags & META_FLAG_INLINE:
            if root_entry != ZERO_ENTRY:
                r.fail("field root_entry is set, expected zero for an inline file", "root_entry")
            inline_data = r.take(size, "inline_data")
            r.zeros(INLINE_CAPACITY - size, "inline padding")
        else:
            r.zeros(INLINE_CAPACITY, "inline area")
        r.end()
        return cls(
            size=size,
            generation=generation,
            path=path,
            root_entry=root_entry,
            inline_data=inline_data,
        )


def _sized(value: bytes, size: int, field: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"field {field} is {len(value)} bytes, expected {size}")
    return value


# ============================================================================================
# Inode index records
# ============================================================================================
@dataclass(frozen=True, slots=True, kw_only=True)
class IndexRecord:
    """One 512-byte record of the inode index; record number = inode number (root = 0)."""

    kind: int
    mode: int = 0
    parent: int = 0
    uid: int = 0
    gid: int = 0
    generation: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    file_id: bytes = bytes(ID_SIZE)
    meta_tag: bytes = bytes(TAG_SIZE)
    name: bytes = b""

    def to_bytes(self) -> bytes:
        if len(self.name) > MAX_NAME_SIZE:
            raise ValueError(f"name is {len(self.name)} bytes, expected at most {MAX_NAME_SIZE}")
        if self.kind == KIND_FREE:
            return bytes(INDEX_RECORD_SIZE)
        w = Writer()
        w.u8(self.kind).zeros(1).u16(len(self.name)).u32(self.mode).u32(self.parent)
        w.u32(self.uid).u32(self.gid).u32(self.generation).u64(self.size)
        w.raw(self.mtime_ns.to_bytes(8, "little", signed=True))
        w.raw(self.ctime_ns.to_bytes(8, "little", signed=True))
        w.raw(self.file_id, ID_SIZE).raw(self.meta_tag, TAG_SIZE)
        w.raw(self.name).zeros(256 - len(self.name)).zeros(INDEX_RECORD_SIZE - _INDEX_USED_SIZE)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> IndexRecord:
        """Parse one record (all-zero is a free record).

        Raises:
            VolumeCorrupt: unknown kind, oversized name or mode, non-zero reserved bytes.
        """
        r = Reader(raw, name="index record", error=VolumeCorrupt)
        kind = r.u8("kind")
        if kind == KIND_FREE:
            r.zeros(INDEX_RECORD_SIZE - 1, "free record")
            return cls(kind=KIND_FREE)
        if kind not in (KIND_FILE, KIND_DIR, KIND_SYMLINK):
            r.fail(f"field kind is {kind}, expected 1, 2 or 3", "kind")
        r.zeros(1, "reserved0")
        name_len = r.u16("name_len")
        if name_len > MAX_NAME_SIZE:
            r.fail(f"field name_len is {name_len}, expected at most {MAX_NAME_SIZE}", "name_len")
        mode = r.u32("mode")
        if mode > 0o7777:
            r.fail(f"field mode is {mode:#o}, expected at most 0o7777", "mode")
        parent = r.u32("parent")
        uid = r.u32("uid")
        gid = r.u32("gid")
        generation = r.u32("generation")
        size = r.u64("size")
        if size > MAX_FILE_SIZE:
            r.fail(f"field size is {size}, expected at most {MAX_FILE_SIZE}", "size")
        mtime_ns = int.from_bytes(r.take(8, "mtime_ns"), "little", signed=True)
        ctime_ns = int.from_bytes(r.take(8, "ctime_ns"), "little", signed=True)
        file_id = r.take(ID_SIZE, "file_id")
        meta_tag = r.take(TAG_SIZE, "meta_tag")
        name = r.take(name_len, "name")
        r.zeros(256 - name_len, "name padding")
        r.zeros(INDEX_RECORD_SIZE - _INDEX_USED_SIZE, "reserved1")
        r.end()
        return cls(
            kind=kind,
            mode=mode,
            parent=parent,
            uid=uid,
            gid=gid,
            generation=generation,
            size=size,
            mtime_ns=mtime_ns,
            ctime_ns=ctime_ns,
            file_id=file_id,
            meta_tag=meta_tag,
            name=name,
        )


# ============================================================================================
# Journal
# ============================================================================================
@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """A node to write at ``slot`` of protected file ``file_id`` when the journal is applied."""

    file_id: bytes
    slot: int
    node: bytes

    def to_bytes(self) -> bytes:
        w = Writer().raw(self.file_id, ID_SIZE).u64(self.slot).zeros(8)
        return w.raw(self.node, NODE_SIZE).getvalue()


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalCommit:
    """The commit record that ends a journal; its MAC covers every byte before the MAC."""

    entry_count: int
    counter: int
    index_meta_tag: bytes
    mac: bytes = bytes(MAC_SIZE)

    def to_bytes(self) -> bytes:
        w = Writer().raw(COMMIT_MAGIC).u32(self.entry_count).zeros(4).u64(self.counter)
        w.raw(self.index_meta_tag, TAG_SIZE).zeros(24).raw(self.mac, MAC_SIZE)
        return w.getvalue()


def journal_header_bytes(volume_id: bytes, counter: int, *, base: int, entry_count: int) -> bytes:
    """The 64-byte header of one journal record: magic, version, volume id, the counter it
    commits, the counter it applies to and how many entries follow."""
    _check_id(volume_id, "volume_id")
    w = Writer().raw(JOURNAL_MAGIC).u16(FORMAT_VERSION).zeros(6).raw(volume_id, ID_SIZE)
    return w.u64(counter).u64(base).u32(entry_count).zeros(12).getvalue()


def journal_record_size(entry_count: int) -> int:
    """Bytes of one journal record with ``entry_count`` entries."""
    return JOURNAL_HEADER_SIZE + entry_count * JOURNAL_ENTRY_SIZE + JOURNAL_COMMIT_SIZE


def journal_v1_counter(head: bytes | bytearray | memoryview) -> int | None:
    """The counter a version-1 journal (one commit) starting with ``head`` claims, or None
    when ``head`` is not one (unauthenticated: only to refuse an unfinished commit of a
    volume that older code wrote, rather than open it half applied)."""
    view = memoryview(head).cast("B")
    if len(view) < JOURNAL_HEADER_SIZE or bytes(view[:8]) != JOURNAL_MAGIC:
        return None
    if int.from_bytes(view[8:10], "little") != 1:
        return None
    return int.from_bytes(view[32:40], "little")


def journal_record_head(head: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(base, size)`` of the record whose first :data:`JOURNAL_HEADER_SIZE` bytes are
    ``head``: where it applies and how long it is, so that a reader can stop at a stale record
    without reading it (unauthenticated: bounded here, and checked again by the full parse).

    Raises:
        VolumeCorrupt: ``head`` is short or not a journal record header of this version.
    """
    r = Reader(memoryview(head).cast("B"), name="journal", error=VolumeCorrupt)
    if r.remaining < JOURNAL_HEADER_SIZE or r.take(8, "magic") != JOURNAL_MAGIC:
        r.fail("no journal record header here")
    if r.u16("format_version") != FORMAT_VERSION:
        r.fail(f"field format_version is not {FORMAT_VERSION}")
    r.take(6 + ID_SIZE + 8, "fields")
    base = r.u64("base")
    count = r.u32("entry_count")
    if count > MAX_JOURNAL_ENTRIES:
        r.fail(f"journal has {count} entries, expected at most {MAX_JOURNAL_ENTRIES}")
    return base, journal_record_size(count)


@dataclass(frozen=True, slots=True, kw_only=True)
class Journal:
    """One parsed journal record: the commit from counter ``base`` to ``counter``.
    ``mac_input`` is the exact byte range the commit MAC covers; ``size`` its bytes in all."""

    volume_id: bytes
    counter: int
    base: int
    entries: tuple[JournalEntry, ...]
    commit: JournalCommit
    mac_input: bytes
    size: int

    @classmethod
    def from_bytes(cls, raw: bytes | bytearray | memoryview) -> Journal:
        """Parse exactly one complete record.

        Raises:
            VolumeCorrupt: the record is torn, truncated or malformed.
        """
        record = cls.record_at(raw, 0)
        if record.size != len(raw):
            raise VolumeCorrupt(f"journal record is {record.size} bytes, got {len(raw)}")
        return record

    @classmethod
    def record_at(cls, raw: bytes | bytearray | memoryview, offset: int) -> Journal:
        """Parse the record that starts at ``offset`` of the journal ``raw`` (the journal is a
        log of records; what follows the record is not read).

        Raises:
            VolumeCorrupt: no complete, well-formed record starts there (the end of the log: an
                incomplete record is normal after a crash; the caller decides what that means).
        """
        view = memoryview(raw).cast("B")[offset:]
        if len(view) < JOURNAL_HEADER_SIZE + JOURNAL_COMMIT_SIZE:
            raise VolumeCorrupt(f"journal record at {offset}: only {len(view)} bytes remain")
        r = Reader(view, name="journal", error=VolumeCorrupt)
        if r.take(8, "magic") != JOURNAL_MAGIC:
            r.fail("field magic is wrong, expected SEALPODJ", "magic")
        version = r.u16("format_version")
        if version != FORMAT_VERSION:
            r.fail(f"field format_version is {version}, expected {FORMAT_VERSION}")
        r.zeros(6, "reserved0")
        volume_id = r.take(ID_SIZE, "volume_id")
        counter = r.u64("counter")
        base = r.u64("base")
        if base >= counter:
            r.fail(f"field base is {base}, expected below the counter {counter}", "base")
        count = r.u32("entry_count")
        if count > MAX_JOURNAL_ENTRIES:
            r.fail(f"journal has {count} entries, expected at most {MAX_JOURNAL_ENTRIES}")
        r.zeros(12, "reserved1")
        size = journal_record_size(count)
        if size > len(view):
            raise VolumeCorrupt(
                f"journal record at {offset} is {size} bytes, only {len(view)} remain"
            )
        entries = []
        for _ in range(count):
            file_id = r.take(ID_SIZE, "entry file_id")
            slot = r.u64("entry slot")
            r.zeros(8, "entry reserved")
            node = r.take(NODE_SIZE, "entry node")
            entries.append(JournalEntry(file_id=file_id, slot=slot, node=node))
        mac_end = r.offset + JOURNAL_COMMIT_MAC_OFFSET
        if r.take(8, "commit magic") != COMMIT_MAGIC:
            r.fail("field commit magic is wrong, expected SPJCOMMT", "commit magic")
        entry_count = r.u32("commit entry_count")
        if entry_count != count:
            r.fail(f"field entry_count is {entry_count}, expected {count}", "entry_count")
        r.zeros(4, "commit reserved0")
        commit_counter = r.u64("commit counter")
        if commit_counter != counter:
            r.fail(f"field commit counter is {commit_counter}, expected {counter}")
        index_meta_tag = r.take(TAG_SIZE, "index_meta_tag")
        r.zeros(24, "commit reserved1")
        mac = r.take(MAC_SIZE, "mac")
        commit = JournalCommit(
            entry_count=count, counter=counter, index_meta_tag=index_meta_tag, mac=mac
        )
        return cls(
            volume_id=volume_id,
            counter=counter,
            base=base,
            entries=tuple(entries),
            commit=commit,
            mac_input=bytes(view[:mac_end]),
            size=size,
        )
