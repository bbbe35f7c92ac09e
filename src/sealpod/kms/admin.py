"""The admin side of the KMS: users and roles, secrets, policies, audit.

Users authenticate with bearer tokens ``sealpod.<id>.<random>``; only SHA-256 of a token is
stored and it is compared with :func:`hmac.compare_digest`. Roles:

=========  ===========================================================================
admin      everything, including reading secret values, writing policies, managing users
operator   secrets (put, list, rotate, rm, versions — not reading values); policies: read,
           test and remove — not write
auditor    reading and verifying the audit log
=========  ===========================================================================

Separation of duties (as Vault's): whoever decides *which workloads receive which secrets* can
read those secrets — grant them to an enclave they run, then fetch — so writing a release
policy is as privileged as reading values (``policy.grant``, admin only). Every policy grants at
least one secret, and any part of it (measurements, ``allow_simulation``, workloads) changes who
receives them. Removing a policy only takes grants away, so an operator may do it. Every policy
change is audited with the secrets granted before and after, and a refused write is audited too.

Every change commits together with its audit record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from sealpod.errors import (
    ConfigError,
    KmsAuthError,
    KmsConflict,
    KmsForbidden,
    MalformedEvidence,
)
from sealpod.kms.audit import ChainReport
from sealpod.kms.checkpoint import sign_checkpoint
from sealpod.kms.codec import b64decode, b64encode
from sealpod.kms.generate import GenerateSpec, generate_value, parse_generate
from sealpod.kms.keys import SealedValue
from sealpod.kms.metrics import KmsMetrics
from sealpod.kms.models import (
    AuditPage,
    KeyRotate,
    KeyRotated,
    PolicyInfo,
    PolicyPut,
    SecretInfo,
    SecretPut,
    SecretRotate,
    SecretValue,
    SecretVersionInfo,
    UserAdd,
    UserCreated,
    UserInfo,
)
from sealpod.kms.release import parse_release_policy
from sealpod.kms.settings import KmsSettings
from sealpod.kms.state import (
    CA_KEY,
    KEY_REFRESH_SECS,
    TOKEN_KEY,
    TOKEN_PREFIX,
    SealState,
    iso,
    new_admin_token,
    to_ms,
)

PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {
            "secret.write",
            "secret.read",
            "secret.value",
            "policy.grant",
            "policy.remove",
            "policy.read",
            "user.manage",
            "keys.rotate",
            "audit.read",
        }
    ),
    "operator": frozenset({"secret.write", "secret.read", "policy.remove", "policy.read"}),
    "auditor": frozenset({"audit.read"}),
}
_DUMMY_HASH = hashlib.sha256(b"sealpod: no such user").digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def require(self, permission: str) -> None:
        """Raises: KmsForbidden when the role lacks ``permission``."""
        if not self.may(permission):
            raise KmsForbidden(f"role {self.role!r} may not {permission}")


class AdminService:
    def __init__(self, settings: KmsSettings, state: SealState, metrics: KmsMetrics) -> None:
        self.settings = settings
        self.state = state
        self.store = state.store
        self.metrics = metrics

    # -- authentication -------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        """Raises: KmsAuthError (401) for a missing, malformed or unknown token."""
        self.state.keys  # noqa: B018 - 503 while sealed
        if not authorization:
            raise KmsAuthError("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise KmsAuthError("Authorization header is not 'Bearer <token>'")
        parts = token.split(".")
        user_id = parts[1] if len(parts) == 3 and parts[0] == TOKEN_PREFIX else ""
        with self.store.read() as tx:
            user = tx.get_user(user_id[:32]) if user_id else None
            stored = user.token_hash if user is not None else _DUMMY_HASH
            name, role = (user.name, user.role) if user is not None else ("", "")
        # Compare even for an unknown user, so timing does not tell which ids exist.
        ok = hmac.compare_digest(hashlib.sha256(token.encode()).digest(), stored)
        if not ok or user is None:
            raise KmsAuthError("admin token is not valid")
        return Principal(name=name, role=role)

    # -- keys -----------------------------------------------------------------------------
    def rotate_token_key(self, who: Principal, req: KeyRotate) -> KeyRotated:
        """A new token-signing key (admin only). Refused (409) while tokens signed by the
        previous key may still be valid: the longest token lifetime plus the time replicas
        take to notice a rotation, unless ``force``."""
        who.require("keys.rotate")
        min_age = self.settings.max_token_ttl_secs + int(KEY_REFRESH_SECS)
        done = self.state.rotate_token_key(actor=who.name, min_age_secs=min_age, force=req.force)
        return KeyRotated(
            key=TOKEN_KEY, id=done.id, previous_id=done.previous_id, rotated_at=done.at
        )

    def rotate_ca(self, who: Principal, req: KeyRotate) -> KeyRotated:
        """A new workload CA (admin only). Refused (409) while certificates of the previous CA
        may still be valid: the longest ``validity_days`` of the tls-cert secrets plus the time
        replicas take to notice, unless ``force``."""
        who.require("keys.rotate")
        with self.store.read() as tx:
            days = [
                int(json.loads(row.params).get("validity_days", 0))
                for row in tx.list_secrets()
                if row.kind == "tls-cert"
            ]
        min_age = max(days, default=0) * 86400 + int(KEY_REFRESH_SECS)
        done = self.state.rotate_ca(actor=who.name, min_age_secs=min_age, force=req.force)
        return KeyRotated(key=CA_KEY, id=done.id, previous_id=done.previous_id, rotated_at=done.at)

    # -- users ----------------------------------------------------------------------------
    def add_user(self, who: Principal, req: UserAdd) -> UserCreated:
        who.require("user.manage")
        user_id = secrets.token_hex(8)
        token, token_hash = new_admin_token(user_id)
        now = self.state.clock()
        with self.store.transaction() as tx:
            tx.add_user(
                id=user_id, name=req.name, role=req.role, token_hash=token_hash, now_ms=to_ms(now)
            )
            self.state.audit(
                tx,
                kind="user.add",
                actor=who.name,
                subject=req.name,
                outcome="ok",
                details={"role": req.role},
            )
        self.metrics.admin.labels(operation="user.add", outcome="ok").inc()
        return UserCreated(name=req.name, role=req.role, token=token)

    def remove_user(self, who: Principal, name: str) -> None:
        who.require("user.manage")
        with self.store.transaction() as tx:
            row = tx.remove_user(name)
            if row.role == "admin" and tx.count_admins() == 0:
                raise KmsConflict("refusing to remove the last admin")
            self.state.audit(
                tx,
                kind="user.rm",
                actor=who.name,
                subject=name,
                outcome="ok",
                details={"role": row.role},
            )
        self.metrics.admin.labels(operation="user.rm", outcome="ok").inc()

    def list_users(self, who: Principal) -> list[UserInfo]:
        who.require("user.manage")
        with self.store.read() as tx:
            return [
                UserInfo(name=u.name, role=u.role, created_at=iso(u.created_ms))
                for u in tx.list_users()
            ]

    # -- secrets --------------------------------------------------------------------------
    def _value(self, value_b64: str | None) -> bytes:
        if value_b64 is None:
            raise ConfigError("a value (base64) or a generate spec is required")
        try:
            value = b64decode(value_b64, field="value", max_size=self.settings.max_secret_bytes)
        except MalformedEvidence as exc:
            raise ConfigError(exc.message) from exc
        return value

    def put_secret(self, who: Principal, name: str, req: SecretPut) -> SecretInfo:
        """Create a secret (version 1) from a value or a generate spec.

        Raises:
            KmsConflict: it exists (use rotate). ConfigError: bad value or spec.
        """
        who.require("secret.write")
        spec: GenerateSpec | None = None
        if (req.value is None) == (req.generate is None):
            raise ConfigError("give exactly one of value or generate")
        if req.generate is not None:
            spec = parse_generate(req.generate, dns=list(req.dns), validity_days=req.validity_days)
            value = generate_value(spec)
            kind, params = spec.kind, spec.params()
        else:
            value, kind, params = self._value(req.value), "value", {}
        master = self.state.keys.master
        now_ms = to_ms(self.state.clock())
        with self.store.transaction() as tx:
            row = tx.create_secret(name=name, kind=kind, params=params, now_ms=now_ms)
            version = tx.add_version(row, lambda v: master.encrypt_version(name, v, value), now_ms)
            row = tx.get_secret(name)
            self.state.audit(
                tx,
                kind="secret.put",
                actor=who.name,
                subject=name,
                outcome="ok",
                details={"version": version, "kind": kind, "size": len(value)},
            )
            info = _secret_info(row)
        self.metrics.admin.labels(operation="secret.put", outcome="ok").inc()
        return info

    def rotate_secret(self, who: Principal, name: str, req: SecretRotate) -> SecretInfo:
        """A new version: a new value for owner-set secrets, regenerated for generated ones."""
        who.require("secret.write")
        master = self.state.keys.master
        now_ms = to_ms(self.state.clock())
        with self.store.transaction() as tx:
            row = tx.get_secret(name)
            params = json.loads(row.params)
            if row.kind == "value":
                value = self._value(req.value)
            else:
                if req.value is not None:
                    raise ConfigError(
                        f"secret {name!r} is generated ({row.kind}); rotate takes no value"
                    )
                spec = parse_generate(
                    str(params["generate"]),
                    dns=list(params.get("dns", [])),
                    validity_days=int(params.get("validity_days", 30)),
                )
                value = generate_value(spec)
            version = tx.add_version(row, lambda v: master.encrypt_version(name, v, value), now_ms)
            row = tx.get_secret(name)
            self.state.audit(
                tx,
                kind="secret.rotate",
                actor=who.name,
                subject=name,
                outcome="ok",
                details={"version": version, "kind": row.kind, "size": len(value)},
            )
            info = _secret_info(row)
        self.metrics.admin.labels(operation="secret.rotate", outcome="ok").inc()
        return info

    def get_secret_value(self, who: Principal, name: str, version: int | None) -> SecretValue:
        who.require("secret.value")
        self.state.keys  # noqa: B018 - 503 while sealed
        with self.store.transaction() as tx:
            row = tx.get_secret(name)
            v = version or row.current_version
            vrow = tx.get_version(name, v)
            value = self.state.open_version(
                name, v, SealedValue(bytes(vrow.wrapped_key), bytes(vrow.ciphertext))
            )
            self.state.audit(
                tx,
                kind="secret.get",
                actor=who.name,
                subject=name,
                outcome="ok",
                details={"version": v},
            )
            kind = row.kind
        return SecretValue(name=name, version=v, kind=kind, value=b64encode(value))

    def list_secrets(self, who: Principal) -> list[SecretInfo]:
        who.require("secret.read")
        with self.store.read() as tx:
            return [_secret_info(r) for r in tx.list_secrets()]

    def secret_versions(self, who: Principal, name: str) -> list[SecretVersionInfo]:
        who.require("secret.read")
        with self.store.read() as tx:
            current = tx.get_secret(name).current_version
            return [
                SecretVersionInfo(
                    version=v.version, created_at=iso(v.created_ms), current=v.version == current
                )
                for v in tx.list_versions(name)
            ]

    def remove_secret(self, who: Principal, name: str) -> None:
        who.require("secret.write")
        with self.store.transaction() as tx:
            tx.delete_secret(name)
            self.state.audit(tx, kind="secret.rm", actor=who.name, subject=name, outcome="ok")
        self.metrics.admin.labels(operation="secret.rm", outcome="ok").inc()

    # -- policies -------------------------------------------------------------------------
    def put_policy(self, who: Principal, name: str, req: PolicyPut) -> PolicyInfo:
        """Create or replace a release policy (admin only: see the module docstring).

        Raises:
            KmsForbidden: the role may not grant secrets (the attempt is audited, refused).
            MalformedPolicy: the document does not parse.
        """
        allowed = who.may("policy.grant")
        if not allowed and not who.may("policy.read"):
            # A role with no policy rights (auditor) is refused outright; an operator's attempt
            # to grant secrets is audited below.
            who.require("policy.grant")
        rp = parse_release_policy(name, req.document, req.format)
        text = rp.to_json_text()
        granted = sorted(set(rp.release.secrets))
        with self.store.transaction() as tx:
            before = tx.find_policy(name)
            previous = _granted(before.document) if before is not None else []
            details: dict[str, object] = {
                "secrets": granted,
                "previous_secrets": previous,
                "added": sorted(set(granted) - set(previous)),
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
            }
            if not allowed:
                # Committed on its own: an operator trying to grant secrets is worth a record.
                self.state.audit(
                    tx, kind="policy.put", actor=who.name, subject=name, outcome="refused",
                    details={**details, "codes": ["policy_grant_forbidden"]},
                )  # fmt: skip
            else:
                created = tx.put_policy(name, text, to_ms(self.state.clock()))
                self.state.audit(
                    tx, kind="policy.put", actor=who.name, subject=name, outcome="ok",
                    details={**details, "created": created},
                )  # fmt: skip
                row = tx.get_policy(name)
                info = _policy_info(row.name, row.document, row.created_ms, row.updated_ms)
        if not allowed:
            self.metrics.admin.labels(operation="policy.put", outcome="refused").inc()
            raise KmsForbidden(
                f"role {who.role!r} may not write release policies: a policy decides who "
                f"receives secrets ({', '.join(granted)}), which needs the role that may read them"
            )
        self.metrics.admin.labels(operation="policy.put", outcome="ok").inc()
        return info

    def get_policy(self, who: Principal, name: str) -> PolicyInfo:
        who.require("policy.read")
        with self.store.read() as tx:
            row = tx.get_policy(name)
            return _policy_info(row.name, row.document, row.created_ms, row.updated_ms)

    def list_policies(self, who: Principal) -> list[PolicyInfo]:
        who.require("policy.read")
        with self.store.read() as tx:
            return [
                _policy_info(r.name, r.document, r.created_ms, r.updated_ms)
                for r in tx.list_policies()
            ]

    def remove_policy(self, who: Principal, name: str) -> None:
        """Remove a release policy: its grants end at once, for tokens already issued too.

        Raises:
            KmsForbidden: the role may not remove policies. KmsNotFound: no such policy.
        """
        who.require("policy.remove")
        with self.store.transaction() as tx:
            previous = _granted(tx.get_policy(name).document)
            tx.delete_policy(name)
            self.state.audit(
                tx, kind="policy.rm", actor=who.name, subject=name, outcome="ok",
                details={"previous_secrets": previous},
            )  # fmt: skip
        self.metrics.admin.labels(operation="policy.rm", outcome="ok").inc()

    # -- audit ----------------------------------------------------------------------------
    def audit_page(self, who: Principal, *, after: int, limit: int) -> AuditPage:
        who.require("audit.read")
        limit = max(1, min(limit, 1000))
        with self.store.read() as tx:
            records = tx.audit_records(after=after, limit=limit)
            head_seq, head_hash = tx.audit_head()
        return AuditPage(
            records=[r.to_json() for r in records],
            head_seq=head_seq,
            head_hash=head_hash.hex(),
            next_after=records[-1].seq if len(records) == limit else None,
        )

    def audit_verify(self, who: Principal) -> AuditVerification:
        """Walk the whole chain with MACs (only the server holds the audit key) and, when it is
        intact, sign a checkpoint of its head (:mod:`sealpod.kms.checkpoint`) for the caller to
        keep outside the KMS."""
        who.require("audit.read")
        keys = self.state.keys
        with self.store.read() as tx:
            report = tx.verify_audit(keys.master.audit_mac)
        checkpoint = None
        if report.ok:
            checkpoint = sign_checkpoint(
                keys.signer,
                seq=report.last_seq,
                digest=report.last_hash,
                records=report.records,
                now=self.state.clock(),
            )
        return AuditVerification(report=report, checkpoint=checkpoint)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditVerification:
    """The server's verdict on the chain, and a signed checkpoint of its head when intact."""

    report: ChainReport
    checkpoint: str | None

    def to_json(self) -> dict[str, object]:
        return {**self.report.to_json(), "checkpoint": self.checkpoint}


def _secret_info(row: Row[Any]) -> SecretInfo:
    return SecretInfo(
        name=row.name,
        kind=row.kind,
        current_version=row.current_version,
        created_at=iso(row.created_ms),
        updated_at=iso(row.updated_ms),
        params=json.loads(row.params),
    )


def _granted(document: str) -> list[str]:
    """The secrets a stored policy document releases (stored documents parsed when written)."""
    release = json.loads(document).get("release", {})
    return sorted({str(s) for s in release.get("secrets", [])})


def _policy_info(name: str, document: str, created_ms: int, updated_ms: int) -> PolicyInfo:
    data = json.loads(document)
    release = data.get("release", {})
    return PolicyInfo(
        name=name,
        secrets=list(release.get("secrets", [])),
        token_ttl_secs=int(release.get("token_ttl_secs", 300)),
        document=data,
        created_at=iso(created_ms),
        updated_at=iso(updated_ms),
    )
