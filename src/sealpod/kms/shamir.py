"""Shamir secret sharing over GF(2^8), byte by byte, for the KMS master key.

A secret of ``n`` bytes is split into ``shares`` shares, any ``threshold`` of which recover it
and fewer of which reveal nothing (each byte is the constant term of an independent random
polynomial of degree ``threshold - 1``). The field is GF(2^8) with the AES polynomial
x^8 + x^4 + x^3 + x + 1 (0x11b). This is not a cipher; it is sixty lines of field arithmetic,
kept free of secret-dependent table look-ups and branches, and checked by property tests.

Shares travel as text: ``sealpod-share-v1-<index>-<hex>-<check>`` where ``check`` is the first
two bytes of SHA-256 over the index and the share bytes — it catches a mistyped share, it is not
an authenticator (the KMS checks the recovered key against its stored key-check value).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sealpod.errors import ConfigError

MAX_SHARES = 255
_PREFIX = "sealpod-share-v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """One share: the x coordinate ``index`` (1..255) and the y bytes (secret-sized)."""

    index: int
    value: bytes

    def __repr__(self) -> str:  # a share is key material
        return f"Share(index={self.index}, value=<{len(self.value)} bytes>)"

    def to_text(self) -> str:
        """``sealpod-share-v1-<index>-<hex>-<check>``."""
        return f"{_PREFIX}-{self.index}-{self.value.hex()}-{_check(self.index, self.value)}"

    @classmethod
    def from_text(cls, text: str) -> Share:
        """Parse :meth:`to_text` output (surrounding whitespace ignored).

        Raises:
            ConfigError: not a share, bad index, bad hex or a wrong check value (a typo).
        """
        parts = text.strip().split("-")
        if len(parts) != 6 or "-".join(parts[:3]) != _PREFIX:
            raise ConfigError(f"share does not start with {_PREFIX!r} or has the wrong shape")
        try:
            index = int(parts[3], 10)
            value = bytes.fromhex(parts[4])
        except ValueError as exc:
            raise ConfigError("share index or body is not valid decimal/hex") from exc
        if not 1 <= index <= MAX_SHARES:
            raise ConfigError(f"share index is {index}, expected 1..{MAX_SHARES}")
        if not value:
            raise ConfigError("share body is empty")
        if parts[5] != _check(index, value):
            raise ConfigError(f"share {index} has a wrong check value (mistyped?)")
        return cls(index=index, value=value)


def _check(index: int, value: bytes) -> str:
    return hashlib.sha256(bytes([index]) + value).digest()[:2].hex()


def _mul(a: int, b: int) -> int:
    """GF(2^8) product, constant-time in the sense of no data-dependent branches or look-ups."""
    product = 0
    for _ in range(8):
        product ^= -(b & 1) & a
        high = -((a >> 7) & 1)
        a = ((a << 1) ^ (high & 0x11B)) & 0xFF
        b >>= 1
    return product


def _inv(a: int) -> int:
    """a^254 = a^-1 in GF(2^8) (a != 0)."""
    result = 1
    base = a
    exponent = 254
    for _ in range(8):
        if exponent & 1:  # the exponent is public, not secret
            result = _mul(result, base)
        base = _mul(base, base)
        exponent >>= 1
    return result


def check_parameters(*, shares: int, threshold: int) -> None:
    """Raises: ConfigError unless ``2 <= threshold <= shares <= 255`` (a threshold of 1 would
    make every share the secret itself)."""
    if not 2 <= threshold <= shares <= MAX_SHARES:
        raise ConfigError(
            f"shares={shares}, threshold={threshold}; expected 2 <= threshold <= shares <= 255"
        )


def split(secret: bytes, *, shares: int, threshold: int) -> list[Share]:
    """Split ``secret`` into ``shares`` shares of which any ``threshold`` recover it.

    Raises:
        ConfigError: empty secret, or not ``2 <= threshold <= shares <= 255``
        (a threshold of 1 would make every share the secret itself).
    """
    if not secret:
        raise ConfigError("secret to split is empty")
    check_parameters(shares=shares, threshold=threshold)
    # coefficients[i][j]: coefficient of x^(j+1) of the polynomial for secret byte i.
    coefficients = [secrets.token_bytes(threshold - 1) for _ in secret]
    out: list[Share] = []
    for x in range(1, shares + 1):
        ys = bytearray(len(secret))
        for i, constant in enumerate(secret):
            # Horner's rule from the highest coefficient down to the constant term.
            y = 0
            for c in reversed(coefficients[i]):
                y = _mul(y, x) ^ c
            ys[i] = _mul(y, x) ^ constant
        out.append(Share(index=x, value=bytes(ys)))
    return out


def combine(parts: list[Share]) -> bytes:
    """Recover the secret from ``threshold`` (or more) distinct shares by Lagrange at x = 0.

    With fewer shares than the threshold the result is a wrong value, not an error — the
    caller checks it (the KMS compares it with its key-check value).

    Raises:
        ConfigError: no shares, a duplicate index, or shares of different lengths.
    """
    if not parts:
        raise ConfigError("no shares given")
    indexes = [p.index for p in parts]
    if len(set(indexes)) != len(indexes):
        raise ConfigError(f"share indexes repeat: {sorted(indexes)}")
    size = len(parts[0].value)
    if any(len(p.value) != size for p in parts):
        raise ConfigError("shares have different lengths")
    # Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
    basis: list[int] = []
    for j, pj in enumerate(parts):
        num, den = 1, 1
        for m, pm in enumerate(parts):
            if m != j:
                num = _mul(num, pm.index)
                den = _mul(den, pm.index ^ pj.index)
        basis.append(_mul(num, _inv(den)))
    secret = bytearray(size)
    for i in range(size):
        acc = 0
        for lj, p in zip(basis, parts, strict=True):
            acc ^= _mul(lj, p.value[i])
        secret[i] = acc
    return bytes(secret)
