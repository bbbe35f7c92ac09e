"""``server.json``: where a running ``sealpod kms serve`` on this host says it listens.

Kept apart from :mod:`sealpod.kms.server` so that clients (``sealpod run``, the KMS commands)
can find a local KMS without importing the server's web stack. Host-written and unauthenticated:
it is a convenience for finding the URL, never a trust anchor (a pod pins the KMS's identity in
its measured spec).
"""

from __future__ import annotations

import json
from pathlib import Path

from sealpod.kms.settings import kms_home

SERVER_INFO = "server.json"


def read_server_info(path: Path | None = None) -> dict[str, object] | None:
    """The ``server.json`` a running ``sealpod kms serve`` wrote, or None.

    Raises:
        Nothing: a missing or malformed file is None.
    """
    target = path or (kms_home() / SERVER_INFO)
    try:
        data = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
