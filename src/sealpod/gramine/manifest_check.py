"""A checker of Gramine manifests: key names, value types and the documented constraints.

Written from Gramine's manifest syntax documentation (Documentation/manifest-syntax.rst, Gramine
1.6 and later) because Gramine itself cannot run here: a manifest that passes is one whose keys
Gramine knows, with the types it expects. :func:`check_manifest` returns every problem (``key:
what is wrong``), not only the first; :func:`require_valid` raises them together.

With ``production=True`` (what ``sealpod gramine manifest`` uses) anything the documentation
calls insecure is refused too: ``insecure__*`` / ``debug__*`` options, ``fs.insecure__keys``,
``sgx.file_check_policy = "allow_all_but_log"`` and ``sgx.allowed_files``.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from sealpod.errors import SpecError

Check = Callable[[str, object, list[str]], None]

_SIZE_RE = re.compile(r"[1-9][0-9]*[KMG]?")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MOUNT_TYPES = ("chroot", "encrypted", "tmpfs", "untrusted_shm")
LOG_LEVELS = ("none", "error", "warning", "debug", "trace", "all")


def _type(name: str, *types: type) -> Check:
    def check(key: str, value: object, problems: list[str]) -> None:
        # bool is an int in Python; TOML keeps them apart, so must we.
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            problems.append(f"{key}: expected {name}, got {type(value).__name__}")

    return check


_str = _type("a string", str)
_bool = _type("a boolean", bool)


def _int(low: int, high: int) -> Check:
    def check(key: str, value: object, problems: list[str]) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{key}: expected an integer, got {type(value).__name__}")
        elif not low <= value <= high:
            problems.append(f"{key}: expected {low}..{high}, got {value}")

    return check


def _enum(*allowed: str) -> Check:
    def check(key: str, value: object, problems: list[str]) -> None:
        if value not in allowed:
            problems.append(f"{key}: expected one of {', '.join(allowed)}, got {value!r}")

    return check


def size_bytes(text: str) -> int | None:
    """``"512M"`` -> bytes (Gramine's K/M/G suffixes are powers of 1024); None if malformed."""
    if not _SIZE_RE.fullmatch(text):
        return None
    unit = text[-1] if text[-1] in "KMG" else ""
    return int(text[: len(text) - len(unit)]) * _UNITS[unit]


def _size(*, power_of_two: bool = False) -> Check:
    def check(key: str, value: object, problems: list[str]) -> None:
        n = size_bytes(value) if isinstance(value, str) else None
        if n is None:
            problems.append(f'{key}: expected a size such as "512M", got {value!r}')
        elif power_of_two and n & (n - 1):
            problems.append(f"{key}: {value} is not a power of two (SGX enclave sizes must be)")

    return check


def _str_list(key: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected an array of strings")


def _uri(key: str, value: object, problems: list[str], *, prefixes: tuple[str, ...]) -> None:
    if not isinstance(value, str) or not value.startswith(prefixes):
        problems.append(
            f"{key}: expected a URI starting with {' or '.join(prefixes)}, got {value!r}"
        )


def _mounts(key: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, list):
        problems.append(f"{key}: expected an array of tables")
        return
    allowed = {"type", "path", "uri", "key_name", "enable_recovery"}
    for i, mount in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(mount, dict):
            problems.append(f"{where}: expected a table")
            continue
        for extra in sorted(set(mount) - allowed):
            problems.append(f"{where}.{extra}: unknown key")
        kind = mount.get("type", "chroot")
        _enum(*MOUNT_TYPES)(f"{where}.type", kind, problems)
        path = mount.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            problems.append(f"{where}.path: expected an absolute path, got {path!r}")
        if kind != "tmpfs" or "uri" in mount:
            prefixes = ("dev:",) if kind == "untrusted_shm" else ("file:", "dev:")
            _uri(f"{where}.uri", mount.get("uri"), problems, prefixes=prefixes)
        if "key_name" in mount:
            if kind != "encrypted":
                problems.append(f"{where}.key_name: only encrypted mounts take a key")
            _str(f"{where}.key_name", mount["key_name"], problems)
        if "enable_recovery" in mount:
            _bool(f"{where}.enable_recovery", mount["enable_recovery"], problems)


def _trusted_files(key: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, list):
        problems.append(f"{key}: expected an array")
        return
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(entry, str):
            _uri(where, entry, problems, prefixes=("file:",))
        elif isinstance(entry, dict):
            for extra in sorted(set(entry) - {"uri", "sha256"}):
                problems.append(f"{where}.{extra}: unknown key")
            _uri(f"{where}.uri", entry.get("uri"), problems, prefixes=("file:",))
            digest = entry.get("sha256")
            if digest is not None and not (isinstance(digest, str) and _HEX64_RE.fullmatch(digest)):
                problems.append(f"{where}.sha256: expected 64 lower-case hex digits")
        else:
            problems.append(f"{where}: expected a URI string or {{uri, sha256}}")


def _env(key: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table of variables")
        return
    for name, item in value.items():
        where = f"{key}.{name}"
        if isinstance(item, str):
            continue
        if isinstance(item, dict) and set(item) == {"value"} and isinstance(item["value"], str):
            continue
        if isinstance(item, dict) and item == {"passthrough": True}:
            continue
        problems.append(
            f"{where}: expected a string, {{value = STRING}} or {{passthrough = true}} "
            "(Gramine refuses passthrough = false and value together with passthrough)"
        )


# Every key the checker knows, by its dotted path (Gramine >= 1.6 manifest syntax).
SCHEMA: dict[str, Check] = {
    "loader.entrypoint.uri": lambda k, v, p: _uri(k, v, p, prefixes=("file:",)),
    "loader.entrypoint.sha256": _str,
    "loader.log_level": _enum(*LOG_LEVELS),
    "loader.log_file": _str,
    "loader.argv": _str_list,
    "loader.argv_src_file": lambda k, v, p: _uri(k, v, p, prefixes=("file:",)),
    "loader.insecure__use_cmdline_argv": _bool,
    "loader.insecure__use_host_env": _bool,
    "loader.insecure__disable_aslr": _bool,
    "loader.env": _env,
    "loader.env_src_file": lambda k, v, p: _uri(k, v, p, prefixes=("file:",)),
    "loader.uid": _int(0, 2**32 - 1),
    "loader.gid": _int(0, 2**32 - 1),
    "libos.entrypoint": _str,
    "libos.check_invalid_pointers": _bool,
    "sys.enable_extra_runtime_domain_names_conf": _bool,
    "sys.fds.limit": _int(1, 2**31 - 1),
    "sys.stack.size": _size(),
    "sys.brk.max_size": _size(),
    "sys.insecure__allow_eventfd": _bool,
    "sys.enable_sigterm_injection": _bool,
    "sys.disallow_subprocesses": _bool,
    "sys.experimental__enable_flock": _bool,
    "fs.root.type": _enum("chroot"),
    "fs.root.uri": lambda k, v, p: _uri(k, v, p, prefixes=("file:",)),
    "fs.mounts": _mounts,
    "fs.start_dir": _str,
    "sgx.debug": _bool,
    "sgx.edmm_enable": _bool,
    "sgx.enclave_size": _size(power_of_two=True),
    "sgx.max_threads": _int(1, 65535),
    "sgx.insecure__rpc_thread_num": _int(0, 65535),
    "sgx.use_exinfo": _bool,
    "sgx.isvprodid": _int(0, 0xFFFF),
    "sgx.isvsvn": _int(0, 0xFFFF),
    "sgx.trusted_files": _trusted_files,
    "sgx.allowed_files": _str_list,
    "sgx.file_check_policy": _enum("strict", "allow_all_but_log"),
    "sgx.remote_attestation": _enum("none", "dcap"),
    "sgx.preheat_enclave": _bool,
    "sgx.enable_stats": _bool,
}
# Tables whose keys are user-defined (their values are checked by the table's own check).
_OPAQUE = (
    "loader.env", "fs.insecure__keys", "sys.ioctl_structs", "sgx.cpu_features", "sgx.seal_key",
    "sgx.profile", "sys.allowed_ioctls", "sys.debug__mock_syscalls",
)  # fmt: skip
_INSECURE_VALUES = {"sgx.file_check_policy": "allow_all_but_log"}


def _flatten(table: Mapping[str, object], prefix: str, out: dict[str, object]) -> None:
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and path not in _OPAQUE and path not in SCHEMA:
            _flatten(value, path, out)
        else:
            out[path] = value


def check_manifest(doc: Mapping[str, object], *, production: bool = True) -> list[str]:
    """Every problem with a parsed manifest (empty: Gramine accepts these keys and types).

    Raises:
        Nothing: problems are returned.
    """
    flat: dict[str, object] = {}
    _flatten(doc, "", flat)
    problems: list[str] = []
    for key, value in flat.items():
        check = SCHEMA.get(key)
        if check is None and not key.startswith(_OPAQUE):
            problems.append(f"{key}: unknown manifest key (Gramine >= 1.6 syntax)")
            continue
        if check is not None:
            check(key, value, problems)
        if production and ("insecure__" in key or "debug__" in key):
            problems.append(f"{key}: insecure option, refused in a production manifest")
        if production and _INSECURE_VALUES.get(key) == value:
            problems.append(f"{key}: {value!r} is insecure, refused in a production manifest")
        if production and key == "sgx.allowed_files":
            problems.append(
                f"{key}: allowed files are unprotected, refused in a production manifest"
            )
    if "libos.entrypoint" not in flat:
        problems.append("libos.entrypoint: required key is missing")
    argv_sources = [k for k in ("loader.argv", "loader.argv_src_file") if k in flat]
    if len(argv_sources) > 1:
        problems.append("loader.argv: give either loader.argv or loader.argv_src_file, not both")
    return problems


def require_valid(doc: Mapping[str, object], *, production: bool = True, source: str) -> None:
    """Raise with every problem when :func:`check_manifest` finds any.

    Raises:
        SpecError: listing each ``key: problem``.
    """
    problems = check_manifest(doc, production=production)
    if problems:
        raise SpecError(f"{source} is not a valid Gramine manifest:\n  " + "\n  ".join(problems))
