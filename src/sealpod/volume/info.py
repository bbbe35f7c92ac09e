"""What a volume reports: ``stat`` results and the ``info`` summary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeStat:
    """What ``stat`` reports about one inode."""

    ino: int
    kind: str  # "file", "dir" or "symlink"
    mode: int  # type bits | permission bits, as in st_mode
    size: int
    uid: int
    gid: int
    nlink: int
    mtime_ns: int
    ctime_ns: int
    generation: int

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeInfo:
    """A summary for ``sealpod volume info``."""

    path: str
    volume_id: str
    format_version: int
    counter: int
    freshness_counter: int
    files: int
    directories: int
    symlinks: int
    logical_bytes: int
    storage_bytes: int
    readonly: bool
