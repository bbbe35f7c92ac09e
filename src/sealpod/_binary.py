"""A named-field reader and writer for little-endian binary formats.

Every read names its field, so a short or malformed input raises an error that says which field
at which offset, e.g. ``MalformedEvidence("quote: field 'report_data' at offset 368 needs 64
bytes, 12 left")``. The error class is a parameter so that evidence codecs and the volume format
both use this one reader with their own error family.
"""

from __future__ import annotations

from typing import NoReturn

from sealpod.errors import MalformedEvidence, SealpodError


class Reader:
    """Sequential reader over a ``memoryview``; never copies until a field is taken."""

    __slots__ = ("_error", "_name", "_offset", "_view")

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        name: str = "input",
        error: type[SealpodError] = MalformedEvidence,
    ) -> None:
        self._view = memoryview(data).cast("B")
        self._offset = 0
        self._name = name
        self._error = error

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def remaining(self) -> int:
        return len(self._view) - self._offset

    def fail(self, message: str, field: str | None = None) -> NoReturn:
        """Raise the configured error, naming the field and the current offset."""
        text = f"{self._name}: {message}"
        if issubclass(self._error, MalformedEvidence):
            raise self._error(text, field=field, offset=self._offset)
        raise self._error(text)

    def take(self, size: int, field: str) -> bytes:
        """Return the next ``size`` bytes as ``bytes``."""
        if size < 0:
            self.fail(f"field {field!r} has negative size {size}", field)
        if size > self.remaining:
            self.fail(
                f"field {field!r} at offset {self._offset} needs {size} bytes, "
                f"{self.remaining} left",
                field,
            )
        out = bytes(self._view[self._offset : self._offset + size])
        self._offset += size
        return out

    def view(self, size: int, field: str) -> memoryview:
        """Like :meth:`take` but returns a zero-copy view."""
        if size < 0 or size > self.remaining:
            self.fail(
                f"field {field!r} at offset {self._offset} needs {size} bytes, "
                f"{self.remaining} left",
                field,
            )
        out = self._view[self._offset : self._offset + size]
        self._offset += size
        return out

    def _int(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    def u8(self, field: str) -> int:
        return self._int(1, field)

    def u16(self, field: str) -> int:
        return self._int(2, field)

    def u32(self, field: str) -> int:
        return self._int(4, field)

    def u64(self, field: str) -> int:
        return self._int(8, field)

    def zeros(self, size: int, field: str) -> None:
        """Consume a reserved range that the spec says must be zero."""
        start = self._offset
        chunk = self.take(size, field)
        if any(chunk):
            first = next(i for i, b in enumerate(chunk) if b)
            self._offset = start + first
            self.fail(
                f"reserved field {field!r} has a non-zero byte at offset {start + first}", field
            )

    def end(self, *, allow_zero_padding: bool = False) -> None:
        """Require that all input was consumed (or, if allowed, that only zero bytes remain)."""
        if self.remaining == 0:
            return
        if allow_zero_padding:
            self.zeros(self.remaining, "trailing padding")
            return
        self.fail(f"{self.remaining} unexpected trailing bytes at offset {self._offset}")


class Writer:
    """Little-endian writer mirroring :class:`Reader`, for ``to_bytes()``."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes, size: int | None = None) -> Writer:
        if size is not None and len(data) != size:
            raise ValueError(f"field must be {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))
        return self

    def u8(self, v: int) -> Writer:
        return self.raw(v.to_bytes(1, "little"))

    def u16(self, v: int) -> Writer:
        return self.raw(v.to_bytes(2, "little"))

    def u32(self, v: int) -> Writer:
        return self.raw(v.to_bytes(4, "little"))

    def u64(self, v: int) -> Writer:
        return self.raw(v.to_bytes(8, "little"))

    def zeros(self, size: int) -> Writer:
        return self.raw(bytes(size))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)
