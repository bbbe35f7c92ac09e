"""The content-addressed collateral cache."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sealpod.collateral.cache import ContentCache

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def test_blobs_are_named_by_their_sha256(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    digest = cache.put_blob(b"tcb signing cert, 2025 issue")
    assert digest == hashlib.sha256(b"tcb signing cert, 2025 issue").hexdigest()
    assert (tmp_path / "blobs" / digest).read_bytes() == b"tcb signing cert, 2025 issue"
    assert cache.get_blob(digest) == b"tcb signing cert, 2025 issue"


def test_same_serial_different_bytes_are_two_entries(tmp_path: Path) -> None:
    # README D.3: Intel re-issued its TCB Signing certificate with the same serial and key.
    cache = ContentCache(tmp_path)
    old = cache.put_blob(b"serial 7E38..., valid 2018-2025")
    new = cache.put_blob(b"serial 7E38..., valid 2025-2032")
    assert old != new
    assert cache.get_blob(old) != cache.get_blob(new)


def test_index_round_trip_and_freshness(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    cache.put(
        "https://pcs/x", b"body", headers={"H": "v"}, fetched_at=NOW,
        fresh_until=NOW + timedelta(hours=1),
    )  # fmt: skip
    hit = cache.get("https://pcs/x", now=NOW + timedelta(minutes=59))
    assert hit is not None and hit.body == b"body" and hit.headers["H"] == "v"
    assert cache.get("https://pcs/x", now=NOW + timedelta(hours=1)) is None
    assert cache.lookup("https://pcs/x") is not None  # stale but present
    assert cache.get("https://pcs/other", now=NOW) is None


def test_corrupted_blob_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    entry = cache.put(
        "k", b"original", headers={}, fetched_at=NOW, fresh_until=NOW + timedelta(days=1)
    )
    blob = tmp_path / "blobs" / entry.digest
    blob.write_bytes(b"tampered")
    assert cache.get("k", now=NOW) is None
    assert not blob.exists()


def test_damaged_index_is_a_miss(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    cache.put("k", b"x", headers={}, fetched_at=NOW, fresh_until=NOW + timedelta(days=1))
    (index,) = (tmp_path / "index").iterdir()
    index.write_text("{not json")
    assert cache.get("k", now=NOW) is None
    index.write_text('{"version": 1, "key": "other"}')
    assert cache.lookup("k") is None


def test_clear(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    cache.put("k", b"x", headers={}, fetched_at=NOW, fresh_until=NOW + timedelta(days=1))
    cache.clear()
    assert cache.lookup("k") is None
    assert not any((tmp_path / "blobs").iterdir())
