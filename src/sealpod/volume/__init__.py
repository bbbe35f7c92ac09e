"""Encrypted, authenticated, rollback-protected, crash-consistent volumes.

The public API::

    from sealpod.volume import create_volume, open_volume, LocalFreshness

    create_volume(path, key, counter=store)
    with open_volume(path, key, counter=store) as vol:
        vol.write_file("db/data.bin", b"...")
        vol.sync()

See docs/volumes.md for usage and docs/volume-format.md for the format.
"""

from sealpod.volume.api import VolumeFile
from sealpod.volume.freshness import (
    Freshness,
    LocalFreshness,
    MemoryFreshness,
    UnsafeNoFreshness,
)
from sealpod.volume.info import VolumeInfo, VolumeStat
from sealpod.volume.keyfile import generate_key_file, load_key_file
from sealpod.volume.lifecycle import create_volume, open_volume
from sealpod.volume.volume import Volume

__all__ = [
    "Freshness",
    "LocalFreshness",
    "MemoryFreshness",
    "UnsafeNoFreshness",
    "Volume",
    "VolumeFile",
    "VolumeInfo",
    "VolumeStat",
    "create_volume",
    "generate_key_file",
    "load_key_file",
    "open_volume",
]
