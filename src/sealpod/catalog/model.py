"""What a catalog recipe is, and what rendering one with parameters produces.

Pure: recipes are data plus a render function from checked parameter values to a
:class:`Layout` (the pod spec text, the files the recipe writes into the rootfs, the KMS secrets
the pod needs and a sample release policy). Nothing here touches files or runs a program;
:mod:`sealpod.catalog.rootfs` and :mod:`sealpod.catalog.build` do that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sealpod.errors import ConfigError

ParamKind = Literal["port", "name", "size", "dns", "text", "int", "yesno"]
ParamValue = str | int

_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_SIZE_RE = re.compile(r"[1-9][0-9]{0,5}[KMGT]")
_DNS_RE = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
_TEXT_RE = re.compile(r"[A-Za-z0-9_./:@+-]{1,256}")
#: The machine's own services hold these; a catalog entry never defaults to or accepts them.
RESERVED_PORTS = frozenset({5432, 3306, 6379, 1883, 5672, 4222})
MAX_PARAM_TEXT = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A recipe parameter with its default, shown by ``sealpod catalog show``."""

    name: str
    kind: ParamKind
    default: ParamValue
    help: str
    maximum: int | None = None  # of an ``int`` below 65535


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretNeed:
    """A KMS secret the pod reads, and how an operator makes it."""

    name: str
    #: ``sealpod kms secret put NAME --generate ...`` argument: password, bytes:32, tls-cert.
    generate: str
    purpose: str
    dns: tuple[str, ...] = ()

    def put_command(self) -> str:
        """The ``sealpod kms secret put`` command that creates this secret."""
        dns = "".join(f" --dns {d}" for d in self.dns)
        return f"sealpod kms secret put {self.name} --generate {self.generate}{dns}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RootfsFile:
    """A file the recipe writes into the rootfs (measured like every other file)."""

    path: str
    text: str
    mode: int = 0o644


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """A recipe rendered with its parameters: everything ``catalog build`` writes."""

    recipe: str
    spec_toml: str
    files: tuple[RootfsFile, ...]
    #: Directories that must exist in the rootfs (volume mount points, tmpfs paths).
    dirs: tuple[str, ...]
    secrets: tuple[SecretNeed, ...]
    volumes: tuple[tuple[str, str], ...]  # (name, path)
    ports: tuple[tuple[str, int], ...]  # (what, port)
    ready_tcp: str
    product_id: int

    def released_secrets(self) -> list[str]:
        """Every secret the release policy must grant: env/files, then ``volume.<name>``."""
        return [s.name for s in self.secrets] + [f"volume.{name}" for name, _ in self.volumes]


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """One catalog entry: Debian packages, the service account, parameters and a renderer."""

    name: str
    summary: str
    packages: tuple[str, ...]
    user: str
    params: tuple[Param, ...]
    render: Callable[[Mapping[str, ParamValue]], Layout]
    #: Host paths copied into the rootfs, by parameter name (the python entry's app directory).
    copy_params: tuple[tuple[str, str], ...] = field(default=())
    #: uid (= gid) of ``user`` when the image has no such account (added to /etc/passwd).
    fallback_uid: int = 990
    #: Paths (relative to the root) the packages' install scripts create that the pod must not
    #: carry, removed from each copy (e.g. the cluster Debian's postgresql creates at install).
    build_remove: tuple[str, ...] = ()

    def defaults(self) -> dict[str, ParamValue]:
        """Every parameter at its default."""
        return {p.name: p.default for p in self.params}


def check_value(param: Param, raw: str) -> ParamValue:
    """Parse ``raw`` (from ``--set NAME=VALUE``) as ``param``'s kind.

    Raises:
        ConfigError: the value does not fit the kind, naming the parameter and what was expected.
    """
    where = f"parameter {param.name}"
    if len(raw) > MAX_PARAM_TEXT or "\x00" in raw:
        raise ConfigError(f"{where} is too long or holds NUL, expected at most 1024 characters")
    if param.kind in ("port", "int"):
        if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
            raise ConfigError(f"{where} is {raw!r}, expected a whole number")
        value = int(raw)
        if param.kind == "port" and not 1024 <= value <= 65535:
            raise ConfigError(f"{where} is {value}, expected a port from 1024 to 65535")
        if param.kind == "port" and value in RESERVED_PORTS:
            raise ConfigError(
                f"{where} is {value}, which this machine's own services use; choose another"
            )
        top = 0xFFFF if param.maximum is None else param.maximum
        if param.kind == "int" and not 0 <= value <= top:
            raise ConfigError(f"{where} is {value}, expected 0 to {top}")
        return value
    if param.kind == "name" and not _NAME_RE.fullmatch(raw):
        raise ConfigError(
            f"{where} is {raw!r}, expected 1-32 of a-z 0-9 _ - starting with a letter"
        )
    if param.kind == "size" and not _SIZE_RE.fullmatch(raw):
        raise ConfigError(f"{where} is {raw!r}, expected a size such as 512M or 2G")
    if param.kind == "dns":
        names = raw.split(",")
        if not all(_DNS_RE.fullmatch(n) and len(n) <= 253 for n in names):
            raise ConfigError(f"{where} is {raw!r}, expected host names separated by commas")
    if param.kind == "yesno" and raw not in ("yes", "no"):
        raise ConfigError(f"{where} is {raw!r}, expected yes or no")
    if param.kind == "text" and not _TEXT_RE.fullmatch(raw):
        raise ConfigError(
            f"{where} is {raw!r}, expected 1-256 of A-Z a-z 0-9 _ . / : @ + - (no spaces)"
        )
    return raw


def resolve_params(recipe: Recipe, settings: Sequence[str]) -> dict[str, ParamValue]:
    """The recipe's defaults overridden by ``NAME=VALUE`` settings, each checked.

    Raises:
        ConfigError: a setting without ``=``, an unknown or repeated name, or a bad value.
    """
    values = recipe.defaults()
    by_name = {p.name: p for p in recipe.params}
    seen: set[str] = set()
    for item in settings:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        if name not in by_name:
            known = ", ".join(sorted(by_name))
            raise ConfigError(f"{recipe.name} has no parameter {name!r} (it has: {known})")
        if name in seen:
            raise ConfigError(f"parameter {name} is set more than once")
        seen.add(name)
        values[name] = check_value(by_name[name], raw)
    ports = [(p.name, values[p.name]) for p in recipe.params if p.kind == "port"]
    taken: dict[ParamValue, str] = {}
    for pname, port in ports:
        if port in taken:
            raise ConfigError(f"parameters {taken[port]} and {pname} are both {port}")
        taken[port] = pname
    return values


def toml_str(value: str) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these checked values)."""
    return json.dumps(value, ensure_ascii=True)


def toml_list(values: Sequence[str]) -> str:
    """A one-line TOML array of strings."""
    return "[" + ", ".join(toml_str(v) for v in values) + "]"
