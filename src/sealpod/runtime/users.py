"""The image's user and group tables: ``process.user`` names resolved as the image defines them.

Pure: parses the text of the image's ``/etc/passwd`` and ``/etc/group`` (trusted, measured
files that the verify phase has checked), never the host's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sealpod.errors import SpecError

#: Larger user tables are refused rather than parsed (a real image's is a few KiB).
MAX_TABLE_SIZE = 1 << 20
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
_NUMERIC = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?")


@dataclass(frozen=True, slots=True)
class UserTable:
    """Users (name -> uid, primary gid) of one image."""

    users: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, passwd: bytes | None) -> UserTable:
        """Parse ``/etc/passwd`` text; malformed lines are skipped as libc skips them.

        Raises:
            SpecError: the table is larger than ``MAX_TABLE_SIZE``.
        """
        if passwd is None:
            return cls()
        if len(passwd) > MAX_TABLE_SIZE:
            raise SpecError(f"the image's /etc/passwd is larger than {MAX_TABLE_SIZE} bytes")
        users: dict[str, tuple[int, int]] = {}
        for line in passwd.decode("utf-8", errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) < 4 or not parts[0] or not parts[2].isdigit() or not parts[3].isdigit():
                continue
            uid, gid = int(parts[2]), int(parts[3])
            if uid <= MAX_ID and gid <= MAX_ID:
                users.setdefault(parts[0], (uid, gid))
        return cls(users)

    def resolve(self, user: str) -> tuple[int, int]:
        """``process.user`` as (uid, gid): ``UID:GID``; ``UID`` (its passwd group if the image
        names it, else a group of the same number); or a user name of the image.

        Raises:
            SpecError: an unknown name, or an id out of range.
        """
        match = _NUMERIC.fullmatch(user)
        if match is not None:
            uid = int(match.group(1))
            if match.group(2) is not None:
                gid = int(match.group(2))
            else:
                gid = next((g for u, g in self.users.values() if u == uid), uid)
            if uid > MAX_ID or gid > MAX_ID:
                raise SpecError(f"process.user {user!r}: ids must be at most {MAX_ID}")
            return uid, gid
        if user not in self.users:
            raise SpecError(f"process.user {user!r} is not a user of the image's /etc/passwd")
        return self.users[user]
