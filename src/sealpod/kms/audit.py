"""The hash-chained audit log: record hashing and chain verification.

Record ``n`` hashes its own fields together with record ``n-1``'s hash (the first links to 32
zero bytes), so editing a record changes its hash and breaks the next link; removing one leaves a
gap in the sequence and a broken link; reordering breaks links. Each hash is also MACed with a
key derived from the master key, so someone who can write the database but does not hold the
master key cannot rebuild a consistent chain after an edit. Removal of the newest records is
caught against the stored head (sequence and hash of the last record), which is MACed with the
same key over a domain-separated input (:func:`head_mac_input`), so rewinding the head to an
earlier record needs the key too. What the database alone cannot show is a rollback to an
*old copy* of itself (records and head as they were): for that an operator compares with a head
kept outside (``kms audit --verify --expect-head SEQ:HASH``, or a signed checkpoint).

Details never contain secret values: callers put names, versions, measurements, violation codes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sealpod.errors import ConfigError
from sealpod.spec.canonical import canonical_json

GENESIS_HASH = bytes(32)
_HEAD_MAC_LABEL = b"sealpod-audit-head/v1\0"


def head_mac_input(seq: int, record_hash: bytes) -> bytes:
    """What the head row's MAC covers. The label and length keep it apart from a record's MAC
    input (a bare 32-byte hash), so a record's MAC cannot be copied into the head."""
    return _HEAD_MAC_LABEL + seq.to_bytes(8, "big") + record_hash


def parse_head(text: str) -> tuple[int, bytes]:
    """``SEQ:HASH`` (decimal, 64 hex digits) as printed by ``kms audit --verify``.

    Raises:
        ConfigError: not in that form.
    """
    seq_text, sep, hash_text = text.strip().partition(":")
    try:
        seq = int(seq_text, 10)
        digest = bytes.fromhex(hash_text)
    except ValueError:
        seq, digest = -1, b""
    if not sep or seq < 0 or len(digest) != 32:
        raise ConfigError(
            f"expected head is {text[:80]!r}, expected SEQ:HASH (decimal, 64 hex digits)"
        )
    return seq, digest


def canonical(obj: object) -> bytes:
    """Canonical JSON (:func:`sealpod.spec.canonical.canonical_json`, the measurement's writer:
    the same bytes the audit log always had for its JSON-like records).

    Raises:
        TypeError, ValueError: a value canonical JSON cannot hold (a float, bytes, ...).
    """
    return canonical_json(obj)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    seq: int
    ts_ms: int
    kind: str
    actor: str
    subject: str
    outcome: str  # "ok" | "refused" | "error"
    details: Mapping[str, object] = field(default_factory=dict)
    prev_hash: bytes = GENESIS_HASH
    hash: bytes = b""
    mac: bytes = b""

    def body(self) -> bytes:
        """The bytes that are hashed: every field but hash and mac."""
        return canonical(
            {
                "seq": self.seq,
                "ts_ms": self.ts_ms,
                "kind": self.kind,
                "actor": self.actor,
                "subject": self.subject,
                "outcome": self.outcome,
                "details": self.details,
                "prev_hash": self.prev_hash.hex(),
            }
        )

    def compute_hash(self) -> bytes:
        return hashlib.sha256(self.body()).digest()

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "kind": self.kind,
            "actor": self.actor,
            "subject": self.subject,
            "outcome": self.outcome,
            "details": dict(self.details),
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
            "mac": self.mac.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> AuditRecord:
        """Inverse of :meth:`to_json` (for records fetched over the API).

        Raises:
            KeyError, TypeError, ValueError: on a malformed record (callers wrap them).
        """
        details = data["details"]
        if not isinstance(details, dict):
            raise TypeError("details is not an object")
        return cls(
            seq=int(str(data["seq"])),
            ts_ms=int(str(data["ts_ms"])),
            kind=str(data["kind"]),
            actor=str(data["actor"]),
            subject=str(data["subject"]),
            outcome=str(data["outcome"]),
            details=details,
            prev_hash=bytes.fromhex(str(data["prev_hash"])),
            hash=bytes.fromhex(str(data["hash"])),
            mac=bytes.fromhex(str(data["mac"])),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """What a caller records; the store gives it its place in the chain (seq, hashes, MAC)."""

    ts_ms: int
    kind: str
    actor: str
    subject: str
    outcome: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainProblem:
    seq: int
    # "edited" | "mac" | "broken_link" | "gap" | "truncated" | "head_mismatch" | "head_mac" |
    # "expected_head" (the log does not contain the head an operator kept)
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} at seq {self.seq}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainReport:
    records: int
    last_seq: int
    last_hash: bytes
    macs_checked: bool
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "records": self.records,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash.hex(),
            "macs_checked": self.macs_checked,
            "problems": [
                {"seq": p.seq, "code": p.code, "message": p.message} for p in self.problems
            ],
        }


def verify_chain(
    records: Iterable[AuditRecord],
    *,
    mac: Callable[[bytes], bytes] | None = None,
    head: tuple[int, bytes] | None = None,
    head_mac: bytes | None = None,
    expect: tuple[int, bytes] | None = None,
    start: tuple[int, bytes] = (0, GENESIS_HASH),
) -> ChainReport:
    """Check every link, hash and (with ``mac``) MAC; return every problem found.

    ``records`` must be in ascending ``seq`` order as stored. ``head`` is the stored last
    sequence number and hash; with ``mac`` and ``head``, ``head_mac`` is the head row's MAC
    (None: the row has none, which is a problem). ``expect`` is a head kept outside the
    database (an earlier ``SEQ:HASH`` or checkpoint): the chain must contain that record with
    that hash. ``start`` lets a caller verify a suffix.
    """
    problems: list[ChainProblem] = []
    expected_seq, prev_hash = start[0] + 1, start[1]
    count = 0
    last_seq, last_hash = start
    expect_found = False
    for rec in records:
        count += 1
        if rec.seq != expected_seq:
            problems.append(
                ChainProblem(
                    seq=rec.seq,
                    code="gap",
                    message=f"seq is {rec.seq}, expected {expected_seq} (removed or reordered)",
                )
            )
        if not hmac.compare_digest(rec.prev_hash, prev_hash):
            problems.append(
                ChainProblem(
                    seq=rec.seq,
                    code="broken_link",
                    message="prev_hash does not match the previous record's hash",
                )
            )
        computed = rec.compute_hash()
        if not hmac.compare_digest(computed, rec.hash):
            problems.append(
                ChainProblem(
                    seq=rec.seq, code="edited", message="record hash does not match its content"
                )
            )
        if mac is not None and not hmac.compare_digest(mac(rec.hash), rec.mac):
            problems.append(
                ChainProblem(seq=rec.seq, code="mac", message="record MAC does not verify")
            )
        if expect is not None and rec.seq == expect[0]:
            expect_found = True
            if not hmac.compare_digest(rec.hash, expect[1]):
                problems.append(
                    ChainProblem(
                        seq=rec.seq,
                        code="expected_head",
                        message="record hash differs from the kept head: the log was rewritten",
                    )
                )
        # Continue from what the record claims, so one edit is reported once, not cascaded.
        expected_seq, prev_hash = rec.seq + 1, rec.hash
        last_seq, last_hash = rec.seq, rec.hash
    at_start = expect is not None and expect == (start[0], start[1])
    if expect is not None and not expect_found and not at_start:
        problems.append(
            ChainProblem(
                seq=last_seq,
                code="expected_head",
                message=f"the log ends at seq {last_seq}, the kept head is seq {expect[0]}: "
                "records were removed (or the database rolled back)",
            )
        )
    if mac is not None and head is not None:
        if head_mac is None or not hmac.compare_digest(mac(head_mac_input(*head)), head_mac):
            problems.append(
                ChainProblem(
                    seq=head[0],
                    code="head_mac",
                    message="head row MAC "
                    + ("is missing" if head_mac is None else "does not verify")
                    + " (the head was rewritten without the key)",
                )
            )
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            problems.append(
                ChainProblem(
                    seq=last_seq,
                    code="truncated",
                    message=f"last record is {last_seq}, head says {head_seq}",
                )
            )
        elif head_seq == last_seq and not hmac.compare_digest(head_hash, last_hash):
            problems.append(
                ChainProblem(
                    seq=last_seq, code="head_mismatch", message="head hash differs from last record"
                )
            )
        elif head_seq < last_seq:
            problems.append(
                ChainProblem(
                    seq=last_seq,
                    code="head_mismatch",
                    message=f"records go to {last_seq}, head says {head_seq}",
                )
            )
    return ChainReport(
        records=count,
        last_seq=last_seq,
        last_hash=last_hash,
        macs_checked=mac is not None,
        problems=tuple(problems),
    )


def chain_record(
    prev_seq: int,
    prev_hash: bytes,
    *,
    ts_ms: int,
    kind: str,
    actor: str,
    subject: str,
    outcome: str,
    details: Mapping[str, object],
    mac: Callable[[bytes], bytes],
) -> AuditRecord:
    """Build the next record after (``prev_seq``, ``prev_hash``), hashed and MACed."""
    rec = AuditRecord(
        seq=prev_seq + 1,
        ts_ms=ts_ms,
        kind=kind,
        actor=actor,
        subject=subject,
        outcome=outcome,
        details=json.loads(canonical(details)),  # normalise (tuples -> lists) before hashing
        prev_hash=prev_hash,
    )
    digest = rec.compute_hash()
    return AuditRecord(
        seq=rec.seq,
        ts_ms=rec.ts_ms,
        kind=rec.kind,
        actor=rec.actor,
        subject=rec.subject,
        outcome=rec.outcome,
        details=rec.details,
        prev_hash=rec.prev_hash,
        hash=digest,
        mac=mac(digest),
    )
