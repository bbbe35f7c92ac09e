"""Apply a :class:`~sealpod.policy.model.Policy` to verified claims: every violation, not the first.

``evaluate`` is pure and total: it never raises for a claim it dislikes, it lists why. Each
violation carries a stable ``code`` (for programs, audit logs and the KMS's 403 responses), a
plain-words message, and the expected and actual values. :func:`enforce` raises
:class:`~sealpod.errors.PolicyViolation` with all of them when the list is not empty.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealpod.errors import PolicyViolation
from sealpod.evidence.snp_report import GuestPolicy, TcbVersion
from sealpod.policy.model import MinTcb, Policy, SnpPolicy, parse_version
from sealpod.verify.claims import SnpFields, TeeKind, VerifiedClaims


class Code(enum.StrEnum):
    """Stable violation codes. Never renamed: clients and audit records depend on them."""

    SIMULATION_NOT_ALLOWED = "simulation_not_allowed"
    TEE_NOT_ALLOWED = "tee_not_allowed"
    DEBUG_NOT_ALLOWED = "debug_not_allowed"
    TCB_STATUS_NOT_ACCEPTED = "tcb_status_not_accepted"
    ADVISORY_NOT_ACCEPTED = "advisory_not_accepted"
    ADVISORY_REFUSED = "advisory_refused"
    MEASUREMENT_NOT_ALLOWED = "measurement_not_allowed"
    SIGNER_MISMATCH = "signer_mismatch"
    PRODUCT_ID_MISMATCH = "product_id_mismatch"
    SVN_TOO_LOW = "svn_too_low"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    SNP_CLAIMS_MISSING = "snp_claims_missing"
    SNP_HOST_DATA_MISMATCH = "snp_host_data_mismatch"
    SNP_FAMILY_ID_MISMATCH = "snp_family_id_mismatch"
    SNP_IMAGE_ID_MISMATCH = "snp_image_id_mismatch"
    SNP_ID_KEY_REQUIRED = "snp_id_key_required"
    SNP_ID_KEY_NOT_ALLOWED = "snp_id_key_not_allowed"
    SNP_AUTHOR_KEY_NOT_ALLOWED = "snp_author_key_not_allowed"
    SNP_VMPL_MISMATCH = "snp_vmpl_mismatch"
    SNP_SIGNING_KEY_NOT_ALLOWED = "snp_signing_key_not_allowed"
    SNP_PRODUCT_NOT_ALLOWED = "snp_product_not_allowed"
    SNP_GUEST_POLICY_MISMATCH = "snp_guest_policy_mismatch"
    SNP_ABI_TOO_LOW = "snp_abi_too_low"
    SNP_TCB_TOO_LOW = "snp_tcb_too_low"
    SNP_FIRMWARE_TOO_LOW = "snp_firmware_too_low"


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One reason the claims fail the policy."""

    code: str
    message: str
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        detail = ""
        if self.expected is not None or self.actual is not None:
            detail = f" (expected {self.expected}, actual {self.actual})"
        return f"{self.code}: {self.message}{detail}"

    def to_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "message": self.message,
            "expected": self.expected,
            "actual": self.actual,
        }


_Add = Callable[[Violation], None]


def evaluate(
    policy: Policy, claims: VerifiedClaims, *, expected_report_data: bytes | None = None
) -> list[Violation]:
    """Every way ``claims`` fail ``policy`` (an empty list means accepted).

    ``expected_report_data`` (e.g. the KMS's recomputed nonce binding) must equal the claims'
    report data, zero-padded to 64 bytes; it is checked in addition to ``policy.report_data``.
    """
    out: list[Violation] = []
    add = out.append
    tee = claims.tee
    effective = claims.emulated if tee is TeeKind.SIM and claims.emulated else tee

    if tee is TeeKind.SIM and not policy.allow_simulation:
        add(
            Violation(
                code=Code.SIMULATION_NOT_ALLOWED,
                message="evidence comes from the SIMULATED platform (no hardware protection) "
                "and the policy does not set allow_simulation",
                expected="hardware TEE",
                actual=f"sim (emulating {claims.emulated.value if claims.emulated else '?'})",
            )
        )
    if (
        policy.tees is not None
        and tee.value not in policy.tees
        and effective.value not in policy.tees
    ):
        add(
            Violation(
                code=Code.TEE_NOT_ALLOWED,
                message=f"TEE {tee.value} is not among the allowed TEEs",
                expected=_list(policy.tees),
                actual=tee.value if tee is effective else f"{tee.value} ({effective.value})",
            )
        )
    if claims.debug and not policy.allow_debug:
        add(
            Violation(
                code=Code.DEBUG_NOT_ALLOWED,
                message="the workload runs in debug mode (its memory is readable by the host)",
                expected="debug false",
                actual="debug true",
            )
        )
    statuses = policy.accepted_tcb_statuses
    if statuses is not None and claims.tcb_status.value not in statuses:
        add(
            Violation(
                code=Code.TCB_STATUS_NOT_ACCEPTED,
                message=f"platform TCB status {claims.tcb_status.value} is not accepted",
                expected=_list(statuses),
                actual=claims.tcb_status.value,
            )
        )
    _advisories(policy, claims, add)
    _identity(policy, claims, add)
    _report_data(policy, claims, expected_report_data, add)
    if policy.snp is not None and effective is TeeKind.SNP:
        if claims.snp is None:
            add(
                Violation(
                    code=Code.SNP_CLAIMS_MISSING,
                    message="claims of an SNP TEE carry no SNP fields",
                    expected="SNP fields",
                    actual="none",
                )
            )
        else:
            _snp(policy.snp, claims.snp, add)
    return out


def enforce(
    policy: Policy, claims: VerifiedClaims, *, expected_report_data: bytes | None = None
) -> None:
    """Raise if :func:`evaluate` finds any violation.

    Raises:
        PolicyViolation: with every violation in ``violations``.
    """
    violations = evaluate(policy, claims, expected_report_data=expected_report_data)
    if violations:
        codes = ", ".join(v.code for v in violations)
        raise PolicyViolation(f"claims violate the policy: {codes}", violations)


# --- groups of checks ---------------------------------------------------------------------------
def _advisories(policy: Policy, claims: VerifiedClaims, add: _Add) -> None:
    if policy.accepted_advisories is not None:
        accepted = set(policy.accepted_advisories)
        for advisory in claims.advisory_ids:
            if advisory not in accepted:
                add(
                    Violation(
                        code=Code.ADVISORY_NOT_ACCEPTED,
                        message=f"platform is affected by advisory {advisory}, "
                        "which the policy does not accept",
                        expected=_list(policy.accepted_advisories),
                        actual=advisory,
                    )
                )
    if policy.refused_advisories is not None:
        refused = set(policy.refused_advisories)
        for advisory in claims.advisory_ids:
            if advisory in refused:
                add(
                    Violation(
                        code=Code.ADVISORY_REFUSED,
                        message=f"platform is affected by advisory {advisory}, "
                        "which the policy refuses",
                        expected=f"none of {_list(policy.refused_advisories)}",
                        actual=advisory,
                    )
                )


def _identity(policy: Policy, claims: VerifiedClaims, add: _Add) -> None:
    if policy.measurements is not None and claims.measurement.hex() not in policy.measurements:
        add(
            Violation(
                code=Code.MEASUREMENT_NOT_ALLOWED,
                message="measurement is not among the allowed measurements",
                expected=_list(policy.measurements),
                actual=claims.measurement.hex(),
            )
        )
    if policy.signer is not None:
        actual = claims.signer.hex() if claims.signer is not None else None
        if actual != policy.signer:
            add(
                Violation(
                    code=Code.SIGNER_MISMATCH,
                    message="signer identity differs from the policy's"
                    if actual
                    else "evidence carries no signer identity",
                    expected=policy.signer,
                    actual=actual or "none",
                )
            )
    if policy.product_id is not None and claims.product_id != policy.product_id:
        add(
            Violation(
                code=Code.PRODUCT_ID_MISMATCH,
                message="product id differs from the policy's",
                expected=str(policy.product_id),
                actual=str(claims.product_id),
            )
        )
    if policy.min_svn is not None and (claims.svn is None or claims.svn < policy.min_svn):
        add(
            Violation(
                code=Code.SVN_TOO_LOW,
                message="security version is below the policy's minimum",
                expected=f">= {policy.min_svn}",
                actual=str(claims.svn),
            )
        )


def _report_data(policy: Policy, claims: VerifiedClaims, expected: bytes | None, add: _Add) -> None:
    wanted: list[tuple[str, bytes]] = []
    if policy.report_data is not None:
        wanted.append(("policy report_data", bytes.fromhex(policy.report_data)))
    if expected is not None:
        wanted.append(("expected report data", expected))
    for what, value in wanted:
        padded = value.ljust(64, b"\x00") if len(value) <= 64 else value
        if claims.report_data != padded:
            add(
                Violation(
                    code=Code.REPORT_DATA_MISMATCH,
                    message=f"report data differs from the {what}",
                    expected=padded.hex(),
                    actual=claims.report_data.hex(),
                )
            )


def _snp(p: SnpPolicy, snp: SnpFields, add: _Add) -> None:
    for code, name, want, have in (
        (Code.SNP_HOST_DATA_MISMATCH, "host_data", p.host_data, snp.host_data),
        (Code.SNP_FAMILY_ID_MISMATCH, "family_id", p.family_id, snp.family_id),
        (Code.SNP_IMAGE_ID_MISMATCH, "image_id", p.image_id, snp.image_id),
    ):
        if want is not None and have.hex() != want:
            add(Violation(code=code, message=f"{name} differs", expected=want, actual=have.hex()))
    if p.require_id_key and not any(snp.id_key_digest):
        add(
            Violation(
                code=Code.SNP_ID_KEY_REQUIRED,
                message="the guest was launched without an ID block key",
                expected="an ID key digest",
                actual="none (zero)",
            )
        )
    for code, name, allowed, have in (
        (Code.SNP_ID_KEY_NOT_ALLOWED, "ID key", p.id_key_digests, snp.id_key_digest),
        (
            Code.SNP_AUTHOR_KEY_NOT_ALLOWED,
            "author key",
            p.author_key_digests,
            snp.author_key_digest,
        ),
    ):
        if allowed is not None and have.hex() not in allowed:
            add(
                Violation(
                    code=code,
                    message=f"{name} digest is not among the allowed digests",
                    expected=_list(allowed),
                    actual=have.hex(),
                )
            )
    if p.vmpl is not None and snp.vmpl != p.vmpl:
        add(
            Violation(
                code=Code.SNP_VMPL_MISMATCH,
                message="the report was requested at another VMPL",
                expected=str(p.vmpl),
                actual=str(snp.vmpl),
            )
        )
    if p.signing_keys is not None and snp.signing_key not in p.signing_keys:
        add(
            Violation(
                code=Code.SNP_SIGNING_KEY_NOT_ALLOWED,
                message=f"report signed by a {snp.signing_key.upper()}, which is not allowed",
                expected=_list(p.signing_keys),
                actual=snp.signing_key,
            )
        )
    if p.products is not None and snp.product not in p.products:
        add(
            Violation(
                code=Code.SNP_PRODUCT_NOT_ALLOWED,
                message=f"processor product {snp.product} is not allowed",
                expected=_list(p.products),
                actual=snp.product,
            )
        )
    _guest_policy(p, GuestPolicy.from_u64(snp.guest_policy), add)
    if p.min_tcb is not None:
        turin = snp.product == "Turin"
        for which, raw in (
            ("reported", snp.reported_tcb),
            ("current", snp.current_tcb),
            ("committed", snp.committed_tcb),
        ):
            _min_tcb(p.min_tcb, which, TcbVersion.from_u64(raw, turin=turin), add)
    if p.min_firmware is not None:
        _min_firmware(p.min_firmware, snp, add)


_GUEST_POLICY_BITS = (
    "smt",
    "migrate_ma",
    "single_socket",
    "cxl_allowed",
    "mem_aes_256_xts",
    "rapl_dis",
    "ciphertext_hiding_dram",
    "page_swap_disable",
)


def _guest_policy(p: SnpPolicy, gp: GuestPolicy, add: _Add) -> None:
    for name in _GUEST_POLICY_BITS:
        want = getattr(p, f"guest_policy_{name}")
        have = getattr(gp, name)
        if want is not None and want != have:
            add(
                Violation(
                    code=Code.SNP_GUEST_POLICY_MISMATCH,
                    message=f"guest policy bit {name.upper()} is {int(have)}",
                    expected=f"{name} {str(want).lower()}",
                    actual=f"{name} {str(have).lower()}",
                )
            )
    if p.guest_policy_min_abi is not None:
        want_abi = parse_version(p.guest_policy_min_abi, parts=(2,), what="guest_policy_min_abi")
        if (gp.abi_major, gp.abi_minor) < want_abi:
            add(
                Violation(
                    code=Code.SNP_ABI_TOO_LOW,
                    message="the guest policy allows an older firmware ABI than required",
                    expected=f">= {p.guest_policy_min_abi}",
                    actual=f"{gp.abi_major}.{gp.abi_minor}",
                )
            )


def _min_tcb(minimum: MinTcb, which: str, tcb: TcbVersion, add: _Add) -> None:
    for name in ("bootloader", "tee", "snp", "microcode", "fmc"):
        want = getattr(minimum, name)
        have = getattr(tcb, name)
        if want is None or (name == "fmc" and have is None):
            continue
        if have < want:
            add(
                Violation(
                    code=Code.SNP_TCB_TOO_LOW,
                    message=f"{which} TCB component {name} is below the policy's minimum",
                    expected=f"{which} {name} >= {want}",
                    actual=f"{which} {name} {have}",
                )
            )


def _min_firmware(text: str, snp: SnpFields, add: _Add) -> None:
    want = parse_version(text, parts=(2, 3), what="min_firmware")
    # The firmware that produced the report (CURRENT_*), compared on as many parts as given.
    have = (snp.firmware_major, snp.firmware_minor, snp.firmware_build)[: len(want)]
    if have < want:
        add(
            Violation(
                code=Code.SNP_FIRMWARE_TOO_LOW,
                message="SNP firmware is older than the policy's minimum",
                expected=f">= {text}",
                actual=".".join(str(x) for x in have),
            )
        )


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(items) + "]" if items else "[] (nothing allowed)"
