"""The runtime base of ``sealpod image``: Debian with Python, sealpod, bubblewrap and FUSE.

:func:`ensure_runtime_base` returns the base as one deterministic layer (an uncompressed tar
and its digest), building it on the first call and caching it under
``$SEALPOD_HOME/cache/runtime-base/<key>/``. Steps:

1. a wheel of this sealpod checkout (``pip wheel --no-deps``; reproducible: the build backend
   honours ``SOURCE_DATE_EPOCH``), whose SHA-256 goes into the cache key with the recipe
   (suite, packages) and the versions of every package installed beside sealpod here;
2. on a cache miss: the wheels of sealpod's dependencies at exactly those versions, from the
   pip cache or PyPI (``pip wheel -c constraints``), then ``mmdebstrap`` (via
   :mod:`sealpod.rootfs.debian`) with ``python3``, ``python3-venv``, ``bubblewrap``, ``fuse3``
   and ``ca-certificates``, in which a hook makes the virtual environment ``/opt/sealpod``,
   installs the wheels offline and links ``/usr/local/bin/sealpod``;
3. the tree packed as a layer by :func:`sealpod.build.oci.write_layer` (sorted entries,
   mtime 0, owner 0), kept with its digest; the tree itself is removed.

The wheels are built by this interpreter, so it must be the Python of the base's suite
(3.11 for bookworm): a compiled dependency (pyfuse3) would not load otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sealpod.build.oci import write_layer
from sealpod.errors import ConfigError, ToolError
from sealpod.rootfs.debian import DebianRootfs, build_debian_rootfs
from sealpod.settings import sealpod_home

RECIPE_VERSION = 1
SUITE = "bookworm"
SUITE_PYTHON = {"bookworm": (3, 11), "trixie": (3, 13)}
#: libseccomp2: the sandbox's seccomp filter (sealpod.runtime.seccomp, through pyseccomp).
PACKAGES = ("python3", "python3-venv", "bubblewrap", "fuse3", "libseccomp2", "ca-certificates")
VENV = "/opt/sealpod"
EXTRAS = "postgres,fuse"
PIP_TIMEOUT_SECS = 900

Progress = Callable[[str], None]
_REQ_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER_RE = re.compile(r"extra\s*==\s*['\"]([^'\"]+)['\"]")


@dataclass(frozen=True, slots=True)
class RuntimeBase:
    """The base layer: ``layer`` (an uncompressed tar) whose SHA-256 is ``diff_id``."""

    layer: Path
    diff_id: str
    size: int
    key: str
    built: bool  # False when it came from the cache


def find_checkout() -> Path:
    """The source checkout this sealpod runs from (``pyproject.toml`` beside ``src/sealpod``).

    Raises:
        ConfigError: sealpod was installed from a wheel (no checkout to build one from).
    """
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "sealpod"' in pyproject.read_text(encoding="utf-8"):
        return root
    raise ConfigError(
        "sealpod image builds its runtime base from a sealpod source checkout, and this"
        f" sealpod is installed without one (looked in {root}); give --checkout DIR"
    )


def ensure_runtime_base(
    *,
    checkout: Path | None = None,
    cache_dir: Path | None = None,
    suite: str = SUITE,
    progress: Progress | None = None,
) -> RuntimeBase:
    """The cached base layer for this checkout, built first when missing.

    Raises:
        ConfigError: no checkout, or this Python cannot build wheels for the suite's Python.
        ToolError: pip or mmdebstrap failed or is missing.
        ConfigError: also when the cache or a temporary directory cannot be written.
    """
    say = progress or (lambda _msg: None)
    want = SUITE_PYTHON.get(suite)
    if want is None:
        raise ConfigError(f"suite is {suite!r}, expected one of {', '.join(SUITE_PYTHON)}")
    if sys.version_info[:2] != want:
        raise ConfigError(
            f"this Python is {sys.version_info[0]}.{sys.version_info[1]}, but {suite}'s is"
            f" {want[0]}.{want[1]}: the base's compiled wheels must match it; run sealpod"
            f" image with Python {want[0]}.{want[1]}"
        )
    source = checkout or find_checkout()
    try:
        cache = (cache_dir or sealpod_home(create=True) / "cache") / "runtime-base"
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        return _cached_or_built(source, cache, suite, say)
    except OSError as exc:
        raise ConfigError(f"cannot build or cache the runtime base: {exc}") from exc


def _cached_or_built(source: Path, cache: Path, suite: str, say: Progress) -> RuntimeBase:
    with tempfile.TemporaryDirectory(prefix="sealpod-base-") as tmp:
        work = Path(tmp)
        if any(c.isspace() for c in str(work)):
            raise ConfigError(f"temporary directory {work} has a space (mmdebstrap hooks split)")
        wheels = work / "sealpod-wheels"
        say("building the sealpod wheel")
        _pip(["wheel", "--no-deps", "--wheel-dir", str(wheels), str(source)], work)
        (own,) = sorted(wheels.glob("sealpod-*.whl"))
        constraints = _constraints()
        key = _key(suite, own, constraints)
        # One builder per key: a second `sealpod image` waits, then finds the cached layer.
        with _locked(cache / f".{key}.lock"):
            cached = _load_cached(cache / key, key)
            if cached is not None:
                return cached
            return _build(suite, key, own, constraints, wheels, work, cache, say)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _build(
    suite: str,
    key: str,
    own: Path,
    constraints: list[str],
    wheels: Path,
    work: Path,
    cache: Path,
    say: Progress,
) -> RuntimeBase:
    say(f"downloading sealpod's dependencies ({len(constraints)} pinned)")
    pins = work / "constraints.txt"
    pins.write_text("\n".join(constraints) + "\n", encoding="utf-8")
    _pip(["wheel", "--wheel-dir", str(wheels), "-c", str(pins), f"{own}[{EXTRAS}]"], work)
    say(f"building the Debian {suite} base with mmdebstrap (about a minute)")
    rootfs = work / "rootfs"
    build_debian_rootfs(_recipe(suite, wheels), rootfs, log=work / "mmdebstrap.log")
    say("packing the base layer")
    partial = cache / f".{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    blob, diff_id = write_layer(rootfs, partial)
    (partial / blob.digest.split(":")[1]).rename(partial / "layer.tar")
    (partial / "layer.json").write_text(
        json.dumps({"diff_id": diff_id, "size": blob.size, "key": key}), encoding="utf-8"
    )
    final = cache / key
    shutil.rmtree(final, ignore_errors=True)  # a damaged earlier copy
    partial.rename(final)
    return RuntimeBase(final / "layer.tar", diff_id, blob.size, key, built=True)


def _recipe(suite: str, wheels: Path) -> DebianRootfs:
    pip = f"{VENV}/bin/pip"
    hooks = (
        f"copy-in {wheels} /tmp",
        f'chroot "$1" python3 -m venv {VENV}',
        f'chroot "$1" {pip} install --no-index --no-cache-dir --disable-pip-version-check'
        f' --find-links /tmp/{wheels.name} "sealpod[{EXTRAS}]"',
        # Nothing installs packages at run time: no pip or setuptools in the image.
        f'chroot "$1" {pip} uninstall --yes --quiet pip setuptools',
        f'rm -rf "$1/tmp/{wheels.name}"',
        f'ln -s {VENV}/bin/sealpod "$1/usr/local/bin/sealpod"',
        'mkdir -p "$1/var/lib/sealpod" "$1/bundle"',
    )
    return DebianRootfs(suite=suite, variant="essential", packages=PACKAGES, customize_hooks=hooks)


def _constraints() -> list[str]:
    """``name==version`` of sealpod's installed dependencies (with its extras), recursively:
    the base gets exactly the versions sealpod is tested with here."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("sealpod", frozenset(EXTRAS.split(",")))]
    while todo:
        name, extras = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python (environment marker)
        if name != "sealpod":
            pins[name] = dist.version
        for requirement in dist.requires or []:
            match = _REQ_RE.match(requirement)
            if match is None:
                continue
            wanted_by = _EXTRA_MARKER_RE.search(requirement)
            if wanted_by is not None and wanted_by.group(1) not in extras:
                continue
            dep = _normalise(match.group(1))
            dep_extras = frozenset(
                e.strip() for e in (match.group(2) or "").split(",") if e.strip()
            )
            if dep not in pins and dep != "sealpod":
                todo.append((dep, dep_extras))
    return sorted(f"{name}=={version}" for name, version in pins.items())


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _key(suite: str, wheel: Path, constraints: list[str]) -> str:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": suite,
        "packages": list(PACKAGES),
        "wheel": digest,
        "constraints": constraints,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def _load_cached(directory: Path, key: str) -> RuntimeBase | None:
    """The cached layer if its record is sound and the tar still has its digest."""
    try:
        record = json.loads((directory / "layer.json").read_text(encoding="utf-8"))
        layer = directory / "layer.tar"
        digest = hashlib.sha256()
        with layer.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("diff_id") != f"sha256:{digest.hexdigest()}":
        return None  # damaged: rebuilt by the caller
    return RuntimeBase(layer, str(record["diff_id"]), int(record["size"]), key, built=False)


def _pip(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        result = subprocess.run(  # noqa: S603 - this interpreter's pip, fixed arguments
            [sys.executable, "-m", "pip", *args, "--quiet"],
            cwd=cwd, env=env, capture_output=True, text=True, errors="replace",
            timeout=PIP_TIMEOUT_SECS, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"pip {args[0]} took longer than {PIP_TIMEOUT_SECS} s") from exc
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("WARNING:")]
        raise ToolError(f"pip {args[0]} failed:\n" + "\n".join(lines[-8:]))
