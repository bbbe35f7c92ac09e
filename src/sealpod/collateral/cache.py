"""An on-disk, content-addressed cache for collateral fetched over HTTP.

Blobs are stored under the SHA-256 of their bytes (``blobs/<hex>``), and a small index maps a
request (its URL) to the digest of the response body plus the response headers that matter and a
"fresh until" time. Keying by content, never by certificate serial number, matters here: Intel
re-issued its TCB Signing certificate in 2025 with the same serial number and key, so a serial
says nothing about which bytes (and which validity period) one has.

A blob whose bytes no longer hash to its name is treated as absent (and removed). Writes go to a
temporary file that is renamed into place, so a crash leaves either the old or the new entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from sealpod._files import write_atomic
from sealpod.errors import CollateralError

INDEX_VERSION = 1


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A cached HTTP response body and the headers kept with it."""

    body: bytes
    headers: Mapping[str, str]
    fetched_at: datetime
    fresh_until: datetime
    digest: str


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data)


class ContentCache:
    """Content-addressed blobs plus a request index, under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest

    def _index_path(self, key: str) -> Path:
        return self.root / "index" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their SHA-256; return the hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest

    def get_blob(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``, or None if absent or corrupted."""
        path = self._blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        return data

    def put(
        self,
        key: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        fetched_at: datetime,
        fresh_until: datetime,
    ) -> CachedResponse:
        """Remember ``body`` (and ``headers``) as the response for request ``key``."""
        digest = self.put_blob(body)
        entry = {
            "version": INDEX_VERSION,
            "key": key,
            "digest": digest,
            "headers": dict(headers),
            "fetched_at": fetched_at.astimezone(UTC).isoformat(),
            "fresh_until": fresh_until.astimezone(UTC).isoformat(),
        }
        _atomic_write(self._index_path(key), json.dumps(entry, sort_keys=True).encode())
        return CachedResponse(
            body=body,
            headers=MappingProxyType(dict(headers)),
            fetched_at=fetched_at,
            fresh_until=fresh_until,
            digest=digest,
        )

    def get(self, key: str, *, now: datetime) -> CachedResponse | None:
        """The cached response for ``key`` if present, intact and fresh at ``now``."""
        entry = self.lookup(key)
        if entry is None or now >= entry.fresh_until:
            return None
        return entry

    def lookup(self, key: str) -> CachedResponse | None:
        """The cached response for ``key`` regardless of freshness (None if absent/corrupt)."""
        try:
            raw = self._index_path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(raw)
            if entry.get("version") != INDEX_VERSION or entry.get("key") != key:
                return None
            digest = str(entry["digest"])
            headers = {str(k): str(v) for k, v in dict(entry["headers"]).items()}
            fetched_at = datetime.fromisoformat(entry["fetched_at"])
            fresh_until = datetime.fromisoformat(entry["fresh_until"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a damaged index entry is a cache miss, never an error
        body = self.get_blob(digest)
        if body is None:
            return None
        return CachedResponse(
            body=body,
            headers=MappingProxyType(headers),
            fetched_at=fetched_at,
            fresh_until=fresh_until,
            digest=digest,
        )

    def clear(self) -> None:
        """Remove every entry (the directory stays)."""
        for sub in ("index", "blobs"):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    path.unlink()
                except OSError as exc:
                    raise CollateralError(f"cannot clear the collateral cache: {exc}") from exc
