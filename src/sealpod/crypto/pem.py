"""PEM armour: the one place sealpod turns PEM text into DER bytes and back (pure).

Why not ``cryptography.x509.load_pem_x509_certificates`` (measured with cryptography 50):

* it parses every certificate while unarmouring it, and on a serial number that is zero or
  negative it emits a ``CryptographyDeprecationWarning`` (an exception in a future release).
  AMD's VCEKs have serial 0, and a hostile chain can carry one, so sealpod must see the DER
  *before* ``cryptography`` does (:mod:`sealpod.verify.x509util` refuses such serials,
  :mod:`sealpod.verify.amd` re-encodes them); a process-wide warning filter is not thread-safe;
* it refuses certificates that sealpod reads with asn1crypto instead (Gramine's RA-TLS
  certificates spell ``ecdsa-with-SHA256`` with a NULL parameter);
* it skips any text around and between blocks, while a DCAP quote's PCK chain must be PEM
  blocks and whitespace only, in canonical base64, so that every byte of a quote matters.

asn1crypto's ``pem.unarmor`` decodes base64 without validation (non-alphabet bytes are dropped)
and grows its buffer quadratically, and the stdlib's ``ssl.PEM_cert_to_DER_cert`` reads one
block only and does not validate either. So the armour is split here, in one linear scan, with
the stdlib's strict base64 decoder; writing PEM is the stdlib's ``ssl.DER_cert_to_PEM_cert``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

CERTIFICATE = "CERTIFICATE"
X509_CRL = "X509 CRL"
_WHITESPACE = b" \t\r\n"


class PemError(ValueError):
    """The text is not the PEM expected; callers re-raise it as their own typed error."""


def is_pem(data: bytes) -> bool:
    """True when ``data`` starts (after whitespace) with a PEM BEGIN line.

    PEM is recognised at the start only: DER can contain PEM text (a DCAP quote carries its PCK
    chain as PEM), so "BEGIN somewhere inside" would misread it.
    """
    return data.lstrip(_WHITESPACE).startswith(b"-----BEGIN ")


def decode(
    data: bytes, *, label: str = CERTIFICATE, max_blocks: int = 8, strict: bool = False
) -> tuple[bytes, ...]:
    """The DER of each ``label`` block in ``data``, in order.

    Lenient (the default), as OpenSSL reads PEM: text outside the blocks is ignored (a
    ``subject=`` line, another kind of block). ``strict``: only blocks and whitespace, a line
    break after each BEGIN line and canonical base64 (one spelling per DER), for input whose
    every byte must matter. Either way a block's body must be base64 and whitespace only.

    Raises:
        PemError: no block, more than ``max_blocks``, an unterminated block, bad base64, an
            empty block, or (strict) any other text.
    """
    begin = b"-----BEGIN " + label.encode("ascii") + b"-----"
    end = b"-----END " + label.encode("ascii") + b"-----"
    out: list[bytes] = []
    at = 0
    while True:
        start = data.find(begin, at)
        if strict and data[at : len(data) if start < 0 else start].strip(_WHITESPACE):
            raise PemError("holds text other than PEM blocks and whitespace")
        if start < 0:
            break
        if len(out) == max_blocks:
            raise PemError(
                f"holds more than {max_blocks} {label} blocks, at most {max_blocks} accepted"
            )
        body_start = start + len(begin)
        stop = data.find(end, body_start)
        if stop < 0:
            raise PemError(f"{label} block {len(out)} has no END line")
        body = data[body_start:stop]
        if strict and not (body.startswith(b"\n") or body.startswith(b"\r\n")):
            raise PemError(f"{label} block {len(out)}: no line break after the BEGIN line")
        out.append(_base64(body, strict=strict, what=f"{label} block {len(out)}"))
        at = stop + len(end)
    if not out:
        raise PemError(f"holds no PEM {label.lower()} block")
    return tuple(out)


def _base64(body: bytes, *, strict: bool, what: str) -> bytes:
    # Strict: line breaks only inside a block; lenient: any PEM whitespace.
    text = body.translate(None, b"\r\n" if strict else _WHITESPACE)
    try:
        der = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise PemError(f"{what} is not valid base64") from exc
    if not der:
        raise PemError(f"{what} is empty")
    if strict and base64.b64encode(der) != text:
        # non-zero padding bits: another spelling of the same DER
        raise PemError(f"{what} is not canonical base64")
    return der


def encode_certificate(der: bytes) -> str:
    """PEM text of a DER certificate (not parsed: serial-0 and Gramine certificates too)."""
    import ssl  # ~30 ms to import: only the writers need it

    return ssl.DER_cert_to_PEM_cert(der)


def encode_certificates(ders: Sequence[bytes]) -> str:
    """PEM text of DER certificates, in order (none is parsed)."""
    return "".join(encode_certificate(der) for der in ders)
