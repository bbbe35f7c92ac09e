"""The KMS's wire protocol: request and response models (pydantic, strict, frozen).

Binary values travel as base64 (standard alphabet, padded) unless named ``*_hex``; times in
responses are RFC 3339 strings and Unix seconds. Request models refuse unknown fields, so a typo
in a client fails closed with 400.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sealpod.evidence.envelope import EvidenceEnvelope
from sealpod.kms.codec import (
    NAME_PATTERN,
)

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
Role = Literal["admin", "operator", "auditor"]
TeeName = Literal["sgx", "tdx", "snp", "sim"]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


# -- attestation -------------------------------------------------------------------------------
class ChallengeRequest(_Model):
    tee: TeeName = "sim"


class ChallengeResponse(_Model):
    nonce: str  # base64 of 32 bytes
    expires_at: str
    expires_at_unix: int


class AttestationRequest(_Model):
    nonce: str = Field(max_length=128)
    evidence: EvidenceEnvelope
    public_key: str = Field(max_length=1024)  # base64 DER SubjectPublicKeyInfo (P-256)
    workload: Hex32  # the workload measurement the evidence binds (hex)
    # Secrets to release in the attestation response itself (saves a round trip each); every
    # one must be released by a matched policy, or the attestation is refused.
    release: list[Name] = Field(default_factory=list, max_length=64)


class Finding(_Model):
    """One reason for a refusal: a stable ``code``, words, and expected vs actual (no secrets)."""

    code: str
    message: str
    policy: str | None = None
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        where = f" [{self.policy}]" if self.policy else ""
        return f"{self.code}{where}: {self.message}"


class SecretRelease(_Model):
    name: str
    version: int
    jwe: str  # compact JWE (ECDH-ES+A256KW / A256GCM) to the token's ephemeral key
    content_type: str


class ReleasedInfo(_Model):
    name: str
    version: int
    content_type: str


class AttestationResponse(_Model):
    token: str = Field(repr=False)  # a bearer credential (bound to the ephemeral key)
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name
    expires_at: str
    expires_at_unix: int
    secrets: list[str]
    policies: list[str]
    claims: dict[str, object]
    # The request's ``release``: what was released, and one compact JWE to the ephemeral key
    # whose plaintext is the RELEASE_BUNDLE_CTY JSON holding every value (one ECDH, not one
    # per secret).
    released: list[ReleasedInfo] = Field(default_factory=list)
    released_jwe: str | None = None


# -- volume counters ---------------------------------------------------------------------------
VolumeId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
#: Counters are a volume header's u64, stored in a signed 64-bit column.
MAX_VOLUME_COUNTER = 2**63 - 1


class VolumeCounter(_Model):
    """What the KMS holds for a volume: ``volume_id`` None and ``counter`` 0 when nothing."""

    name: str
    volume_id: str | None
    counter: int


class VolumeCounterAdvance(_Model):
    """Compare-and-swap: move the counter from ``expected`` to ``new`` (``new > expected``),
    registering ``volume_id`` under the name when ``expected`` is 0 and the KMS has none."""

    volume_id: VolumeId
    expected: int = Field(ge=0, le=MAX_VOLUME_COUNTER)
    new: int = Field(ge=1, le=MAX_VOLUME_COUNTER)

    @model_validator(mode="after")
    def _increases(self) -> VolumeCounterAdvance:
        if self.new <= self.expected:
            raise ValueError(f"new is {self.new}, expected more than expected ({self.expected})")
        return self


# -- admin: secrets ----------------------------------------------------------------------------
class SecretPut(_Model):
    """Exactly one of ``value`` (base64) or ``generate`` (``bytes:N``, ``password``,
    ``tls-cert``, the latter with ``dns`` names)."""

    value: str | None = Field(default=None, repr=False)
    generate: str | None = Field(default=None, max_length=32)
    dns: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list, max_length=32
    )
    validity_days: int = Field(default=30, ge=1, le=825)


class SecretRotate(_Model):
    value: str | None = Field(default=None, repr=False)


class SecretInfo(_Model):
    name: str
    kind: str
    current_version: int
    created_at: str
    updated_at: str
    params: dict[str, object]


class SecretVersionInfo(_Model):
    version: int
    created_at: str
    current: bool


class SecretValue(_Model):
    name: str
    version: int
    kind: str
    value: str = Field(repr=False)  # base64

    def __repr__(self) -> str:
        return f"SecretValue(name={self.name!r}, version={self.version}, value=<hidden>)"

    def __str__(self) -> str:
        return self.__repr__()


# -- admin: policies ---------------------------------------------------------------------------
class PolicyPut(_Model):
    document: str = Field(max_length=256 * 1024)
    format: Literal["toml", "json"] = "toml"


class PolicyInfo(_Model):
    name: str
    secrets: list[str]
    token_ttl_secs: int
    document: dict[str, object]
    created_at: str
    updated_at: str


class PolicyTestRequest(_Model):
    evidence: EvidenceEnvelope
    workload: Hex32 | None = None
    public_key: str | None = Field(default=None, max_length=1024)
    nonce: str | None = Field(default=None, max_length=128)


class PolicyTestResult(_Model):
    policy: str
    matched: bool
    violations: list[Finding]
    claims: dict[str, object] | None


# -- admin: users, audit, seal -----------------------------------------------------------------
class UserAdd(_Model):
    name: Name
    role: Role


class UserInfo(_Model):
    name: str
    role: str
    created_at: str


class KeyRotate(_Model):
    force: bool = False  # rotate even if tokens of the key before the current may be valid


class KeyRotated(_Model):
    key: str  # "token-signing" | "ca"
    id: str  # the new key's kid (token-signing) or certificate SHA-256 (ca)
    previous_id: str
    rotated_at: str


class UserCreated(_Model):
    name: str
    role: str
    token: str = Field(repr=False)  # shown once; only its SHA-256 is stored

    def __repr__(self) -> str:
        return f"UserCreated(name={self.name!r}, role={self.role!r}, token=<hidden>)"

    def __str__(self) -> str:
        return self.__repr__()


class AuditPage(_Model):
    records: list[dict[str, object]]
    head_seq: int
    head_hash: str
    next_after: int | None


class UnsealRequest(_Model):
    share: str = Field(max_length=512, repr=False)


class SealStatus(_Model):
    initialized: bool
    sealed: bool
    threshold: int
    progress: int
    key_id: str | None
    mode: Literal["shamir", "key"] | None
