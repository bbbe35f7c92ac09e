"""Sealed bundles: build one from a pod spec, load one, verify one.

A bundle is a directory::

    BUNDLE/rootfs/         the image's files (owners and times dropped, modes kept)
    BUNDLE/manifest.json   canonical JSON (see sealpod.build.manifest); measurement = its SHA-256
    BUNDLE/signature.json  the author's signature over the measurement (sealpod.build.sign)

It is built in a hidden sibling directory and renamed into place at the end, so an interrupted
build never leaves something that looks like a bundle. The clock is never read here: the
caller passes ``signed_at``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sealpod.build.hashing import Progress, copy_tree, hash_tree
from sealpod.build.keys import AuthorPrivateKey
from sealpod.build.manifest import (
    MAX_MANIFEST_SIZE,
    Difference,
    FileEntry,
    Manifest,
    Observed,
    TrustedFilter,
    compare,
    make_manifest,
    parse_manifest,
)
from sealpod.build.sign import (
    MAX_SIGNATURE_FILE_SIZE,
    SignatureDocument,
    parse_signature_document,
    sign_measurement,
    verify_signature,
)
from sealpod.errors import BundleError, BundleIntegrityError, ConfigError, SpecError
from sealpod.spec.model import PodSpec

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
ROOTFS_NAME = "rootfs"
#: How many differences the exception message itself lists (``.differences`` has them all).
_MESSAGE_DIFFERENCES = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    """A loaded bundle whose signature has been checked (its files have not: see
    :func:`verify_bundle`)."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes = field(repr=False)
    signature: SignatureDocument = field(repr=False)
    measurement: bytes  # SHA-256 of manifest_bytes
    signer_id: bytes  # SHA-256 of the author key's DER SubjectPublicKeyInfo

    @property
    def rootfs(self) -> Path:
        return self.path / ROOTFS_NAME


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleReport:
    """The result of a successful :func:`verify_bundle`."""

    path: Path
    measurement: bytes
    signer_id: bytes
    signed_at: str
    entries_checked: int
    file_count: int
    total_size: int

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": True,
            "path": str(self.path),
            "measurement": self.measurement.hex(),
            "signer_id": self.signer_id.hex(),
            "signed_at": self.signed_at,
            "entries_checked": self.entries_checked,
            "file_count": self.file_count,
            "total_size": self.total_size,
        }


def build_bundle(
    spec: PodSpec,
    *,
    image: Path,
    key: AuthorPrivateKey,
    out: Path,
    signed_at: datetime,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Bundle:
    """Build, measure and sign the bundle of ``spec`` (whose image is at ``image``) into ``out``.

    A plain rootfs directory is copied and hashed in one pass; anything else (an archive, an
    OCI layout) is unpacked by :func:`sealpod.build.image.materialize_image`, then hashed.

    Raises:
        SpecError: the image is missing, or the spec does not fit the image (entrypoint absent
            or untrusted, trusted path absent, volume or secret file hiding image files).
        ArchiveError: the image holds special files, non-UTF-8 names or is a hostile archive.
        BundleError: ``out`` exists, or files cannot be read or written.
        ConfigError: an unsupported key, a naive ``signed_at``, or image support not installed.
    """
    if out.exists() or out.is_symlink():
        raise BundleError(f"output {out} already exists; remove it or choose another path")
    if not (image.exists() or image.is_symlink()):
        raise SpecError(f"image.source: {image} does not exist")
    if image.is_dir() and image.resolve() in out.resolve().parents:
        raise BundleError(f"output {out} lies inside the image {image}")
    work = out.with_name(f".{out.name}.build-{secrets.token_hex(4)}")
    trusted = TrustedFilter(tuple(spec.trusted.paths))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work.mkdir(mode=0o755)
        rootfs = work / ROOTFS_NAME
        if _is_plain_rootfs(image):
            observed = copy_tree(image, rootfs, trusted=trusted, workers=workers, progress=progress)
        else:
            _materialize(image, rootfs)
            observed = hash_tree(
                rootfs, trusted=trusted, strict=True, workers=workers, progress=progress
            )
        manifest = make_manifest(spec, observed)
        raw = manifest.to_bytes()
        measurement = hashlib.sha256(raw).digest()
        signature = sign_measurement(key, measurement, signed_at=signed_at)
        _write_new(work / MANIFEST_NAME, raw)
        _write_new(work / SIGNATURE_NAME, signature.to_json())
        os.rename(work, out)
    except OSError as exc:
        raise BundleError(f"cannot write bundle {out}: {exc.strerror or exc}") from exc
    finally:
        if work.exists():
            remove_tree(work)
    return Bundle(
        path=out,
        manifest=manifest,
        manifest_bytes=raw,
        signature=signature,
        measurement=measurement,
        signer_id=bytes.fromhex(signature.signer_id),
    )


def _is_plain_rootfs(image: Path) -> bool:
    """A directory that is not an OCI image layout (``oci-layout`` + ``index.json``)."""
    if not image.is_dir():
        return False
    return not ((image / "oci-layout").is_file() and (image / "index.json").is_file())


def _materialize(image: Path, dest: Path) -> None:
    try:
        from sealpod.build.image import materialize_image  # optional: the IMAGE part
    except ImportError as exc:
        raise ConfigError(
            f"{image} is not a plain rootfs directory, and image import is not available"
        ) from exc
    materialize_image(image, dest)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a (partial) bundle tree, including read-only directories copied from an image.

    Raises:
        Nothing: failures are ignored (the tree is a hidden, randomly named leftover).
    """
    for directory, _dirs, _files in os.walk(path):  # top-down; never follows symlinks
        try:
            os.chmod(directory, stat.S_IRWXU)
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        # O_NONBLOCK: a FIFO in place of the file is refused below instead of hanging open().
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise BundleError(f"{path.parent} is not a sealpod bundle: {what} is missing") from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleIntegrityError(f"{what} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleIntegrityError(f"{what} is larger than {limit} bytes")
    return data


def load_bundle(path: Path, *, signer: bytes | None = None) -> Bundle:
    """Load the bundle at ``path``: parse its manifest (which must be canonical) and check its
    signature (and, with ``signer``, that the author key is that one). Files are not hashed.

    Raises:
        BundleError: not a bundle directory (manifest.json or signature.json missing).
        BundleIntegrityError: manifest.json is malformed or not canonical.
        SignatureError: the signature does not verify, belongs to another manifest, or was
            made by another signer than ``signer``.
    """
    try:
        is_dir = path.is_dir()
    except OSError as exc:  # EACCES, ENAMETOOLONG: pathlib answers False only for ENOENT & co
        raise BundleError(f"cannot read {path}: {exc.strerror}") from exc
    if not is_dir:
        raise BundleError(f"{path} is not a sealpod bundle (not a directory)")
    raw = _read_bounded(path / MANIFEST_NAME, MAX_MANIFEST_SIZE, MANIFEST_NAME)
    signature = parse_signature_document(
        _read_bounded(path / SIGNATURE_NAME, MAX_SIGNATURE_FILE_SIZE, SIGNATURE_NAME)
    )
    manifest = parse_manifest(raw)
    measurement = hashlib.sha256(raw).digest()
    signer_id = verify_signature(signature, measurement, signer=signer)
    return Bundle(
        path=path,
        manifest=manifest,
        manifest_bytes=raw,
        signature=signature,
        measurement=measurement,
        signer_id=signer_id,
    )


def verify_bundle(
    path: Path,
    *,
    signer: bytes | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Check everything: the signature (and ``signer``), then every trusted file's type, mode,
    size, hash and symlink target against the manifest, reporting every difference.

    Raises:
        BundleError / SignatureError: as :func:`load_bundle`.
        BundleIntegrityError: the files differ from the manifest; ``.differences`` lists every
            :class:`~sealpod.build.manifest.Difference` (modified, missing, extra,
            mode-changed, symlink-retargeted, type-changed).
    """
    bundle = load_bundle(path, signer=signer)
    return check_files(bundle, workers=workers, progress=progress)


def check_files(
    bundle: Bundle, *, workers: int | None = None, progress: Progress | None = None
) -> BundleReport:
    """The file half of :func:`verify_bundle`, for a bundle whose signature
    :func:`load_bundle` has checked (the runtime keeps that very manifest).

    Raises:
        BundleIntegrityError: as :func:`verify_bundle`.
    """
    path = bundle.path
    manifest = bundle.manifest
    rootfs = bundle.rootfs
    if rootfs.is_symlink() or not rootfs.is_dir():
        observed: list[Observed] = []
    else:
        trusted = TrustedFilter(tuple(manifest.trusted.paths))
        sizes = {e.path: e.size for e in manifest.trusted.entries if isinstance(e, FileEntry)}
        observed = hash_tree(
            rootfs,
            trusted=trusted,
            strict=False,
            workers=workers,
            progress=progress,
            skip=lambda o: sizes.get(o.path) != o.size,  # extra or resized: differs already
        )
    differences = compare(manifest.trusted.entries, observed)
    if differences:
        raise BundleIntegrityError(_summary(path, differences), differences)
    return BundleReport(
        path=path,
        measurement=bundle.measurement,
        signer_id=bundle.signer_id,
        signed_at=bundle.signature.signed_at,
        entries_checked=len(manifest.trusted.entries),
        file_count=manifest.file_count,
        total_size=manifest.total_size,
    )


def _summary(path: Path, differences: list[Difference]) -> str:
    shown = "; ".join(str(d) for d in differences[:_MESSAGE_DIFFERENCES])
    more = len(differences) - _MESSAGE_DIFFERENCES
    tail = f"; and {more} more" if more > 0 else ""
    return f"bundle {path} differs from its manifest in {len(differences)} place(s): {shown}{tail}"
