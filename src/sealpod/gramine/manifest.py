"""Gramine manifests from a sealed bundle: what ``sealpod gramine manifest`` writes.

The enclave runs sealpod's pre-main (``libos.entrypoint``), which attests, receives the pod's
secrets from the KMS, writes the volume keys to ``/dev/attestation/keys/NAME`` and then execs the
pod's own entrypoint (see docs/sgx.md). The manifest makes Gramine enforce the bundle:

* ``fs.root`` is the bundle's measured rootfs (a chroot mount), and every regular file of the
  bundle is in ``sgx.trusted_files`` with the SHA-256 the bundle manifest records, so MRENCLAVE
  covers exactly the files sealpod measured;
* the bundle's ``manifest.json`` is mounted at ``/sealpod/bundle`` as a trusted file; its SHA-256
  is the sealpod measurement, so MRENCLAVE also pins the pod spec (argv, env template, volumes);
* the pre-main's own directory is mounted at ``/sealpod/premain`` and trusted as a whole;
* ``/tmp``, ``/run``, ``[runtime] tmpfs`` and the directories of ``[[files]]`` are in-enclave
  ``tmpfs``;
* each ``[[volumes]]`` is a ``type = "encrypted"`` mount whose key is named
  ``sealpod-volume-NAME`` (:func:`volume_key_name`); no key is ever in the manifest
  (``fs.insecure__keys`` is refused by the checker);
* literal environment values go to ``loader.env``; ``{secret = NAME}`` values never do: the
  pre-main sets them after the KMS released them;
* ``sgx.enclave_size`` (``[tee] memory`` rounded up to a power of two), ``sgx.max_threads``,
  ``sgx.isvprodid`` / ``sgx.isvsvn`` (``[identity]``), ``sgx.debug`` and
  ``sgx.remote_attestation = "dcap"``.

Pure: :func:`build_manifest` takes the parsed bundle manifest and host paths and returns the
TOML document as a dict; :func:`render_manifest` turns it into text and parses it back with
``tomllib`` and the checker before anything is written.
"""

from __future__ import annotations

import posixpath
import tomllib
from dataclasses import dataclass

import tomli_w

from sealpod.build.manifest import FileEntry, Manifest, in_memory_dirs
from sealpod.errors import SpecError
from sealpod.gramine.manifest_check import require_valid
from sealpod.spec.model import SecretRef, is_under

PREMAIN_DIR = "/sealpod/premain"
PREMAIN_ENTRYPOINT = PREMAIN_DIR + "/sealpod-premain"
BUNDLE_DIR = "/sealpod/bundle"
ALWAYS_TMPFS = ("/tmp", "/run")  # noqa: S108 - in-enclave tmpfs, not host paths
# Gramine runs helper threads of its own (IPC, async events, the TLS handshake of new pipes); its
# docs ask sgx.max_threads to cover them on top of the application's threads. Three, plus a spare.
GRAMINE_HELPER_THREADS = 4
MIN_ENCLAVE_SIZE = 256 << 20  # the LibOS and PAL alone need tens of MiB
_UNITS = ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K"))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostLayout:
    """Where things live on the SGX host (absolute paths; MRENCLAVE depends on them)."""

    bundle_dir: str  # the bundle directory (holding rootfs/ and manifest.json)
    premain_dir: str  # sealpod's pre-main for Gramine (a directory, trusted as a whole)
    volume_dir: str  # one sub-directory per volume: Gramine's encrypted files
    uid: int
    gid: int

    def __post_init__(self) -> None:
        for name in ("bundle_dir", "premain_dir", "volume_dir"):
            value = getattr(self, name)
            if not value.startswith("/") or posixpath.normpath(value) != value or '"' in value:
                raise SpecError(
                    f"host path {name} is {value!r}, expected a normalized absolute path"
                )


def volume_key_name(volume: str) -> str:
    """The Gramine key name of a volume's encrypted mount (``/dev/attestation/keys/<name>``)."""
    return f"sealpod-volume-{volume}"


def enclave_size(memory_bytes: int) -> str:
    """The smallest power of two >= ``memory_bytes`` (and >= 256M), as Gramine writes sizes."""
    size = max(MIN_ENCLAVE_SIZE, 1 << max(memory_bytes - 1, 1).bit_length())
    for unit, suffix in _UNITS:
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _file_uri(path: str) -> str:
    return "file:" + path


def build_manifest(
    bundle: Manifest, *, measurement: bytes, layout: HostLayout
) -> dict[str, object]:
    """The Gramine manifest (as a TOML-ready dict) for the bundle ``bundle``.

    ``measurement`` is SHA-256 of the bundle's ``manifest.json`` (its trusted-file hash).

    Raises:
        SpecError: a volume or secret file that Gramine cannot express (a volume at ``/``).
    """
    process = bundle.process
    rootfs = layout.bundle_dir + "/rootfs"
    env: dict[str, object] = {
        name: value for name, value in process.env.items() if not isinstance(value, SecretRef)
    }
    tmpfs = list(dict.fromkeys([*ALWAYS_TMPFS, *in_memory_dirs(bundle.runtime)]))
    for entry in bundle.files:
        parent = posixpath.dirname(entry.path)
        if not any(is_under(parent, t) for t in tmpfs):
            tmpfs.append(parent)
    mounts: list[dict[str, object]] = [
        {"type": "chroot", "path": PREMAIN_DIR, "uri": _file_uri(layout.premain_dir)},
        {"type": "chroot", "path": BUNDLE_DIR, "uri": _file_uri(layout.bundle_dir)},
    ]
    mounts += [{"type": "tmpfs", "path": path} for path in tmpfs]
    for volume in bundle.volumes:
        if volume.path == "/":
            raise SpecError("volumes: a volume cannot be mounted at /")
        mounts.append(
            {
                "type": "encrypted",
                "path": volume.path,
                "uri": _file_uri(f"{layout.volume_dir}/{volume.name}/"),
                "key_name": volume_key_name(volume.name),
            }
        )
    trusted: list[object] = [
        {"uri": _file_uri(layout.bundle_dir + "/manifest.json"), "sha256": measurement.hex()},
        _file_uri(layout.premain_dir + "/"),
    ]
    trusted += [
        {"uri": _file_uri(rootfs + e.path), "sha256": e.sha256}
        for e in bundle.trusted.entries
        if isinstance(e, FileEntry)
    ]
    return {
        "libos": {"entrypoint": PREMAIN_ENTRYPOINT},
        "loader": {
            "log_level": "error",  # Gramine: only "error" is suitable for production
            "argv": [PREMAIN_ENTRYPOINT, "--bundle-dir", BUNDLE_DIR],
            "env": env,
            "uid": layout.uid,
            "gid": layout.gid,
        },
        "fs": {
            "root": {"type": "chroot", "uri": _file_uri(rootfs)},
            "start_dir": process.workdir,
            "mounts": mounts,
        },
        "sys": {"enable_sigterm_injection": True},  # `sealpod run` forwards SIGTERM once
        "sgx": {
            "debug": bundle.tee.debug,
            "enclave_size": enclave_size(bundle.tee.memory_bytes),
            "max_threads": bundle.tee.threads + GRAMINE_HELPER_THREADS,
            "isvprodid": bundle.identity.product_id,
            "isvsvn": bundle.identity.svn,
            "remote_attestation": "dcap",
            "file_check_policy": "strict",
            "trusted_files": trusted,
        },
    }


def render_manifest(doc: dict[str, object], *, source: str = "generated manifest") -> str:
    """TOML text of ``doc``, parsed back with ``tomllib`` and checked before it is returned.

    Raises:
        SpecError: the checker found a problem (every one is listed).
    """
    text = "# Generated by `sealpod gramine manifest`; do not edit (MRENCLAVE covers it).\n"
    text += tomli_w.dumps(doc)
    parsed = tomllib.loads(text)
    if parsed != doc:  # tomli-w and tomllib must agree, or the manifest is not what we meant
        raise SpecError(f"{source}: the TOML written does not read back as the same manifest")
    require_valid(parsed, production=True, source=source)
    return text
