"""The bundle manifest: what a sealed bundle is, as canonical JSON, and how two trees differ.

Pure (no file access, no clock): the build and verify code feed it :class:`Observed` entries
that :mod:`sealpod.build.hashing` gathered from disk.

``manifest.json`` holds the whole identity of a pod: every trusted file's path, mode, size and
SHA-256 (directories with their modes, symlinks with their targets; no mtimes, no owners), the
process and its environment template, the provisioned files, volumes, TEE configuration, KMS
and product identity. Its canonical bytes are hashed into the **workload measurement**
(docs/protocol.md, Artifacts and identities), so the file on disk must be exactly
``canonical_json`` of the parsed model —
anything else is refused rather than re-serialized.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from sealpod.errors import BundleIntegrityError, SpecError
from sealpod.spec.canonical import canonical_json
from sealpod.spec.model import (
    AbsPath,
    FileSpec,
    IdentitySpec,
    KmsSpec,
    PodSpec,
    ProcessSpec,
    RuntimeSpec,
    TeeBackendName,
    VolumeSpec,
    format_loc,
    is_under,
)

MANIFEST_FORMAT: Literal["sealpod-manifest/v1"] = "sealpod-manifest/v1"
MAX_MANIFEST_SIZE = 256 << 20
MAX_SYMLINK_HOPS = 40
_SHA256_HEX = r"^[0-9a-f]{64}$"
_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class FileEntry(_Strict):
    type: Literal["file"] = "file"
    path: AbsPath
    mode: Annotated[int, Field(ge=0, le=0o7777)]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=_SHA256_HEX)]


class DirEntry(_Strict):
    type: Literal["dir"] = "dir"
    path: AbsPath
    mode: Annotated[int, Field(ge=0, le=0o7777)]


class SymlinkEntry(_Strict):
    type: Literal["symlink"] = "symlink"
    path: AbsPath
    target: Annotated[str, Field(min_length=1, max_length=4096)]


AnyEntry = FileEntry | DirEntry | SymlinkEntry
Entry = Annotated[AnyEntry, Field(discriminator="type")]


class TeeConfig(_Strict):
    """``[tee]`` with the memory size normalized to bytes (``"512M"`` and ``"524288K"`` are
    the same pod, so they must be the same measurement)."""

    backends: list[TeeBackendName]
    memory_bytes: Annotated[int, Field(ge=1)]
    threads: Annotated[int, Field(ge=1)]
    debug: bool


class TrustedTree(_Strict):
    """The trusted paths and every entry under them, sorted by path, each once."""

    paths: Annotated[list[AbsPath], Field(min_length=1)]
    entries: list[Entry]

    @model_validator(mode="after")
    def _sorted_and_trusted(self) -> TrustedTree:
        previous = ""
        for entry in self.entries:
            if entry.path <= previous:
                raise PydanticCustomError("order", f"entry {entry.path!r} is out of order")
            if not any(is_under(entry.path, root) for root in self.paths):
                raise PydanticCustomError("trust", f"entry {entry.path!r} is not under a path")
            previous = entry.path
        return self


class Manifest(_Strict):
    """``manifest.json``. ``files`` are the secret files provisioned at run time (``[[files]]``);
    the hashed image files are ``trusted.entries``."""

    format: Literal["sealpod-manifest/v1"]
    identity: IdentitySpec
    process: ProcessSpec
    files: list[FileSpec]
    volumes: list[VolumeSpec]
    tee: TeeConfig
    kms: KmsSpec | None
    trusted: TrustedTree
    runtime: RuntimeSpec | None = None

    def to_bytes(self) -> bytes:
        """The canonical bytes (what ``manifest.json`` holds and the measurement hashes).

        Keys added after the first format (``runtime``, a file's ``field``) are left out while
        unset, so that a pod that does not use them keeps the measurement it always had.

        Raises:
            Nothing for a validated manifest.
        """
        data = self.model_dump(mode="json")
        if data["runtime"] is None:
            del data["runtime"]
        for file in data["files"]:
            if file["field"] is None:
                del file["field"]
        return canonical_json(data)

    @property
    def measurement(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @property
    def file_count(self) -> int:
        return sum(1 for e in self.trusted.entries if isinstance(e, FileEntry))

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.trusted.entries if isinstance(e, FileEntry))


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """One directory entry as found on disk. ``kind`` ``"other"`` is a device, FIFO or socket;
    ``sha256`` is ``None`` for files that were not hashed."""

    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    mode: int = 0
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    detail: str = ""  # e.g. "character device", for messages


def _entry_dict(item: Observed) -> dict[str, object]:
    if item.kind == "file" and item.sha256 is not None:
        return {"type": "file", "path": item.path, "mode": item.mode, "size": item.size,
                "sha256": item.sha256}  # fmt: skip
    if item.kind == "dir":
        return {"type": "dir", "path": item.path, "mode": item.mode}
    if item.kind == "symlink" and item.target:
        return {"type": "symlink", "path": item.path, "target": item.target}
    raise SpecError(f"{item.path} is a {item.detail or item.kind}, which a bundle cannot hold")


_ENTRIES: TypeAdapter[list[AnyEntry]] = TypeAdapter(list[Entry])


def make_manifest(spec: PodSpec, observed: Iterable[Observed]) -> Manifest:
    """The manifest of ``spec`` over the items found in the image (those outside the trusted
    paths are left out).

    Raises:
        SpecError: the entrypoint is not a trusted executable file of the image, a trusted path
            is absent, a volume mount point or a secret file path would hide image files, or an
            entry cannot be recorded (a special or unhashed file, an overlong path).
    """
    trusted = TrustedFilter(tuple(spec.trusted.paths))
    rows = sorted((_entry_dict(o) for o in observed if trusted(o.path)), key=_path_of)
    try:
        # one pydantic-core pass over all entries: ~20x faster than a model per entry
        entries = _ENTRIES.validate_python(rows)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        row = first["loc"][0] if first["loc"] else None
        where = rows[row]["path"] if isinstance(row, int) else "?"
        raise SpecError(f"image entry {where!r} cannot be recorded: {first['msg']}") from exc
    index = {e.path: e for e in entries}
    _check_against_image(spec, index)
    # Every part is a validated model already; constructing skips re-running the (linear)
    # entry checks a second time.
    return Manifest.model_construct(
        format=MANIFEST_FORMAT,
        identity=spec.identity,
        process=spec.process,
        files=spec.files,
        volumes=spec.volumes,
        tee=TeeConfig(
            backends=list(spec.tee.backends),
            memory_bytes=spec.tee.memory_bytes,
            threads=spec.tee.threads,
            debug=spec.tee.debug,
        ),
        kms=spec.kms,
        trusted=TrustedTree(paths=spec.trusted.paths, entries=entries),
        runtime=spec.runtime,
    )


def _path_of(row: dict[str, object]) -> str:
    return str(row["path"])


def _check_against_image(spec: PodSpec, index: Mapping[str, AnyEntry]) -> None:
    problems: list[str] = []
    for i, root in enumerate(spec.trusted.paths):
        if root != "/" and root not in index:
            problems.append(f"trusted.paths[{i}]: {root} is not in the image")
    target = resolve(index, spec.process.entrypoint)
    if not isinstance(target, FileEntry):
        problems.append(
            f"process.entrypoint: {spec.process.entrypoint} is not a trusted file of the image"
            " (an untrusted entrypoint could be swapped by the host)"
        )
    elif not target.mode & 0o111:
        problems.append(
            f"process.entrypoint: {target.path} is not executable (mode {target.mode:04o})"
        )
    for i, vol in enumerate(spec.volumes):
        hidden = [p for p in index if p != vol.path and is_under(p, vol.path)]
        if hidden:
            problems.append(
                f"volumes[{i}].path: mounting {vol.path} would hide {len(hidden)} image"
                f" entries, e.g. {hidden[0]}"
            )
    for i, file in enumerate(spec.files):
        if any(is_under(p, file.path) for p in index):
            problems.append(f"files[{i}].path: {file.path} exists in the image and would be hidden")
    problems.extend(_mount_problems(spec, index))
    if problems:
        raise SpecError("the pod spec does not fit its image:\n  " + "\n  ".join(problems))


#: Always private, writable tmpfs mounts in a running pod (docs/runtime.md).
RUNTIME_TMPFS = ("/tmp", "/run")  # noqa: S108 (paths inside the sandbox, not the host)


def in_memory_dirs(spec_runtime: RuntimeSpec | None) -> tuple[str, ...]:
    """The directories ``sealpod run`` mounts as tmpfs: ``/tmp``, ``/run`` and ``[runtime]
    tmpfs``."""
    extra = tuple(spec_runtime.tmpfs) if spec_runtime is not None else ()
    return RUNTIME_TMPFS + extra


def _mount_problems(spec: PodSpec, index: Mapping[str, AnyEntry]) -> list[str]:
    """What ``sealpod run`` could not lay out: the root is read-only, so every mount point must
    be a directory of the image or lie inside a tmpfs, and secret files live in a tmpfs."""
    problems: list[str] = []
    memory = in_memory_dirs(spec.runtime)

    def placeable(path: str) -> bool:
        if any(is_under(path, m) and path != m for m in memory):
            return True
        return isinstance(resolve(index, path), DirEntry) or path in RUNTIME_TMPFS

    for i, path in enumerate(spec.runtime.tmpfs if spec.runtime else []):
        hidden = [p for p in index if p != path and is_under(p, path)]
        if hidden:
            problems.append(
                f"runtime.tmpfs[{i}]: mounting {path} would hide {len(hidden)} image entries,"
                f" e.g. {hidden[0]}"
            )
        if not placeable(path):
            problems.append(f"runtime.tmpfs[{i}]: {path} is not a directory of the image")
    for i, vol in enumerate(spec.volumes):
        if not placeable(vol.path):
            problems.append(
                f"volumes[{i}].path: {vol.path} is not a directory of the image nor inside a"
                " tmpfs (/tmp, /run or [runtime] tmpfs), so it cannot be a mount point"
            )
    ratls = spec.runtime.ratls if spec.runtime is not None else None
    if ratls is not None and not any(is_under(ratls, m) for m in memory):
        problems.append(
            f"runtime.ratls: {ratls} is not /run, /tmp, a [runtime] tmpfs path or inside one"
        )
    for i, file in enumerate(spec.files):
        if not any(is_under(file.path, m) and file.path != m for m in memory):
            problems.append(
                f"files[{i}].path: {file.path} is not inside /run, /tmp or a [runtime] tmpfs"
                " path (secret files live in memory; the image's root is read-only)"
            )
    return problems


def resolve(index: Mapping[str, AnyEntry], path: str) -> AnyEntry | None:
    """Follow symlinks (in the image's namespace, never the host's) from ``path``.

    Returns the final entry, or ``None`` when a component is missing or the chain of symlinks
    is longer than ``MAX_SYMLINK_HOPS`` (a loop).

    Raises:
        Nothing.
    """
    pending = [p for p in reversed(path.split("/")) if p]
    current = ""
    hops = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            current = current.rsplit("/", 1)[0]
            continue
        candidate = f"{current}/{part}"
        entry = index.get(candidate)
        if isinstance(entry, SymlinkEntry):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            if entry.target.startswith("/"):
                current = ""
            pending.extend(p for p in reversed(entry.target.split("/")) if p)
            continue
        if entry is None:
            return None
        current = candidate
    return index.get(current) if current else None


def parse_manifest(raw: bytes) -> Manifest:
    """Parse ``manifest.json`` and check that it is exactly in canonical form.

    Raises:
        BundleIntegrityError: too large, not the manifest shape, or not canonical bytes.
    """
    if len(raw) > MAX_MANIFEST_SIZE:
        raise BundleIntegrityError(f"manifest.json is larger than {MAX_MANIFEST_SIZE} bytes")
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = format_loc(first["loc"]) or "document"
        raise BundleIntegrityError(f"manifest.json is malformed: {where}: {first['msg']}") from exc
    if manifest.to_bytes() != raw:
        raise BundleIntegrityError("manifest.json is not in canonical form (it was edited)")
    return manifest


# --- differences between a manifest and a tree ----------------------------------------------
DiffKind = Literal[
    "modified", "missing", "extra", "mode-changed", "symlink-retargeted", "type-changed"
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference:
    """One way in which the files differ from the manifest."""

    kind: DiffKind
    path: str
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}: {self.path}"
        if self.expected is not None or self.actual is not None:
            expected, actual = _short(self.expected), _short(self.actual)
            text += f" (expected {expected}, found {actual})"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "path": self.path,
            "expected": self.expected,
            "actual": self.actual,
        }


def compare(expected: Sequence[AnyEntry], observed: Iterable[Observed]) -> list[Difference]:
    """Every difference between the manifest's ``expected`` entries and what is on disk,
    sorted by path (a file whose content and mode both changed yields two differences).

    Raises:
        Nothing.
    """
    want = {e.path: e for e in expected}
    have = {o.path: o for o in observed}
    diffs: list[Difference] = []
    for path in sorted(want.keys() | have.keys()):
        shown = _printable(path)
        e, o = want.get(path), have.get(path)
        if o is None:
            diffs.append(Difference(kind="missing", path=shown, expected=e.type if e else None))
        elif e is None:
            diffs.append(Difference(kind="extra", path=shown, actual=o.detail or o.kind))
        elif e.type != o.kind:
            diffs.append(
                Difference(
                    kind="type-changed", path=shown, expected=e.type, actual=o.detail or o.kind
                )
            )
        elif isinstance(e, SymlinkEntry):
            if e.target != o.target:
                diffs.append(
                    Difference(
                        kind="symlink-retargeted",
                        path=shown,
                        expected=e.target,
                        actual=_printable(o.target or ""),
                    )
                )
        else:
            if isinstance(e, FileEntry) and (e.sha256 != o.sha256 or e.size != o.size):
                diffs.append(
                    Difference(
                        kind="modified",
                        path=shown,
                        expected=f"{e.size} bytes, sha256:{e.sha256}",
                        actual=f"{o.size} bytes" + (f", sha256:{o.sha256}" if o.sha256 else ""),
                    )
                )
            if e.mode != o.mode:
                diffs.append(
                    Difference(
                        kind="mode-changed",
                        path=shown,
                        expected=f"{e.mode:04o}",
                        actual=f"{o.mode:04o}",
                    )
                )
    return diffs


def _short(value: str | None) -> str:
    """For people: hashes cut to 16 hex digits (``.to_dict()`` keeps them whole)."""
    return _HASH_RE.sub(lambda m: m.group(0)[:23] + "...", value) if value else "-"


def _printable(text: str) -> str:
    """Undecodable file-name bytes (surrogate escapes) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class TrustedFilter:
    """Whether a path lies under one of the trusted paths."""

    roots: tuple[str, ...]

    def __call__(self, path: str) -> bool:
        return any(is_under(path, root) for root in self.roots)
