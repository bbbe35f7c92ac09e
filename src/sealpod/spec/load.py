"""Reading ``sealpod.toml`` from disk (the I/O edge of :mod:`sealpod.spec`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from sealpod._files import read_limited
from sealpod.errors import SpecError
from sealpod.spec.model import PodSpec, parse_spec

#: A pod spec is a small hand-written file; anything larger is refused before parsing.
MAX_SPEC_SIZE = 1 << 20


def load_spec(path: Path) -> PodSpec:
    """Read, parse and validate the pod spec at ``path``.

    Raises:
        SpecError: the file is missing, unreadable, a directory, too large, not UTF-8, not
            TOML, or does not validate (the message names every bad key path).
    """
    raw = read_limited(path, "pod spec", limit=MAX_SPEC_SIZE, error=SpecError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"pod spec {path} is not UTF-8 (byte {exc.start})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"pod spec {path} is not valid TOML: {exc}") from exc
    return parse_spec(data, source=str(path))


def image_source(spec: PodSpec, spec_path: Path) -> Path:
    """The image path of ``spec``, with a relative ``[image] source`` taken from the spec's
    directory (not the working directory), so a spec builds the same wherever it is run from.

    Raises:
        Nothing: this is path arithmetic; whether the source exists is the build's concern.
    """
    source = Path(spec.image.source).expanduser()
    if not source.is_absolute():
        source = spec_path.parent / source
    return source
