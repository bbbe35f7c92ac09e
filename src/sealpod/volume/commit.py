"""The crash-consistency protocol: A/B header slots, the commit journal, checkpoints, recovery.

A commit moves the volume from counter ``c`` to ``c + k`` atomically (docs/volume-format.md,
"Commit protocol"):

1. Fresh slots (never used by the committed state) were already written in place; make them
   durable (fdatasync per file, or one syncfs when many files changed).
2. Append a journal record: header (with the counter it applies to, ``c``), every node that
   overwrites a slot the committed state uses, and a commit record carrying ``c + k`` and the
   index tag, MACed with the journal key; fdatasync. **This is the commit point.**
3. Apply the record's nodes in place, unsynced: the journal holds them until a checkpoint.
4. Record the new counter in the freshness store (the caller does this).

A *checkpoint* (when the journal would outgrow :data:`CHECKPOINT_BYTES`, when a commit shrank a
file, at close and before a rekey) makes the applied nodes durable, writes the header into the
slot that does *not* hold the current one, fdatasyncs it, and starts the next record at offset 0.

Recovery at open: starting at offset 0, each record that parses, carries this volume's id,
MAC-verifies and applies to the counter reached so far (first: the header's) is applied again
(idempotent); the first that does not ends the log (torn, stale from an earlier checkpoint, or
never committed). A torn header slot fails its MAC and the other slot, with the records that
chain on from it, wins.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from sealpod.errors import VolumeCorrupt, VolumeFormatError
from sealpod.volume import format as fmt
from sealpod.volume.crypt import VolumeKeys, derive_kek, unwrap_volume_key, wrap_volume_key
from sealpod.volume.store import SYNCFS_AFTER, HostFile, VolumeDir, syncfs


@dataclass(slots=True, kw_only=True)
class Header:
    """The current header slot, where it lives, and the keys it unlocks."""

    slot: fmt.HeaderSlot
    position: int  # 0 or 1
    keys: VolumeKeys = dataclasses.field(repr=False)

    @property
    def counter(self) -> int:
        return self.slot.counter


def seal_header(keys: VolumeKeys, slot: fmt.HeaderSlot) -> fmt.HeaderSlot:
    """``slot`` with its MAC computed."""
    draft = dataclasses.replace(slot, mac=bytes(fmt.MAC_SIZE))
    return dataclasses.replace(draft, mac=keys.header_mac(draft.mac_input()))


def new_header_slot(
    key: bytes, *, volume_id: bytes, volume_key: bytes, index_file_id: bytes, counter: int
) -> fmt.HeaderSlot:
    """A header slot wrapping ``volume_key`` under the KEK derived from ``key`` (fresh salt and
    nonce). The index tag is left zero for the caller to fill in."""
    salt = os.urandom(fmt.SALT_SIZE)
    nonce = os.urandom(fmt.NONCE_SIZE)
    kek = derive_kek(key, kdf_id=fmt.KDF_HKDF_SHA256, salt=salt, volume_id=volume_id)
    draft = fmt.HeaderSlot(
        volume_id=volume_id,
        kdf_salt=salt,
        wrap_nonce=nonce,
        wrapped_key=bytes(fmt.KEY_SIZE),
        wrap_tag=bytes(fmt.TAG_SIZE),
        counter=counter,
        index_file_id=index_file_id,
        index_meta_tag=bytes(fmt.TAG_SIZE),
    )
    sealed = wrap_volume_key(kek, volume_key, nonce=nonce, aad=draft.wrap_aad())
    return dataclasses.replace(
        draft, wrapped_key=sealed[: fmt.KEY_SIZE], wrap_tag=sealed[fmt.KEY_SIZE :]
    )


def authenticate_slot(raw: bytes, position: int, key: bytes) -> tuple[Header, bytes]:
    """Parse and authenticate header slot ``position`` of the header file bytes ``raw``.

    Raises:
        VolumeFormatError: not a volume or an unsupported version.
        VolumeCorrupt: the slot does not authenticate under ``key``.
    """
    chunk = raw[position * fmt.HEADER_SLOT_SIZE : (position + 1) * fmt.HEADER_SLOT_SIZE]
    slot = fmt.HeaderSlot.from_bytes(chunk)
    kek = derive_kek(key, kdf_id=slot.kdf_id, salt=slot.kdf_salt, volume_id=slot.volume_id)
    volume_key = unwrap_volume_key(kek, slot)
    keys = VolumeKeys(volume_key, slot.volume_id)
    keys.verify_header_mac(slot.mac_input(), slot.mac)
    return Header(slot=slot, position=position, keys=keys), volume_key


def read_header(vdir: VolumeDir, key: bytes) -> tuple[Header, bytes]:
    """Authenticate both header slots with ``key``; return the newest valid one and VK.

    Raises:
        VolumeFormatError: not a volume, or an unsupported format version.
        VolumeCorrupt: no slot authenticates (wrong key, corrupt or tampered header).
    """
    raw = vdir.read_header()
    found: list[tuple[Header, bytes]] = []
    format_errors: list[VolumeFormatError] = []
    for position in (0, 1):
        try:
            found.append(authenticate_slot(raw, position, key))
        except VolumeFormatError as exc:
            format_errors.append(exc)
        except VolumeCorrupt:
            continue
    if not found:
        if len(format_errors) == 2:
            raise format_errors[0]
        raise VolumeCorrupt(
            "volume header: no header slot authenticates (wrong key, or the header is corrupt "
            "or tampered with)"
        )
    if len(found) == 2 and found[0][0].slot.volume_id != found[1][0].slot.volume_id:
        raise VolumeCorrupt("volume header: the two header slots name different volumes")
    return max(found, key=lambda hv: (hv[0].counter, -hv[0].position))


def write_header(vdir: VolumeDir, header: Header, slot: fmt.HeaderSlot) -> Header:
    """Make ``slot`` (sealed here) the current header, in the slot not holding the current one."""
    sealed = seal_header(header.keys, slot)
    position = 1 - header.position
    vdir.write_header_slot(position, sealed.to_bytes())
    return Header(slot=sealed, position=position, keys=header.keys)


CHECKPOINT_BYTES = 4 << 20
"""Journal bytes after which a commit checkpoints first (a larger record goes alone)."""


def upgrade_header(vdir: VolumeDir, header: Header, key: bytes, volume_key: bytes) -> Header:
    """Rewrite both slots of a version-1 header as version 2 (the same state, the volume key
    wrapped again: the version is part of the wrap's associated data), so that code that only
    knows version 1 refuses the volume as a format it does not know."""
    fresh = new_header_slot(
        key,
        volume_id=header.slot.volume_id,
        volume_key=volume_key,
        index_file_id=header.slot.index_file_id,
        counter=header.counter,
    )
    fresh = dataclasses.replace(fresh, index_meta_tag=header.slot.index_meta_tag)
    return write_header(vdir, write_header(vdir, header, fresh), fresh)


def refuse_unfinished_v1_commit(vdir: VolumeDir, header: Header) -> None:
    """A version-1 volume whose one-commit journal is ahead of its header was left by older
    code in the middle of a commit; this code does not replay that layout.

    Raises:
        VolumeFormatError: such a journal is there.
    """
    if header.slot.format_version != 1:
        return
    counter = fmt.journal_v1_counter(vdir.read_journal_range(0, fmt.JOURNAL_HEADER_SIZE))
    if counter is not None and counter > header.counter:
        raise VolumeFormatError(
            f"volume format 1 with an unfinished commit (journal counter {counter}, header "
            f"{header.counter}): open it once with the sealpod release that wrote it, which "
            "finishes the commit, then with this one"
        )


def _authentic_record(
    vdir: VolumeDir, offset: int, header: Header, base: int | None
) -> fmt.Journal | None:
    """The record at ``offset`` if it parses, authenticates, names this volume and (unless
    ``base`` is None) applies to ``base``; else None: the end of the log (torn, never
    committed, stale or not a record). A record is read only once its header says it may
    chain on, so recovery reads no more of the journal than the log and one header."""
    head = vdir.read_journal_range(offset, fmt.JOURNAL_HEADER_SIZE)
    try:
        claimed, size = fmt.journal_record_head(head)
    except VolumeCorrupt:
        return None
    if base is not None and claimed != base:
        return None
    raw = vdir.read_journal_range(offset, size)
    try:
        record = fmt.Journal.from_bytes(raw)
        header.keys.verify_journal_mac(record.mac_input, record.commit.mac)
    except VolumeCorrupt:
        return None
    return record if record.volume_id == header.slot.volume_id else None


def pending_records(vdir: VolumeDir, header: Header) -> list[fmt.Journal]:
    """The committed records the header does not carry yet, in order: replay them at open.

    Raises:
        VolumeCorrupt: the journal is a symlink or not a regular file.
        VolumeError: it cannot be read.
    """
    records: list[fmt.Journal] = []
    offset, current = 0, header.counter
    while (record := _authentic_record(vdir, offset, header, current)) is not None:
        records.append(record)
        current, offset = record.counter, offset + record.size
    return records


def applied_journal(vdir: VolumeDir, header: Header) -> bool:
    """Whether the journal starts with a record the header already carries (records are left
    in place after a checkpoint, and a rekey commits without a record)."""
    record = _authentic_record(vdir, 0, header, None)
    return record is not None and record.counter <= header.counter


def journal_overlay(records: list[fmt.Journal]) -> dict[bytes, dict[int, bytes]]:
    """A read-only view of pending records: file id -> slot -> node (later records win)."""
    out: dict[bytes, dict[int, bytes]] = {}
    for record in records:
        for entry in record.entries:
            out.setdefault(entry.file_id, {})[entry.slot] = entry.node
    return out


def replay_journal(vdir: VolumeDir, header: Header, records: list[fmt.Journal]) -> Header:
    """Apply committed records again, make them durable and checkpoint (write the header)."""
    hosts: dict[bytes, HostFile] = {}
    try:
        for record in records:
            for entry in record.entries:
                host = hosts.get(entry.file_id)
                if host is None:
                    ref = vdir.host_path(entry.file_id)
                    try:
                        host = HostFile.open(ref)
                    except VolumeCorrupt:  # created by a commit and lost before it was synced,
                        host = HostFile.open(ref, create=True)  # or deleted since: garbage
                    hosts[entry.file_id] = host
                host.write_slots(entry.slot, entry.node)
        for host in hosts.values():
            host.sync()
    finally:
        for host in hosts.values():
            host.close()
    return write_header(vdir, header, _carried(header.slot, records[-1]))


def _carried(slot: fmt.HeaderSlot, record: fmt.Journal) -> fmt.HeaderSlot:
    return dataclasses.replace(
        slot, counter=record.counter, index_meta_tag=record.commit.index_meta_tag
    )


def carried_header(header: Header, records: list[fmt.Journal]) -> Header:
    """``header`` as it reads once ``records`` are applied (for a read-only overlay)."""
    slot = _carried(header.slot, records[-1]) if records else header.slot
    return Header(slot=slot, position=header.position, keys=header.keys)


@dataclass(slots=True)
class CommitLog:
    """Where the next journal record goes, and which host files records since the last
    checkpoint wrote to without syncing."""

    vdir: VolumeDir
    offset: int = 0
    touched: set[bytes] = dataclasses.field(default_factory=set)

    def commit(
        self,
        header: Header,
        *,
        counter: int,
        index_tag: bytes,
        writes: list[tuple[HostFile, bytes, int, bytes]],
    ) -> Header:
        """Steps 2-3 of a commit. ``writes`` are (host file, file id, slot, node) to journal.
        Returns the header as committed (written to its slot at the next checkpoint)."""
        size = fmt.journal_record_size(len(writes))
        if self.vdir.journal_replaced():
            # The only durable copy of the commits since the last checkpoint went with the old
            # file: make them durable in place now, then start a new journal under the name.
            header = self.checkpoint(header)
            self.vdir.forget_journal()
        elif self.offset and self.offset + size > CHECKPOINT_BYTES:
            header = self.checkpoint(header)
        parts = [
            fmt.journal_header_bytes(
                header.slot.volume_id, counter, base=header.counter, entry_count=len(writes)
            )
        ]
        parts += [
            fmt.JournalEntry(file_id=fid, slot=slot, node=node).to_bytes()
            for _, fid, slot, node in writes
        ]
        record = fmt.JournalCommit(
            entry_count=len(writes), counter=counter, index_meta_tag=index_tag
        )
        body = record.to_bytes()[: fmt.JOURNAL_COMMIT_MAC_OFFSET]
        mac = header.keys.journal_mac(b"".join(parts) + body)
        parts.append(dataclasses.replace(record, mac=mac).to_bytes())
        self.vdir.write_journal(self.offset, parts)  # the commit point
        self.offset += size
        for host, fid, slot, node in writes:
            host.write_slots(slot, node)
            self.touched.add(fid)
        state = dataclasses.replace(header.slot, counter=counter, index_meta_tag=index_tag)
        return Header(slot=state, position=header.position, keys=header.keys)

    def checkpoint(self, header: Header) -> Header:
        """Make every record since the last checkpoint durable in place and write ``header``
        (the committed state) to its slot; the next record starts the journal again."""
        if not self.offset:
            return header
        if len(self.touched) > SYNCFS_AFTER:
            syncfs(self.vdir.files_fd())
        else:
            for fid in self.touched:
                try:
                    host = HostFile.open(self.vdir.host_path(fid))
                except VolumeCorrupt:
                    continue  # deleted since it was written: nothing to keep
                try:
                    host.sync()
                finally:
                    host.close()
        new = write_header(self.vdir, header, header.slot)
        self.offset = 0
        self.touched.clear()
        if not self.vdir.journal_replaced():
            self.vdir.cut_journal(CHECKPOINT_BYTES)
        return new
