"""The exception tree of sealpod.

Every error sealpod raises on purpose derives from :class:`SealpodError`. Each family has a stable
``code`` prefix (used in ``--json`` output and in the KMS's problem JSON) and one CLI exit code.
Foreign exceptions (``struct.error``, pydantic ``ValidationError``, ``InvalidSignature``, OS errors)
are wrapped exactly once, with ``raise X(...) from exc``. Messages never contain secret values.

    SealpodError                         exit 1   "error"
    ├── ConfigError                      exit 2   "config"      bad settings, CLI input or key file
    ├── SpecError                        exit 3   "spec"        pod spec (sealpod.toml) invalid
    ├── ToolError                        exit 1   "tool"        an external build tool (mmdebstrap,
    │                                                           pip) is missing or failed
    ├── BundleError                      exit 4   "bundle"
    │   ├── ArchiveError                          "bundle.archive"    hostile / malformed image
    │   ├── BundleIntegrityError                  "bundle.integrity"  files differ from manifest
    │   └── SignatureError                        "bundle.signature"  signature or signer wrong
    ├── CryptoError                      exit 5   "crypto"      key loading, unwrap, decryption
    ├── EvidenceError                    exit 10  "evidence"
    │   └── MalformedEvidence                     "evidence.malformed"  (field, offset)
    ├── CollateralError                  exit 11  "collateral"
    │   ├── MalformedCollateral                   "collateral.malformed"
    │   └── CollateralUnavailable                 "collateral.unavailable"
    ├── VerificationError                exit 12  "verify"      (step, expected, actual)
    │   ├── UntrustedRoot                         "verify.untrusted_root"
    │   ├── CertificateError                      "verify.certificate"   chain / signature
    │   ├── ValidityError                         "verify.validity"      expired / not yet valid
    │   ├── RevokedError                          "verify.revoked"
    │   ├── EvidenceSignatureError                "verify.signature"     quote / report signature
    │   ├── IdentityMismatch                      "verify.mismatch"      FMSPC, PCEID, hwID, QE id
    │   ├── KeyBindingError                       "verify.binding"       RA-TLS evidence, other key
    │   └── TcbError                              "verify.tcb"
    │       └── NoMatchingTcbLevel                "verify.tcb.no_match"
    ├── PolicyError                      exit 13  "policy"
    │   ├── MalformedPolicy                       "policy.malformed"
    │   └── PolicyViolation                       "policy.violation"   (violations)
    ├── TeeError                         exit 14  "tee"
    │   ├── TeeUnavailable                        "tee.unavailable"
    │   │   └── PeerUnreachable                   "tee.unreachable"  RA-TLS server, network
    │   ├── EvidenceGenerationError               "tee.generation"
    │   ├── SandboxError                          "tee.sandbox"  bwrap missing or failed
    │   └── AgentError                            "tee.agent"    the sealpod agent refused or
    │                                                           is not running
    ├── VolumeError                      exit 15  "volume"
    │   ├── VolumeCorrupt                         "volume.corrupt"   corrupt OR wrong key (alike)
    │   ├── RollbackDetected                      "volume.rollback"
    │   └── VolumeFormatError                     "volume.format"    not a volume, bad version
    └── KmsError                         exit 16  "kms"
        ├── KmsUnavailable                        "kms.unavailable"  network, 503, sealed
        │   └── KmsKeyChanged                     "kms.key_changed"  a rekey replaced the key
        ├── KmsAuthError                          "kms.auth"         401: no / bad credentials
        │   └── KmsForbidden                      "kms.forbidden"    403: role does not allow it
        ├── KmsNotFound                           "kms.not_found"
        ├── KmsConflict                           "kms.conflict"
        │   └── VolumeCounterConflict             "kms.volume_rollback" (volume_id, counter)
        ├── NonceError                            "kms.nonce"        unknown, replayed, expired
        ├── CheckpointInvalid                     "kms.checkpoint"   audit checkpoint forged
        └── AttestationRefused                    "kms.refused"      (violations)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class SealpodError(Exception):
    """Root of every error sealpod raises on purpose."""

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description: ``{"code", "message"}`` plus subclass details."""
        return {"code": self.code, "message": self.message}


# --- configuration and input -------------------------------------------------------------------
class ConfigError(SealpodError):
    code = "config"
    exit_code = 2


class SpecError(SealpodError):
    code = "spec"
    exit_code = 3


class ToolError(SealpodError):
    """An external tool sealpod drives (mmdebstrap, pip) is missing or failed; the message
    quotes its last lines."""

    code = "tool"


# --- bundles ------------------------------------------------------------------------------------
class BundleError(SealpodError):
    code = "bundle"
    exit_code = 4


class ArchiveError(BundleError):
    code = "bundle.archive"


class BundleIntegrityError(BundleError):
    """The bundle's files differ from its manifest. ``differences`` lists every one."""

    code = "bundle.integrity"

    def __init__(self, message: str, differences: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.differences = tuple(differences)


class SignatureError(BundleError):
    code = "bundle.signature"


class CryptoError(SealpodError):
    code = "crypto"
    exit_code = 5


# --- evidence, collateral, verification ---------------------------------------------------------
class EvidenceError(SealpodError):
    code = "evidence"
    exit_code = 10


class MalformedEvidence(EvidenceError):
    """Evidence bytes do not parse. Names the field and its offset where known."""

    code = "evidence.malformed"

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.field = field
        self.offset = offset

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "field": self.field, "offset": self.offset}


class CollateralError(SealpodError):
    code = "collateral"
    exit_code = 11


class MalformedCollateral(CollateralError):
    code = "collateral.malformed"


class CollateralUnavailable(CollateralError):
    code = "collateral.unavailable"


class VerificationError(SealpodError):
    """Evidence failed a verification step. ``step`` names it ("Step 3: QE report signature")."""

    code = "verify"
    exit_code = 12

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.expected = expected
        self.actual = actual

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        if self.step is not None:
            d["step"] = self.step
        if self.expected is not None:
            d["expected"] = str(self.expected)
        if self.actual is not None:
            d["actual"] = str(self.actual)
        return d


class UntrustedRoot(VerificationError):
    code = "verify.untrusted_root"


class CertificateError(VerificationError):
    code = "verify.certificate"


class ValidityError(VerificationError):
    code = "verify.validity"


class RevokedError(VerificationError):
    code = "verify.revoked"


class EvidenceSignatureError(VerificationError):
    code = "verify.signature"


class IdentityMismatch(VerificationError):
    code = "verify.mismatch"


class KeyBindingError(VerificationError):
    """RA-TLS: the certificate's evidence does not bind the certificate's (or the TLS) key."""

    code = "verify.binding"


class TcbError(VerificationError):
    code = "verify.tcb"


class NoMatchingTcbLevel(TcbError):
    code = "verify.tcb.no_match"


# --- policy -------------------------------------------------------------------------------------
class PolicyError(SealpodError):
    code = "policy"
    exit_code = 13


class MalformedPolicy(PolicyError):
    code = "policy.malformed"


class PolicyViolation(PolicyError):
    """Claims failed a policy. ``violations`` holds every violation, not only the first."""

    code = "policy.violation"

    def __init__(self, message: str, violations: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "violations": [str(v) for v in self.violations]}


# --- evidence generation ------------------------------------------------------------------------
class TeeError(SealpodError):
    code = "tee"
    exit_code = 14


class TeeUnavailable(TeeError):
    code = "tee.unavailable"


class PeerUnreachable(TeeUnavailable):
    """An RA-TLS server (an attested workload) could not be reached or the handshake failed."""

    code = "tee.unreachable"


class EvidenceGenerationError(TeeError):
    code = "tee.generation"


class SandboxError(TeeError):
    """The sandbox a pod runs in cannot be set up (bubblewrap missing, a namespace refused):
    the pod never starts without the isolation it was asked to have."""

    code = "tee.sandbox"


class AgentError(TeeError):
    """The sealpod agent (``sealpod agent serve``) is not running where it must be, refused a
    request, or a message to or from it is malformed (docs/agent.md)."""

    code = "tee.agent"


# --- volumes ------------------------------------------------------------------------------------
class VolumeError(SealpodError):
    code = "volume"
    exit_code = 15


class VolumeCorrupt(VolumeError):
    """Integrity check failed. Deliberately the same error for tampering and for a wrong key."""

    code = "volume.corrupt"


class RollbackDetected(VolumeError):
    """An older copy of a volume than its counter store records (or another volume in its
    place). From the KMS's counter (:mod:`sealpod.kms.volumes`), ``volume_id`` and
    ``counter`` say what the KMS holds."""

    code = "volume.rollback"

    def __init__(
        self, message: str, *, volume_id: str | None = None, counter: int | None = None
    ) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.counter = counter

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        if self.counter is not None:
            out.update(stored_volume_id=self.volume_id, stored_counter=self.counter)
        return out


class VolumeFormatError(VolumeError):
    code = "volume.format"


# --- key broker ---------------------------------------------------------------------------------
class KmsError(SealpodError):
    code = "kms"
    exit_code = 16


class KmsUnavailable(KmsError):
    code = "kms.unavailable"


class KmsKeyChanged(KmsUnavailable):
    """The database is under another master key than the one this process unsealed with
    (``sealpod kms rekey`` ran): the process seals itself rather than write under the old key."""

    code = "kms.key_changed"


class KmsAuthError(KmsError):
    code = "kms.auth"


class UnknownSigningKey(KmsAuthError):
    """A token names a signing key (``kid``) this process does not hold: another replica may
    have rotated the key, so the caller may reload the keys once and retry (and a client may
    retry once, a moment later: :data:`sealpod.kms.wire.UNKNOWN_KEY_RETRY_SECS`)."""

    code = "kms.auth.unknown_key"


class KmsForbidden(KmsAuthError):
    """Authenticated, but the caller's role (or token) does not allow this operation."""

    code = "kms.forbidden"


class KmsNotFound(KmsError):
    code = "kms.not_found"


class KmsConflict(KmsError):
    code = "kms.conflict"


class VolumeCounterConflict(KmsConflict):
    """A volume counter compare-and-swap lost: the KMS holds another counter or another
    volume under that name (409). ``volume_id`` and ``counter`` are what it holds; a client
    turns this into :class:`RollbackDetected`."""

    code = "kms.volume_rollback"

    def __init__(self, message: str, *, volume_id: str | None, counter: int) -> None:
        super().__init__(message)
        self.volume_id = volume_id
        self.counter = counter

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "volume_id": self.volume_id, "counter": self.counter}


class NonceError(KmsError):
    code = "kms.nonce"


class CheckpointInvalid(KmsError):
    """An audit checkpoint is malformed, or not signed by one of the given KMS keys."""

    code = "kms.checkpoint"


class AttestationRefused(KmsError):
    """The KMS refused an attestation; ``violations`` are the stable codes it gave."""

    code = "kms.refused"

    def __init__(self, message: str, violations: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "violations": [str(v) for v in self.violations]}
