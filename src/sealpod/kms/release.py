"""Release policies: the verification policy model plus which secrets it releases.

A release policy document is the policy of :mod:`sealpod.policy.model` (TOML or JSON, same
fields, ``extra="forbid"``) with one extra table::

    allow_simulation = true
    measurements = ["<hex>"]

    [release]
    secrets = ["db-password", "tls"]   # what a matching workload may fetch
    token_ttl_secs = 300              # lifetime of the attestation token (<= server maximum)
    workloads = ["<hex>"]             # optional: allowed workload (container) measurements,
                                      # for CVMs whose policy pins the VM, not the container
    generate_volume_keys = false      # optional: a granted ``volume.<name>`` secret that does
                                      # not exist yet is generated (32 random bytes) at its
                                      # first release instead of refusing it as missing

The KMS evaluates every stored policy against the verified claims; the token grants the union of
the secrets of the policies with no violation.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sealpod.errors import MalformedPolicy, PolicyError
from sealpod.kms.codec import NAME_PATTERN
from sealpod.kms.models import Finding
from sealpod.policy.evaluate import evaluate
from sealpod.policy.model import Policy
from sealpod.verify.claims import TeeKind, VerifiedClaims

MAX_TOKEN_TTL_SECS = 86400
#: The secret holding volume ``NAME``'s key is ``volume.NAME``.
VOLUME_KEY_PREFIX = "volume."
VOLUME_KEY_SIZE = 32


def is_volume_key(secret: str) -> bool:
    """Whether ``secret`` names a volume key (``volume.<name>``, the name not empty)."""
    return secret.startswith(VOLUME_KEY_PREFIX) and len(secret) > len(VOLUME_KEY_PREFIX)


class ReleaseSection(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    secrets: list[Annotated[str, StringConstraints(pattern=NAME_PATTERN)]] = Field(
        min_length=1, max_length=1024
    )
    token_ttl_secs: int = Field(default=300, ge=1, le=MAX_TOKEN_TTL_SECS)
    workloads: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]] | None = None
    generate_volume_keys: bool = False

    def generates(self, secret: str) -> bool:
        """Whether this policy has the KMS generate ``secret`` at its first release."""
        return self.generate_volume_keys and is_volume_key(secret) and secret in self.secrets


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleasePolicy:
    name: str
    policy: Policy
    release: ReleaseSection
    document: dict[str, object]  # the whole document as JSON-ready data (what is stored)

    def to_json_text(self) -> str:
        return json.dumps(self.document, sort_keys=True)


def policy_version(document: str) -> str:
    """The version of a stored policy document: its SHA-256 (hex). A token carries the
    versions of the policies it was issued under; any change to a policy changes it."""
    return hashlib.sha256(document.encode()).hexdigest()


def parse_release_policy(name: str, text: str, fmt: str = "toml") -> ReleasePolicy:
    """Parse a release policy document (TOML or JSON).

    Raises:
        MalformedPolicy: syntax error, unknown field, no ``[release]`` table, bad values.
    """
    try:
        data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedPolicy(f"policy {name!r} is not valid {fmt.upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedPolicy(f"policy {name!r} is not a table/object")
    document = json.loads(json.dumps(data, default=str))
    rest = dict(document)
    release_data = rest.pop("release", None)
    if release_data is None:
        close = difflib.get_close_matches("release", [str(k) for k in rest], n=1)
        hint = f"; [{close[0]}] looks like a typo of [release]" if close else ""
        raise MalformedPolicy(f"policy {name!r} has no [release] table (secrets = [...]){hint}")
    try:
        release = ReleaseSection.model_validate(release_data)
    except ValidationError as exc:
        raise MalformedPolicy(f"policy {name!r} [release]: {_first_error(exc)}") from exc
    try:
        policy = Policy.from_json(json.dumps(rest))
    except PolicyError:
        raise
    except (ValidationError, ValueError) as exc:
        raise MalformedPolicy(f"policy {name!r}: {exc}") from exc
    return ReleasePolicy(name=name, policy=policy, release=release, document=document)


def _first_error(exc: ValidationError) -> str:
    from sealpod.spec.model import describe_error

    return describe_error(exc.errors(include_url=False)[0], ReleaseSection)


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def binding_findings(
    claims: VerifiedClaims, *, expected_report_data: bytes, workload: bytes
) -> list[Finding]:
    """Checks that do not depend on a policy: the evidence must carry the report_data the KMS
    recomputed from its nonce, the ephemeral key and the claimed workload; and where the TEE
    measures the workload itself (SGX, and simulation of SGX) the claim must be that measurement.
    """
    out: list[Finding] = []
    if not hmac.compare_digest(claims.report_data, expected_report_data):
        out.append(
            Finding(
                code="report_data_mismatch",
                message="evidence report_data is not SHA-512(domain, nonce, key, workload)",
                expected=expected_report_data.hex(),
                actual=claims.report_data.hex(),
            )
        )
    measures_workload = claims.tee is TeeKind.SGX or (
        claims.tee is TeeKind.SIM and claims.emulated in (None, TeeKind.SGX)
    )
    if measures_workload and not hmac.compare_digest(claims.measurement, workload):
        out.append(
            Finding(
                code="workload_mismatch",
                message="claimed workload measurement differs from the enclave measurement",
                expected=claims.measurement.hex(),
                actual=workload.hex(),
            )
        )
    return out


def evaluate_release(
    rp: ReleasePolicy, claims: VerifiedClaims, *, workload: bytes | None
) -> list[Finding]:
    """Every violation of ``rp`` by ``claims`` (empty: the policy matches)."""
    out = [
        Finding(
            code=v.code,
            message=v.message,
            policy=rp.name,
            expected=None if v.expected is None else str(v.expected),
            actual=None if v.actual is None else str(v.actual),
        )
        for v in evaluate(rp.policy, claims)
    ]
    allowed = rp.release.workloads
    if allowed is not None and workload is not None:
        if workload.hex() not in {w.lower() for w in allowed}:
            out.append(
                Finding(
                    code="workload_not_allowed",
                    message="workload measurement is not in [release].workloads",
                    policy=rp.name,
                    expected=", ".join(allowed),
                    actual=workload.hex(),
                )
            )
    return out


def codes(findings: Sequence[Finding]) -> list[str]:
    return sorted({f.code for f in findings})
