"""The pod spec (``sealpod.toml``, docs/protocol.md, Artifacts and identities) as a strict, frozen
pydantic model.

Pure: this module validates an already-parsed TOML document (:mod:`sealpod.spec.load` reads the
file). Unknown keys and wrong types are errors — a typo fails closed — and every error names its
key path and what was expected there, e.g.
``process.env.DB_PASSWORD: expected a string or {secret = NAME}``.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from sealpod.errors import SpecError

MAX_PATH_LENGTH = 4096
MAX_LIST_ITEMS = 4096
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_USER_RE = re.compile(r"[0-9]{1,10}(:[0-9]{1,10})?|[a-z_][a-z0-9_-]{0,31}")
_MEMORY_RE = re.compile(r"([1-9][0-9]{0,5})([KMGT])")
_MEMORY_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_URL_RE = re.compile(r"https?://[^\s/?#@]+(/[^\s]*)?")
_HEX256_RE = re.compile(r"[0-9a-fA-F]{64}")

TeeBackendName = Literal["sgx", "snp", "tdx", "sim"]


# --- value checks ---------------------------------------------------------------------------
def _abs_path(value: str) -> str:
    """An absolute, normalized POSIX path inside the container (no ``.``/``..``, no ``//``)."""
    if "\x00" in value or len(value) > MAX_PATH_LENGTH:
        raise PydanticCustomError("path", "expected a path without NUL of at most 4096 bytes")
    if not value.startswith("/") or value.startswith("//"):
        raise PydanticCustomError("path", f"expected an absolute path, got {value!r}")
    # The same test as posixpath.normpath(value) == value, without building a new string for
    # every one of the tens of thousands of paths in a manifest.
    padded = value + "/"
    if value != "/" and (
        value.endswith("/") or "//" in value or "/./" in padded or "/../" in padded
    ):
        norm = posixpath.normpath(value)
        raise PydanticCustomError("path", f"path {value!r} is not normalized, expected {norm!r}")
    return value


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "name",
            f"name {value!r} is invalid, expected 1-128 characters of A-Z a-z 0-9 _ . -"
            " starting with a letter or digit",
        )
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("nul", "expected a string without NUL characters")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "env_name", f"variable name {value!r} is invalid, expected [A-Za-z_][A-Za-z0-9_]*"
        )
    return value


AbsPath = Annotated[str, AfterValidator(_abs_path)]
Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_no_nul)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class SecretRef(_Strict):
    """An environment value filled at run time from the KMS secret named ``secret``."""

    secret: Name


def _env_value(value: object) -> object:
    """Accept a literal string or ``{secret = NAME}``; anything else gets one clear message."""
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, SecretRef):
        return value
    if isinstance(value, Mapping) and set(value) == {"secret"} and isinstance(value["secret"], str):
        return SecretRef(secret=_name(value["secret"]))
    raise PydanticCustomError("env_value", "expected a string or {secret = NAME}")


EnvValue = Annotated[str | SecretRef, BeforeValidator(_env_value)]


# --- sections -------------------------------------------------------------------------------
class ImageSpec(_Strict):
    """``[image]``: a rootfs directory, a ``docker save`` archive or an OCI image layout
    (directory or tar). A relative ``source`` is relative to the spec file."""

    source: Annotated[Text, Field(min_length=1)]


class ProcessSpec(_Strict):
    """``[process]``: what runs, as whom, where, with which environment."""

    entrypoint: AbsPath
    args: Annotated[list[Text], Field(max_length=MAX_LIST_ITEMS)] = []
    workdir: AbsPath = "/"
    user: str = "0:0"
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_LIST_ITEMS)] = {}

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        if not _USER_RE.fullmatch(value):
            raise PydanticCustomError(
                "user", f"user {value!r} is invalid, expected UID[:GID] or a user name"
            )
        return value


SecretField = Literal["key", "cert", "ca"]


class FileSpec(_Strict):
    """``[[files]]``: a file provisioned at run time from a secret, in memory, never on disk.

    ``field`` picks one member of a JSON secret (a generated ``tls-cert`` holds ``key``,
    ``cert`` and ``ca`` PEMs); without it the file holds the whole value."""

    path: AbsPath
    secret: Name
    mode: Annotated[int, Field(ge=0, le=0o777)] = 0o400
    field: SecretField | None = None


class TrustedSpec(_Strict):
    """``[trusted]``: paths whose files are hashed into the manifest (read-only at run time)."""

    paths: Annotated[list[AbsPath], Field(min_length=1, max_length=MAX_LIST_ITEMS)] = ["/"]


#: A volume's key is the KMS secret ``volume.<name>``, whose name may be 128 characters long.
MAX_VOLUME_NAME = 128 - len("volume.")


#: The longest rollback window a spec may choose (ms).
MAX_ROLLBACK_WINDOW_MS = 60_000


class VolumeSpec(_Strict):
    """``[[volumes]]``: the encrypted volume ``name`` mounted at ``path``.

    ``rollback_window_ms`` (default 0) lets the volume's commits return before the KMS records
    its counter, which the KMS then catches up within that window: a host that restores an
    older copy can undo at most the last window of synced writes undetected. Left out of the
    manifest when 0, so that manifests without it keep their measurement.
    """

    path: AbsPath
    name: Annotated[Name, Field(max_length=MAX_VOLUME_NAME)]
    rollback_window_ms: int = Field(
        default=0, ge=0, le=MAX_ROLLBACK_WINDOW_MS, exclude_if=lambda value: value == 0
    )


class TeeSpec(_Strict):
    """``[tee]``: the backends allowed to run the pod, and its enclave / VM resources."""

    backends: Annotated[list[TeeBackendName], Field(min_length=1, max_length=4)] = [
        "sgx",
        "snp",
        "tdx",
    ]
    memory: str = "512M"
    threads: Annotated[int, Field(ge=1, le=4096)] = 4
    debug: bool = False

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        if not _MEMORY_RE.fullmatch(value):
            raise PydanticCustomError(
                "memory", f"size {value!r} is invalid, expected a size such as '512M' or '2G'"
            )
        return value

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("backends", "a backend is listed more than once")
        return value

    @property
    def memory_bytes(self) -> int:
        """``memory`` in bytes (K, M, G and T are powers of 1024)."""
        match = _MEMORY_RE.fullmatch(self.memory)
        if match is None:  # the field validator refuses this; model_construct() could skip it
            raise SpecError(f"tee.memory is {self.memory!r}, expected a size such as 512M or 2G")
        return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


class IdentitySpec(_Strict):
    """``[identity]``: product id and security version, 16 bits each like SGX's ISVPRODID and
    ISVSVN. A signed upgrade raises ``svn``; policies pin signer + product id + minimum svn."""

    product_id: Annotated[int, Field(ge=0, le=0xFFFF)]
    svn: Annotated[int, Field(ge=0, le=0xFFFF)]


_HOST_PORT_RE = re.compile(
    r"(?P<host>[0-9A-Za-z.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})"
)


def _host_port(value: str) -> str:
    match = _HOST_PORT_RE.fullmatch(value)
    if match is None or not 1 <= int(match.group("port")) <= 65535:
        raise PydanticCustomError(
            "host_port", f"expected HOST:PORT with a port from 1 to 65535, got {value!r}"
        )
    return value


class RuntimeSpec(_Strict):
    """``[runtime]``: how ``sealpod run`` lays out the sandbox beyond the measured image.

    ``tmpfs`` are writable in-memory directories besides ``/tmp`` and ``/run`` (the measured
    root is read-only); ``ready_tcp`` is a ``HOST:PORT`` that answers once the service is up;
    ``insecure__use_cmdline_argv`` lets the host append arguments (``sealpod run B -- ARGS``),
    which are not measured — named like Gramine's ``loader.insecure__use_cmdline_argv``;
    ``ratls`` is a directory (in a tmpfs) where ``sealpod run`` puts an RA-TLS key
    (``key.pem``) and certificate (``cert.pem``) it issues at start, with evidence binding the
    key (docs/ratls.md)."""

    tmpfs: Annotated[list[AbsPath], Field(max_length=64)] = []
    ready_tcp: Annotated[str, AfterValidator(_host_port)] | None = None
    insecure__use_cmdline_argv: bool = False
    ratls: AbsPath | None = None


def _url(value: str) -> str:
    if not _URL_RE.fullmatch(value):
        raise PydanticCustomError("url", f"expected an http:// or https:// URL, got {value!r}")
    return value


def _fingerprint(value: str) -> str:
    if not _HEX256_RE.fullmatch(value):
        raise PydanticCustomError("hex", "expected 64 hex digits (a SHA-256 fingerprint)")
    return value.lower()


class KmsSpec(_Strict):
    """``[kms]``: the key broker that provisions this pod, and its pinned identity."""

    url: Annotated[str, AfterValidator(_url)]
    #: SHA-256 fingerprint (hex) of the KMS's public key; ``None`` means not pinned.
    identity: Annotated[str, AfterValidator(_fingerprint)] | None = None


def is_under(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or lies inside it (both normalized absolute paths)."""
    return path == root or root == "/" or path.startswith(root + "/")


class PodSpec(_Strict):
    """A whole ``sealpod.toml``."""

    image: ImageSpec
    process: ProcessSpec
    identity: IdentitySpec
    files: Annotated[list[FileSpec], Field(max_length=MAX_LIST_ITEMS)] = []
    trusted: TrustedSpec = TrustedSpec()
    volumes: Annotated[list[VolumeSpec], Field(max_length=MAX_LIST_ITEMS)] = []
    tee: TeeSpec = TeeSpec()
    kms: KmsSpec | None = None
    runtime: RuntimeSpec | None = None

    @model_validator(mode="after")
    def _cross_check(self) -> PodSpec:
        problems = cross_check_problems(self)
        if problems:
            raise PydanticCustomError("spec", "\n  ".join(problems))
        return self


def cross_check_problems(spec: PodSpec) -> list[str]:
    """Conflicts between sections: duplicates, nested volumes, secret files inside volumes."""
    problems: list[str] = []
    _duplicates("files", "path", [f.path for f in spec.files], problems)
    _duplicates("volumes", "path", [v.path for v in spec.volumes], problems)
    _duplicates("volumes", "name", [v.name for v in spec.volumes], problems)
    _duplicates("trusted", "paths", spec.trusted.paths, problems)
    for i, vol in enumerate(spec.volumes):
        if vol.path == "/":
            problems.append(f"volumes[{i}].path: a volume cannot be mounted at /")
            continue
        for other in spec.volumes:
            if other.path != vol.path and is_under(vol.path, other.path):
                problems.append(f"volumes[{i}].path: {vol.path} is inside volume {other.path}")
    for i, file in enumerate(spec.files):
        for vol in spec.volumes:
            if vol.path != "/" and is_under(file.path, vol.path):
                problems.append(f"files[{i}].path: {file.path} is inside volume {vol.path}")
    tmpfs = spec.runtime.tmpfs if spec.runtime is not None else []
    _duplicates("runtime", "tmpfs", tmpfs, problems)
    for i, path in enumerate(tmpfs):
        if path == "/":
            problems.append(f"runtime.tmpfs[{i}]: / cannot be a tmpfs (the root is the image)")
        for vol in spec.volumes:
            if is_under(path, vol.path) or is_under(vol.path, path):
                problems.append(f"runtime.tmpfs[{i}]: {path} overlaps volume {vol.path}")
    return problems


def _duplicates(section: str, key: str, values: Sequence[str], problems: list[str]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            listed = key in ("paths", "tmpfs")
            where = f"{section}.{key}[{i}]" if listed else f"{section}[{i}].{key}"
            problems.append(f"{where}: {value!r} appears more than once")
        seen.add(value)


def parse_spec(data: Mapping[str, object], *, source: str = "sealpod.toml") -> PodSpec:
    """Validate a parsed TOML document as a :class:`PodSpec`.

    Raises:
        SpecError: naming every invalid key path and what was expected there.
    """
    try:
        return PodSpec.model_validate(dict(data))
    except ValidationError as exc:
        lines = [describe_error(e, PodSpec) for e in exc.errors(include_url=False)]
        raise SpecError(f"{source} is invalid:\n  " + "\n  ".join(lines)) from exc


# --- error wording --------------------------------------------------------------------------
_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
               list: "an array", dict: "a table"}  # fmt: skip
_EXPECTED = {
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "list_type": "expected an array",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def describe_error(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One line ``key.path: what was expected`` for one pydantic error of ``model``."""
    loc = error["loc"]
    path = format_loc(loc)
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        text = "required key is missing"
    elif kind == "extra_forbidden":
        text = "unknown key"
        allowed = allowed_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if allowed else []
        if close:
            text += f" (did you mean {close[0]!r}?)"
        elif allowed:
            text += f" (expected one of: {', '.join(allowed)})"
    elif kind in _EXPECTED:
        text = f"{_EXPECTED[kind]}, got {_describe_value(value)}"
    elif kind == "literal_error":
        text = f"expected one of {ctx.get('expected')}, got {_describe_value(value)}"
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = ctx.get("ge", ctx.get("le"))
        op = ">=" if kind == "greater_than_equal" else "<="
        octal = bool(loc) and loc[-1] == "mode"
        text = f"expected a value {op} {_number(bound, octal)}, got {_number(value, octal)}"
    elif kind == "too_short":
        text = f"expected at least {ctx.get('min_length')} item(s)"
    elif kind == "too_long":
        unit = "characters" if isinstance(value, str) else "items"
        text = f"expected at most {ctx.get('max_length')} {unit}"
    else:
        text = error["msg"]
    return f"{path}: {text}" if path else text


def format_loc(loc: Sequence[int | str]) -> str:
    """``('files', 0, 'mode')`` -> ``files[0].mode``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (key)"
        else:
            out += f".{part}" if out else str(part)
    return out


def _number(value: object, octal: bool) -> str:
    return oct(value) if octal and isinstance(value, int) else repr(value)


def _describe_value(value: object) -> str:
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, bool | int | float):
        return f"{kind} ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{kind} ({shown!r})"
    return kind


def allowed_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys the model accepts at ``loc`` (empty when ``loc`` is not a table of fields)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is list and isinstance(part, int):
            current = get_args(current)[0]
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` so the walk reaches the model or container type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
