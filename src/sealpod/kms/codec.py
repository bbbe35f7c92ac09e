"""The KMS wire's plain values, shared by the server's models and the clients: name patterns,
the release bundle's content type and base64. No pydantic here, so that a client (``sealpod
run``) that only builds requests and opens answers does not load the server's models.
"""

from __future__ import annotations

import base64
import binascii

from sealpod.errors import MalformedEvidence

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: A volume's name: with the ``volume.`` prefix it must still be a secret name (128 chars).
VOLUME_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$"
#: The JWE content type of the secrets released with an attestation: JSON
#: ``{"secrets": [{"name", "version", "content_type", "value"}]}``, values base64.
RELEASE_BUNDLE_CTY = "application/vnd.sealpod.secrets+json"


def b64decode(value: str, *, field: str, max_size: int | None = None) -> bytes:
    """Decode standard or URL-safe base64 (padding optional).

    Raises:
        MalformedEvidence: not base64, or longer than ``max_size`` once decoded.
    """
    text = value.strip()
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        else:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEvidence(f"field {field} is not base64", field=field) from exc
    if max_size is not None and len(raw) > max_size:
        raise MalformedEvidence(
            f"field {field} is {len(raw)} bytes, expected at most {max_size}", field=field
        )
    return raw


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()
