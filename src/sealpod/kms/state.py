"""Initialisation, sealing and unsealing of a KMS, and the keys it holds while unsealed.

``initialize`` writes, in one transaction: the key-check value of a new master key, the Shamir
parameters, the token-signing key and the CA (both wrapped under the master key), the first
admin user and the first audit record. A server process starts *sealed* unless it is given the
master key (file or environment variable); shares submitted through ``unseal`` are combined once
``threshold`` of them are in, and checked against the key-check value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sealpod.errors import (
    ConfigError,
    CryptoError,
    KmsConflict,
    KmsKeyChanged,
    KmsUnavailable,
    SealpodError,
    UnknownSigningKey,
)
from sealpod.kms.audit import AuditEntry, AuditRecord
from sealpod.kms.generate import CertificateAuthority
from sealpod.kms.keys import MasterKey, SealedValue
from sealpod.kms.models import SealStatus
from sealpod.kms.shamir import Share, combine, split
from sealpod.kms.store import Store, Tx
from sealpod.kms.tokens import TokenClaims, TokenSigner

Clock = Callable[[], datetime]
log = logging.getLogger("sealpod.kms.state")
TOKEN_KEY = "token-signing"  # noqa: S105 - a key label, not a password
#: The token-signing key before the last rotation: still verifies, never signs.
TOKEN_PREV = "token-signing.prev"  # noqa: S105 - a key label, not a password
#: How often a process looks for a token-key rotation made by another replica or worker.
KEY_REFRESH_SECS = 30.0
#: Floor between key lookups prompted by tokens naming an unknown key: forged kids cost an
#: attacker nothing, so they buy at most 4 small reads a second. A real new key is found by the
#: first lookup after the rotation, whoever's token prompts it.
UNKNOWN_KID_REFRESH_SECS = 0.25
CA_KEY = "ca"
#: The workload CA before the last rotation: still in the trust bundle, never issues.
CA_PREV = "ca.prev"
TOKEN_PREFIX = "sealpod"  # noqa: S105 - the token format prefix


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def new_admin_token(user_id: str) -> tuple[str, bytes]:
    """A fresh user token ``sealpod.<id>.<43 chars>`` and its SHA-256 (what is stored)."""
    token = f"{TOKEN_PREFIX}.{user_id}.{secrets.token_urlsafe(32)}"
    return token, hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    admin_name: str
    admin_token: str
    shares: tuple[Share, ...]
    threshold: int
    key_id: str

    def __repr__(self) -> str:
        return (
            f"InitResult(admin={self.admin_name!r}, key_id={self.key_id}, "
            f"shares={len(self.shares)})"
        )


def initialize(
    store: Store,
    master: MasterKey,
    *,
    shares: int = 0,
    threshold: int = 0,
    admin_name: str = "root",
    now: datetime | None = None,
) -> InitResult:
    """Initialise an empty KMS database under ``master``.

    With ``shares``/``threshold`` the master key is split and the shares returned (the caller
    hands them out; the key itself is not kept). Without, the caller keeps the key (file/env).

    Raises:
        KmsConflict: the database is already initialised.
        ConfigError: bad Shamir parameters.
    """
    now = now or utcnow()
    parts = tuple(split(master.raw, shares=shares, threshold=threshold)) if shares else ()
    ca = CertificateAuthority.create(label=master.key_id, now=now)
    signing = TokenSigner.generate_key()
    user_id = secrets.token_hex(8)
    token, token_hash = new_admin_token(user_id)
    ms = to_ms(now)
    with store.transaction() as tx:
        if tx.get_meta("initialized") is not None:
            raise KmsConflict("the KMS database is already initialised")
        tx.set_meta("initialized", iso(ms))
        tx.set_meta("key_check", master.check_value().hex())
        tx.set_meta("mode", "shamir" if parts else "key")
        tx.set_meta("threshold", str(threshold if parts else 0))
        tx.set_meta("shares", str(shares if parts else 0))
        signing_der = _der(signing)
        signer = TokenSigner(signing)
        tx.put_internal_key(
            TOKEN_KEY,
            master.wrap_internal(TOKEN_KEY, signing_der),
            json.dumps(signer.public_jwk()),
            ms,
        )
        tx.put_internal_key(CA_KEY, master.wrap_internal(CA_KEY, ca.key_der()), ca.cert_pem(), ms)
        tx.add_user(id=user_id, name=admin_name, role="admin", token_hash=token_hash, now_ms=ms)
        tx.append_audit(
            ts_ms=ms,
            kind="kms.init",
            actor="cli",
            subject=master.key_id,
            outcome="ok",
            details={
                "mode": "shamir" if parts else "key",
                "threshold": threshold,
                "admin": admin_name,
            },
            mac=master.audit_mac,
        )
    return InitResult(
        admin_name=admin_name,
        admin_token=token,
        shares=parts,
        threshold=threshold,
        key_id=master.key_id,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rotated:
    id: str  # the token key's kid, the CA certificate's SHA-256
    previous_id: str
    at: str


def _der(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _private_key(master: MasterKey, label: str, wrapped: bytes) -> ec.EllipticCurvePrivateKey:
    """An EC private key stored wrapped under ``master`` with ``label``.

    Raises:
        CryptoError: tampered, another master key, or not an EC key.
    """
    try:
        key = serialization.load_der_private_key(
            master.unwrap_internal(label, wrapped), password=None
        )
    except ValueError as exc:
        raise CryptoError(f"stored {label} key does not load") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"stored {label} key is not an EC key")
    return key


def _load_signer(tx: Tx, master: MasterKey) -> TokenSigner:
    """The token signer: the current key, and the previous one (public part of the *sealed*
    private key, not the stored JWK, so a database writer cannot slip in a key of theirs)."""
    current = _private_key(master, TOKEN_KEY, bytes(tx.get_internal_key(TOKEN_KEY).wrapped))
    previous = tx.find_internal_key(TOKEN_PREV)
    older = (
        [_private_key(master, TOKEN_PREV, bytes(previous.wrapped)).public_key()]
        if previous is not None
        else []
    )
    return TokenSigner(current, previous=older)


def _load_ca(tx: Tx, master: MasterKey) -> CertificateAuthority:
    """The workload CA and, after a rotation, the previous one (for the trust bundle). Each
    certificate must match its sealed key, so a database writer cannot plant a CA."""
    row = tx.get_internal_key(CA_KEY)
    previous = tx.find_internal_key(CA_PREV)
    older = (
        [
            CertificateAuthority.load(
                master.unwrap_internal(CA_PREV, previous.wrapped), previous.public
            )
        ]
        if previous is not None
        else []
    )
    return CertificateAuthority.load(
        master.unwrap_internal(CA_KEY, row.wrapped), row.public, previous=older
    )


def _load_keys(tx: Tx, master: MasterKey) -> Keys:
    return Keys(master, _load_signer(tx, master), _load_ca(tx, master))


@dataclass(frozen=True, slots=True)
class Keys:
    """What an unsealed KMS holds in memory."""

    master: MasterKey
    signer: TokenSigner
    ca: CertificateAuthority


class SealState:
    """Sealed/unsealed state of one server process (each replica unseals itself)."""

    def __init__(self, store: Store, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock
        # Re-entrant: unsealing appends an audit record, which seals again if a rekey raced it.
        self._lock = threading.RLock()
        self._keys: Keys | None = None
        self._pending: dict[int, Share] = {}
        self._meta: Mapping[str, str] = {}
        self._signer_checked = time.monotonic()
        self._unknown_kid_checked = float("-inf")
        #: Told True/False whenever this process seals or unseals (the metrics gauge).
        self.on_seal_change: Callable[[bool], None] | None = None
        self.reload_meta()

    def reload_meta(self) -> None:
        with self.store.read() as tx:
            self._meta = tx.all_meta()

    @property
    def initialized(self) -> bool:
        return "initialized" in self._meta

    @property
    def sealed(self) -> bool:
        return self._keys is None

    @property
    def keys(self) -> Keys:
        """The keys; raises KmsUnavailable (503) while sealed."""
        keys = self._keys
        if keys is None:
            raise KmsUnavailable("the KMS is sealed; unseal it with `sealpod kms unseal`")
        return keys

    def status(self) -> SealStatus:
        if not self.initialized:
            self.reload_meta()
        mode = self._meta.get("mode")
        return SealStatus(
            initialized=self.initialized,
            sealed=self.sealed,
            threshold=int(self._meta.get("threshold", "0")),
            progress=len(self._pending),
            key_id=self._keys.master.key_id if self._keys else None,
            mode="shamir" if mode == "shamir" else ("key" if mode == "key" else None),
        )

    def unseal_with_key(self, master: MasterKey, *, actor: str = "startup") -> None:
        """Unseal with the whole master key.

        Raises:
            KmsUnavailable: the database is not initialised.
            ConfigError: the key is not this KMS's master key.
        """
        with self._lock:
            self._unseal(master, actor=actor)

    def submit_share(self, text: str, *, actor: str) -> SealStatus:
        """Add one share; unseal once ``threshold`` distinct shares are in.

        Raises:
            ConfigError: malformed share, or the shares do not recover this KMS's key
            (the collected shares are then discarded, so a bad one cannot block forever).
        """
        share = Share.from_text(text)
        with self._lock:
            if self._keys is not None:
                return self.status()
            if not self.initialized:
                self.reload_meta()
            threshold = int(self._meta.get("threshold", "0"))
            if threshold < 2:
                raise ConfigError("this KMS was not initialised with Shamir shares")
            self._pending[share.index] = share
            if len(self._pending) >= threshold:
                parts = list(self._pending.values())
                self._pending.clear()
                try:
                    master = MasterKey(combine(parts))
                except ConfigError as exc:
                    raise ConfigError(f"shares do not combine: {exc.message}") from exc
                self._unseal(master, actor=actor)
        return self.status()

    def seal(self) -> None:
        with self._lock:
            self._keys = None
            self._pending.clear()
        self._changed()

    def _changed(self) -> None:
        if self.on_seal_change is not None:
            self.on_seal_change(self._keys is None)

    def check_key(self, master: MasterKey) -> None:
        """Check that ``master`` is this KMS's key, without unsealing.

        Raises:
            KmsUnavailable: the database is not initialised.
            ConfigError: it is another key.
        """
        self.reload_meta()
        if not self.initialized:
            raise KmsUnavailable("the KMS database is not initialised; run `sealpod kms init`")
        stored = bytes.fromhex(self._meta.get("key_check", ""))
        if not master.matches(stored):
            raise ConfigError("the key (or the combined shares) is not this KMS's master key")

    def _unseal(self, master: MasterKey, *, actor: str) -> None:
        self.check_key(master)
        try:
            with self.store.read() as tx:
                self._keys = _load_keys(tx, master)
        except CryptoError as exc:  # a rekey committed since the key check?
            raise self.key_change_or(exc, master) from exc
        self._changed()
        self._signer_checked = time.monotonic()
        with self.store.transaction() as tx:
            self.audit(tx, kind="kms.unseal", actor=actor, subject=master.key_id, outcome="ok")

    # -- rotation of the token-signing key and the workload CA ---------------------------------
    def rotate_token_key(self, *, actor: str, min_age_secs: int, force: bool = False) -> Rotated:
        """Make a new token-signing key current; the current one becomes the previous key
        (verifies, never signs) and the one before it is dropped.

        Raises:
            KmsConflict: see :meth:`_rotate`.
        """
        new_key = TokenSigner.generate_key()
        signer = TokenSigner(new_key)
        return self._rotate(
            TOKEN_KEY,
            TOKEN_PREV,
            new_der=_der(new_key),
            new_public=json.dumps(signer.public_jwk()),
            new_id=signer.kid,
            actor=actor,
            min_age_secs=min_age_secs,
            force=force,
        )

    def rotate_ca(self, *, actor: str, min_age_secs: int, force: bool = False) -> Rotated:
        """Make a new workload CA current; the current one stays in the trust bundle
        (``/v1/ca`` and every issued certificate's ``ca``) until the next rotation.

        Raises:
            KmsConflict: see :meth:`_rotate`.
        """
        ca = CertificateAuthority.create(label=self.keys.master.key_id, now=self.clock())
        return self._rotate(
            CA_KEY,
            CA_PREV,
            new_der=ca.key_der(),
            new_public=ca.cert_pem(),
            new_id=ca.fingerprint,
            actor=actor,
            min_age_secs=min_age_secs,
            force=force,
        )

    def _rotate(
        self,
        label: str,
        prev_label: str,
        *,
        new_der: bytes,
        new_public: str,
        new_id: str,
        actor: str,
        min_age_secs: int,
        force: bool,
    ) -> Rotated:
        """Current → previous, new → current, in one transaction with a ``key.rotate`` record.

        Raises:
            KmsConflict: there is a previous key, the current one is younger than
                ``min_age_secs`` (what the previous one signed may still be valid), and
                ``force`` is not set.
        """
        keys = self.keys
        now_ms = to_ms(self.clock())
        with self.store.transaction() as tx:
            current = tx.get_internal_key(label)
            age = (now_ms - int(current.created_ms)) // 1000
            # Only a previous key can be dropped too early; the first rotation drops nothing.
            if tx.find_internal_key(prev_label) is not None and age < min_age_secs and not force:
                raise KmsConflict(
                    f"the {label} key is {age} s old; what the key before it signed may be "
                    f"valid for up to {min_age_secs - age} s more: wait, or force it"
                )
            try:
                old_der = keys.master.unwrap_internal(label, bytes(current.wrapped))
            except CryptoError as exc:
                raise self.key_change_or(exc, keys.master) from exc
            tx.put_internal_key(
                prev_label, keys.master.wrap_internal(prev_label, old_der), current.public, now_ms
            )
            tx.put_internal_key(
                label, keys.master.wrap_internal(label, new_der), new_public, now_ms
            )
            old_id = keys.signer.kid if label == TOKEN_KEY else keys.ca.fingerprint
            self.audit(
                tx,
                kind="key.rotate",
                actor=actor,
                subject=label,
                outcome="ok",
                details={"id": new_id, "previous_id": old_id, "forced": force},
            )
            reloaded = _load_keys(tx, keys.master)
        with self._lock:
            if self._keys is keys:
                self._keys = reloaded
        return Rotated(id=new_id, previous_id=old_id, at=iso(now_ms))

    def refresh_keys(self, *, unknown_kid: bool = False) -> bool:
        """Pick up a rotation made by another process: every ``KEY_REFRESH_SECS`` on the
        signing and issuing paths, or (at most every ``UNKNOWN_KID_REFRESH_SECS``) when a token
        names a key this process does not hold. True when the keys were reloaded."""
        now = time.monotonic()
        interval = UNKNOWN_KID_REFRESH_SECS if unknown_kid else KEY_REFRESH_SECS
        last = self._unknown_kid_checked if unknown_kid else self._signer_checked
        if now - last < interval:  # the common case: no lock, no I/O
            return False
        with self._lock:
            if unknown_kid:
                if now - self._unknown_kid_checked < interval:
                    return False
                self._unknown_kid_checked = now
            else:
                if now - self._signer_checked < interval:
                    return False
                self._signer_checked = now
            keys = self._keys
            if keys is None:
                return False
            with self.store.read() as tx:
                try:
                    stored_kid = json.loads(tx.get_internal_key(TOKEN_KEY).public).get("kid")
                except (ValueError, AttributeError):
                    stored_kid = None  # damaged: reload from the sealed form, which checks
                stored_ca = tx.get_internal_key(CA_KEY).public
                if stored_kid == keys.signer.kid and stored_ca == keys.ca.cert_pem():
                    return False
                # What is stored only says whether to reload; keys come from their sealed form.
                try:
                    reloaded = _load_keys(tx, keys.master)
                except CryptoError as exc:
                    raise self.key_change_or(exc, keys.master) from exc
            self._keys = reloaded
        log.info("event=keys_reloaded kid=%s ca=%s", reloaded.signer.kid, reloaded.ca.fingerprint)
        return True

    def open_version(self, name: str, version: int, sealed: SealedValue) -> bytes:
        """A secret version's value, under the unsealed master key.

        Raises:
            KmsKeyChanged: it does not open because a rekey replaced the key (this process
                is sealed now), rather than because it was tampered with.
            CryptoError: tampered.
        """
        keys = self.keys
        try:
            return keys.master.decrypt_version(name, version, sealed)
        except CryptoError as exc:
            raise self.key_change_or(exc, keys.master) from exc

    def key_change_or(self, exc: CryptoError, master: MasterKey) -> SealpodError:
        """``exc``, unless the database's key-check value says a rekey replaced ``master`` (the
        key that failed): then seal if this process still holds it, and return a
        :class:`KmsKeyChanged` to raise instead."""
        with self.store.read() as tx:
            stored = tx.get_meta("key_check")
        if stored == master.check_value().hex():
            return exc
        with self._lock:
            keys = self._keys
            if keys is not None and keys.master is master:
                self.seal()
                self._meta = {}
        return KmsKeyChanged(
            "the KMS master key was changed (sealpod kms rekey); restart or unseal this "
            "server with the new key"
        )

    def verify_token(self, token: str, *, now: datetime) -> TokenClaims:
        """Verify an attestation token, reloading the keys once if it names a key that another
        replica may have rotated in.

        Raises:
            KmsAuthError: malformed, forged, expired, or signed by a key this KMS does not hold.
        """
        keys = self.keys
        try:
            return keys.signer.verify(token, now=now)
        except UnknownSigningKey:
            # Retry once if the keys changed meanwhile: reloaded now, or by another thread.
            if not self.refresh_keys(unknown_kid=True) and self.keys is keys:
                raise
        return self.keys.signer.verify(token, now=now)

    def audit(
        self,
        tx: Tx,
        *,
        kind: str,
        actor: str,
        subject: str,
        outcome: str,
        details: Mapping[str, object] | None = None,
    ) -> AuditRecord:
        """Append an audit record in ``tx`` (requires the unsealed audit key).

        Raises:
            KmsKeyChanged: a rekey replaced the master key; this process is sealed now.
        """
        entry = AuditEntry(
            ts_ms=to_ms(self.clock()),
            kind=kind,
            actor=actor,
            subject=subject,
            outcome=outcome,
            details=details or {},
        )
        return self.audit_many(tx, [entry])[0]

    def audit_many(self, tx: Tx, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append several records in ``tx``, chained in order (one head read and write).

        Raises:
            KmsKeyChanged: a rekey replaced the master key; this process is sealed now.
        """
        master = self.keys.master
        try:
            return tx.append_audit_many(
                entries, mac=master.audit_mac, key_check=master.check_value().hex()
            )
        except KmsKeyChanged:
            self.seal()
            self._meta = {}  # mode and threshold may have changed too: read them afresh
            raise
