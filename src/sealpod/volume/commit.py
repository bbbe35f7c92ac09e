"""The crash-consistency protocol: A/B header slots, the commit journal, recovery.

A commit moves the volume from counter ``c`` to ``c + k`` atomically (docs/volume-format.md,
"Commit protocol"):

1. Fresh slots (never used by the committed state) were already written in place; make them
   durable (fdatasync per file, or one syncfs when many files changed).
2. Write the journal: header, every node that overwrites a slot the committed state uses, and a
   commit record carrying the new counter and index tag, MACed with the journal key; fdatasync.
   **This is the commit point.**
3. Apply the journal entries in place; fdatasync the touched files.
4. Write the new header into the slot that does *not* hold the current header; fdatasync.
5. Leave the journal as it is: its counter is no longer above the header's, so it is stale, and
   the next commit writes over it (cheaper to make durable than a new, emptied file).
6. Record the new counter in the freshness store (the caller does this).

Recovery at open: a journal that parses, carries this volume's id, MAC-verifies and has a
counter above the header's is applied again (idempotent); anything else is an interrupted,
uncommitted journal and is discarded. A torn header slot fails its MAC and the other slot wins.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from sealpod.errors import VolumeCorrupt, VolumeFormatError
from sealpod.volume import format as fmt
from sealpod.volume.crypt import VolumeKeys, derive_kek, unwrap_volume_key, wrap_volume_key
from sealpod.volume.store import HostFile, VolumeDir


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


def _authentic_journal(vdir: VolumeDir, header: Header) -> fmt.Journal | None:
    """The journal if it parses, authenticates and names this volume; else None."""
    raw = vdir.read_journal()
    if raw is None:
        return None
    try:
        journal = fmt.Journal.from_bytes(raw)
        header.keys.verify_journal_mac(journal.mac_input, journal.commit.mac)
    except VolumeCorrupt:
        return None  # torn or never committed: the commit did not happen
    return journal if journal.volume_id == header.slot.volume_id else None


def pending_journal(vdir: VolumeDir, header: Header) -> fmt.Journal | None:
    """The journal to replay, if the last commit reached its commit point but not its end."""
    journal = _authentic_journal(vdir, header)
    if journal is None or journal.counter <= header.counter:
        return None  # absent, torn, another volume's, or stale: already applied
    return journal


def applied_journal(vdir: VolumeDir, header: Header) -> bool:
    """Whether the journal is a commit the header already carries (the last journaled commit,
    left in place, possibly followed by commits without a journal: a rekey)."""
    journal = _authentic_journal(vdir, header)
    return journal is not None and journal.counter <= header.counter


def journal_overlay(journal: fmt.Journal) -> dict[bytes, dict[int, bytes]]:
    """A read-only view of a pending journal: file id -> slot -> node."""
    out: dict[bytes, dict[int, bytes]] = {}
    for entry in journal.entries:
        out.setdefault(entry.file_id, {})[entry.slot] = entry.node
    return out


def replay_journal(vdir: VolumeDir, header: Header, journal: fmt.Journal) -> Header:
    """Apply a committed journal again and finish its commit (steps 3-5)."""
    hosts: dict[bytes, HostFile] = {}
    try:
        for entry in journal.entries:
            host = hosts.get(entry.file_id)
            if host is None:
                ref = vdir.host_path(entry.file_id)
                try:
                    host = HostFile.open(ref)
                except VolumeCorrupt:  # a file the commit created, lost before it was synced
                    host = HostFile.open(ref, create=True)
                hosts[entry.file_id] = host
            host.write_slots(entry.slot, entry.node)
        for host in hosts.values():
            host.sync()
    finally:
        for host in hosts.values():
            host.close()
    new = write_header(
        vdir,
        header,
        dataclasses.replace(
            header.slot, counter=journal.counter, index_meta_tag=journal.commit.index_meta_tag
        ),
    )
    vdir.clear_journal()
    return new


def commit(
    vdir: VolumeDir,
    header: Header,
    *,
    counter: int,
    index_tag: bytes,
    writes: list[tuple[HostFile, bytes, int, bytes]],
) -> Header:
    """Steps 2-5 of a commit. ``writes`` are (host file, file id, slot, node) to journal."""
    if writes:
        keys = header.keys
        parts = [fmt.journal_header_bytes(header.slot.volume_id, counter)]
        parts += [
            fmt.JournalEntry(file_id=fid, slot=slot, node=node).to_bytes()
            for _, fid, slot, node in writes
        ]
        record = fmt.JournalCommit(
            entry_count=len(writes), counter=counter, index_meta_tag=index_tag
        )
        body = record.to_bytes()[: fmt.JOURNAL_COMMIT_MAC_OFFSET]
        mac = keys.journal_mac(b"".join(parts) + body)
        parts.append(dataclasses.replace(record, mac=mac).to_bytes())
        vdir.write_journal(parts)  # the commit point
        touched: dict[int, HostFile] = {}
        for host, _, slot, node in writes:
            host.write_slots(slot, node)
            touched[id(host)] = host
        for host in touched.values():
            host.sync()
    return write_header(
        vdir, header, dataclasses.replace(header.slot, counter=counter, index_meta_tag=index_tag)
    )
