"""A directory tree as one comparable value, for tests of image import and OCI export."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot_tree(root: Path) -> dict[str, object]:
    """Every entry under ``root`` by relative path: a file -> ``(bytes, mode)``, a directory ->
    its mode, a symlink -> ``"-> target"`` (never followed).

    Raises:
        OSError: ``root`` or an entry cannot be read.
    """
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = stat.S_IMODE(st.st_mode)
            else:
                out[rel] = (p.read_bytes(), stat.S_IMODE(st.st_mode))
    return out
