"""SQLAlchemy 2 table models of the KMS store.

Times are integer milliseconds since the Unix epoch (portable across SQLite and PostgreSQL and
cheap to compare in conditional UPDATEs). Every table is prefixed ``kms_``. The Alembic
migrations in :mod:`sealpod.kms.migrations` create exactly these tables; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """Key/value facts about the KMS: initialized, key-check value, Shamir parameters."""

    __tablename__ = "kms_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InternalKeyRow(Base):
    """The KMS's own keys (token signing, CA), wrapped under the master key."""

    __tablename__ = "kms_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    public: Mapped[str] = mapped_column(Text)  # public JWK or certificate PEM
    created_ms: Mapped[int] = mapped_column(BigInteger)


class UserRow(Base):
    __tablename__ = "kms_users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class SecretRow(Base):
    __tablename__ = "kms_secrets"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # value | bytes | password | tls-cert
    params: Mapped[str] = mapped_column(Text)  # JSON; never a secret value
    current_version: Mapped[int] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class SecretVersionRow(Base):
    __tablename__ = "kms_secret_versions"
    name: Mapped[str] = mapped_column(
        String(128), ForeignKey("kms_secrets.name", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class PolicyRow(Base):
    __tablename__ = "kms_policies"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    document: Mapped[str] = mapped_column(Text)  # the release policy as JSON
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class NonceRow(Base):
    """Attestation challenges. Consumed by one conditional UPDATE (see Tx.consume_nonce)."""

    __tablename__ = "kms_nonces"
    nonce: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    tee: Mapped[str] = mapped_column(String(16))
    client: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    used_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ProofJtiRow(Base):
    """DPoP proofs already accepted (SHA-256 of their ``jti``), kept until they would be too
    old to verify anyway, so each is accepted once on every replica."""

    __tablename__ = "kms_proof_jtis"
    jti_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class AuditRow(Base):
    __tablename__ = "kms_audit"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    mac: Mapped[bytes] = mapped_column(LargeBinary)


class AuditHeadRow(Base):
    """One row (id 1): the last sequence number and hash, and their MAC under the audit key
    (None only before the first append after migration 0003). Appenders lock it, so the chain
    is extended by one writer at a time, on every replica."""

    __tablename__ = "kms_audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class VolumeCounterRow(Base):
    """The version counter of each encrypted volume, by volume name (the rollback defence
    that outlives a restart: the host cannot roll the KMS back). Moved only by a
    compare-and-swap (see :mod:`sealpod.kms.store.counters`)."""

    __tablename__ = "kms_volume_counters"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(32))  # 16 bytes, lowercase hex
    counter: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
