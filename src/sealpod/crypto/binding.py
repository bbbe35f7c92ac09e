"""How a workload binds a KMS nonce, its ephemeral key and its measurement into report_data.

docs/protocol.md, Attested secret release, step 2: ``report_data = SHA-512(b"sealpod-attest/v1\\0"
|| nonce || DER(pub) ||
measurement)``. SHA-512 fills the 64-byte report_data field of SGX, TDX and SNP exactly.
"""

from __future__ import annotations

import hashlib

from sealpod.errors import ConfigError

REPORT_DATA_SIZE = 64
NONCE_SIZE = 32
MEASUREMENT_SIZE = 32
_DOMAIN = b"sealpod-attest/v1\x00"


def attestation_report_data(nonce: bytes, public_key_der: bytes, measurement: bytes) -> bytes:
    """Return the 64-byte report_data that binds ``nonce``, the key and the measurement.

    Raises:
        ConfigError: a nonce or measurement of the wrong size, or an empty key.
    """
    if len(nonce) != NONCE_SIZE:
        raise ConfigError(f"nonce is {len(nonce)} bytes, expected {NONCE_SIZE}")
    if len(measurement) != MEASUREMENT_SIZE:
        raise ConfigError(f"measurement is {len(measurement)} bytes, expected {MEASUREMENT_SIZE}")
    if not public_key_der:
        raise ConfigError("public key is empty")
    # Fixed-size nonce and measurement frame the variable-length key, so the concatenation is
    # unambiguous without length prefixes.
    return hashlib.sha512(_DOMAIN + nonce + public_key_der + measurement).digest()
