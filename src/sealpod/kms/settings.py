"""KMS settings: one model, read once (``SEALPOD_KMS_*`` environment variables or arguments).

The master key itself is never a setting value: a setting names the *file* that holds it; the
``SEALPOD_KMS_MASTER_KEY`` variable is read separately by :mod:`sealpod.kms.keys` and never
copied into this model (so it cannot leak through a settings repr or dump).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sealpod.settings import sealpod_home


def kms_home() -> Path:
    """``$SEALPOD_HOME/kms``: the embedded database, key file, TLS material, admin token."""
    return sealpod_home() / "kms"


class KmsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEALPOD_KMS_", extra="ignore", frozen=True)

    #: ``sqlite:///path`` or ``postgresql+psycopg://user@host/db``; default: SQLite in kms_home().
    db_url: str | None = None
    master_key_file: Path | None = None
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL"

    nonce_ttl_secs: int = Field(default=60, ge=1, le=3600)
    max_token_ttl_secs: int = Field(default=3600, ge=1, le=86400)

    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_secret_bytes: int = Field(default=512 * 1024, ge=1)

    #: Per-client token bucket on the attestation endpoints (requests per second, burst).
    attest_rate_per_sec: float = Field(default=50.0, gt=0)
    attest_burst: int = Field(default=100, ge=1)
    #: Take the client address from X-Forwarded-For (only behind a trusted proxy).
    trust_forwarded_for: bool = False

    def resolved_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{kms_home() / 'kms.db'}"
