"""Canonical JSON: one byte string for one JSON value, so that hashes of it are stable.

The rules (a strict subset of RFC 8785 that needs no number formatting of its own):

* objects have string keys, sorted by Unicode code point, each key once;
* no whitespace between tokens; strings are UTF-8 with only the escapes JSON requires
  (``ensure_ascii=False``: "é" is written as two UTF-8 bytes, not ``\\u00e9``);
* numbers are integers in the I-JSON range ``±(2**53 - 1)``; floats, NaN and infinities are
  refused, because their text form differs between JSON implementations;
* ``true``, ``false``, ``null``, arrays, objects and strings otherwise as in RFC 8259.

The workload measurement is SHA-256 over the canonical bytes of the bundle manifest
(docs/protocol.md, Artifacts and identities),
so any two builds of the same inputs must produce these bytes exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

#: Largest integer magnitude every JSON implementation represents exactly (I-JSON, RFC 7493).
MAX_SAFE_INTEGER = 2**53 - 1
#: Deeper nesting than this is refused, so hostile values cannot exhaust the stack.
MAX_DEPTH = 64

JsonValue = None | bool | int | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]


def canonical_json(obj: object) -> bytes:
    """Serialize ``obj`` (built of dict, list/tuple, str, int, bool, None) canonically.

    Raises:
        TypeError: a value that is not JSON-like (a float, bytes, a set, a non-string key ...).
        ValueError: an integer outside ``±(2**53 - 1)``, a string that is not valid Unicode
            (a lone surrogate), or nesting deeper than ``MAX_DEPTH``.
    """
    if not _plain(obj):
        _locate(obj, "$", 0)  # raises, naming where
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        _locate(obj, "$", 0)
        raise  # unreachable: _locate finds the lone surrogate


def _plain(value: object) -> bool:
    """Fast check (no locations) over exact builtin types; ``False`` sends the caller to the
    slow walk, which either accepts (subclasses such as ``StrEnum``) or names the problem."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # type: ignore[operator]
                continue
            return False
        if depth >= MAX_DEPTH:
            return False
        if kind is dict:
            for key, child in item.items():  # type: ignore[attr-defined]
                if type(key) is not str:
                    return False
                stack.append((child, depth + 1))
            continue
        if kind is list or kind is tuple:
            stack.extend((child, depth + 1) for child in item)  # type: ignore[attr-defined]
            continue
        return False
    return True


def _locate(value: object, where: str, depth: int) -> None:
    """Walk ``value`` and refuse anything canonical JSON cannot hold, naming its location."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{where}: integer {value} is outside ±(2**53 - 1)")
        return
    if isinstance(value, str):
        _check_text(value, where)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where}: object key {key!r} is {type(key).__name__}, expected str"
                )
            _check_text(key, where)
            _locate(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _locate(item, f"{where}[{index}]", depth + 1)
        return
    raise TypeError(f"{where}: {type(value).__name__} is not a canonical JSON value")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: string is not valid Unicode ({exc.reason})") from exc
