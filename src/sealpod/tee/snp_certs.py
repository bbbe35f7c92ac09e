"""The SEV-SNP extended-report certificate table (GHCB spec v2, section 4.1.8.1).

What the host hands a guest next to its attestation report, and what configfs-tsm exposes as
``auxblob`` when the provider is ``sev_guest``: a table of ``(GUID[16], offset u32, length u32)``
entries ended by an all-zero entry, followed by the DER certificates the entries point to.
Offsets count from the start of the table. The GUIDs' wire bytes are the digits in written order
(AMD's tooling uses ``uuid_parse``), i.e. Python's ``uuid.UUID(...).bytes``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sealpod._binary import Reader, Writer
from sealpod.errors import MalformedEvidence, SealpodError

ENTRY_SIZE = 24
MAX_ENTRIES = 64
MAX_TABLE_SIZE = 64 * 1024  # TSM_REPORT_OUTBLOB_MAX is 32 KiB; leave room, but bound it

VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
CRL_GUID = uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea")
GUID_NAMES: Mapping[uuid.UUID, str] = {
    VCEK_GUID: "vcek", VLEK_GUID: "vlek", ASK_GUID: "ask", ARK_GUID: "ark", CRL_GUID: "crl",
}  # fmt: skip
_NAME_GUIDS = {name: guid for guid, name in GUID_NAMES.items()}


def build_cert_table(certs: Mapping[str, bytes]) -> bytes:
    """Serialize ``{"vcek": der, "ask": der, ...}`` (known names only) into a table."""
    unknown = set(certs) - set(_NAME_GUIDS)
    if unknown:
        raise ValueError(f"unknown certificate names: {sorted(unknown)}")
    header_size = ENTRY_SIZE * (len(certs) + 1)
    w = Writer()
    offset = header_size
    for name, der in certs.items():
        w.raw(_NAME_GUIDS[name].bytes).u32(offset).u32(len(der))
        offset += len(der)
    w.zeros(ENTRY_SIZE)
    for der in certs.values():
        w.raw(der)
    return w.getvalue()


def parse_cert_table(
    data: bytes, *, error: type[SealpodError] = MalformedEvidence
) -> dict[str, bytes]:
    """Split a certificate table into ``{name: der}``; unknown GUIDs keep their GUID text.

    Raises:
        ``error``: no terminator, too many entries, an entry pointing outside the buffer or
        into the table itself, a duplicate GUID, or an oversized table.
    """
    if len(data) > MAX_TABLE_SIZE:
        raise error(f"certificate table is {len(data)} bytes, expected at most {MAX_TABLE_SIZE}")
    r = Reader(data, name="certificate table", error=error)
    entries: list[tuple[str, int, int]] = []
    while True:
        if len(entries) > MAX_ENTRIES:
            r.fail(f"more than {MAX_ENTRIES} entries without a terminator")
        guid = uuid.UUID(bytes=r.take(16, "guid"))
        offset = r.u32("offset")
        length = r.u32("length")
        if guid.int == 0:
            if offset or length:
                r.fail("terminator entry has a non-zero offset or length", "terminator")
            break
        name = GUID_NAMES.get(guid, str(guid))
        if any(name == seen for seen, _, _ in entries):
            r.fail(f"GUID {guid} appears twice", "guid")
        entries.append((name, offset, length))
    table_end = r.offset
    out: dict[str, bytes] = {}
    for name, offset, length in entries:
        if offset < table_end or offset + length > len(data) or length == 0:
            raise error(
                f"certificate table: entry {name!r} points at [{offset}, {offset + length}), "
                f"expected a non-empty range within [{table_end}, {len(data)})"
            )
        out[name] = bytes(data[offset : offset + length])
    return out
