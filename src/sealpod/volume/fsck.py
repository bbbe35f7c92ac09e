"""``fsck``: check the header slots, the journal, the index, every file and every node.

Unlike normal reads, which stop at the first failure, the check continues and lists each
corrupt file and node, so an operator sees the extent of the damage. It never writes: a volume
with a pending journal is checked as it will read once the journal is replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sealpod.errors import VolumeCorrupt, VolumeError
from sealpod.volume import commit as cm
from sealpod.volume.freshness import Freshness
from sealpod.volume.lifecycle import open_volume
from sealpod.volume.store import VolumeDir


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One corrupt thing: where (logical path or structure), which node, what failed."""

    path: str
    node: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FsckReport:
    """What :func:`fsck` found. ``ok`` is true when there are no problems."""

    volume_id: str | None
    counter: int | None
    header_slots: tuple[str, str]
    journal: str
    files_checked: int
    nodes_checked: int
    problems: tuple[Problem, ...]
    stray_host_files: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "volume_id": self.volume_id,
            "counter": self.counter,
            "header_slots": list(self.header_slots),
            "journal": self.journal,
            "files_checked": self.files_checked,
            "nodes_checked": self.nodes_checked,
            "problems": [
                {"path": p.path, "node": p.node, "message": p.message} for p in self.problems
            ],
            "stray_host_files": list(self.stray_host_files),
        }


def _slot_status(raw: bytes, position: int, key: bytes) -> str:
    try:
        header, _ = cm.authenticate_slot(raw, position, key)
    except VolumeError as exc:
        return f"invalid: {exc.message}"
    return f"ok (counter {header.counter})"


def _journal_status(vdir: VolumeDir, key: bytes) -> str:
    if not vdir.read_journal_range(0, 1):
        return "clean"
    header, _ = cm.read_header(vdir, key)
    pending = cm.pending_records(vdir, header)
    if not pending:
        if cm.applied_journal(vdir, header):
            return "clean (records the header already carries, left in place)"
        return "stale or interrupted (discarded on the next writable open)"
    first, last = pending[0].counter, pending[-1].counter
    span = f"commit {last}" if first == last else f"commits {first} to {last}"
    return f"pending {span} (replayed on the next writable open)"


def fsck(path: Path, key: bytes, *, counter: Freshness) -> FsckReport:
    """Check a volume without modifying it.

    One damaged header slot is reported in ``header_slots`` but is not a problem by itself:
    the other slot holds the current or previous commit, and a torn slot is the normal trace of
    a crash. If the current slot is the damaged one, the last commit's journal (left in place)
    brings the older slot forward; without it the counter check reports the rollback.

    Raises:
        VolumeFormatError: ``path`` is not a volume.
        VolumeError: the volume is in use by a writer.
    """
    vdir = VolumeDir(path)
    try:
        raw = vdir.read_header()
        slots = (_slot_status(raw, 0, key), _slot_status(raw, 1, key))
        problems: list[Problem] = []
        files = nodes = 0
        try:
            vdir.lock(exclusive=False)
            try:
                journal = _journal_status(vdir, key)
            finally:
                vdir.unlock()
            vol = open_volume(path, key, counter=counter, readonly=True)
        except VolumeCorrupt as exc:
            problem = Problem(path="<volume>", node="header", message=exc.message)
            return FsckReport(
                volume_id=None, counter=None, header_slots=slots, journal="unknown",
                files_checked=0, nodes_checked=0, problems=(problem,), stray_host_files=(),
            )  # fmt: skip
        except VolumeError as exc:
            if type(exc) is VolumeError:  # in use, I/O: not a finding about the volume
                raise
            problem = Problem(path="<volume>", node="open", message=exc.message)
            return FsckReport(
                volume_id=None, counter=None, header_slots=slots, journal="unknown",
                files_checked=0, nodes_checked=0, problems=(problem,), stray_host_files=(),
            )  # fmt: skip
        with vol:
            for logical, st in vol.walk():
                if st.is_dir:
                    continue
                files += 1
                try:
                    pf = vol.loaded_file(st.ino)
                except VolumeCorrupt as exc:
                    problems.append(Problem(path=logical, node="metadata", message=exc.message))
                    continue
                checked, failures = pf.verify_nodes()
                nodes += 1 + checked
                problems += [
                    Problem(path=logical, node=f"{kind} {index}", message=message)
                    for kind, index, message in failures
                ]
                vol.forget_file(st.ino)
            stray = sorted(f.hex() for f in vdir.list_host_files() - vol.live_file_ids())
            volume_id, count = vol.volume_id, vol.counter
    finally:
        vdir.close()
    return FsckReport(
        volume_id=volume_id,
        counter=count,
        header_slots=slots,
        journal=journal,
        files_checked=files,
        nodes_checked=nodes,
        problems=tuple(problems),
        stray_host_files=tuple(stray),
    )
