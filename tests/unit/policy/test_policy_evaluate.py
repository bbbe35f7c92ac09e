"""Policy evaluation: one named test per violation code, several violations at once, defaults."""

from __future__ import annotations

import dataclasses

import pytest

from sealpod.errors import PolicyViolation
from sealpod.evidence.snp_report import TcbVersion
from sealpod.policy import Code, MinTcb, Policy, SnpPolicy, Violation, enforce, evaluate
from sealpod.verify.claims import SnpFields, TcbStatus, TeeKind, VerifiedClaims

MEASUREMENT = bytes(range(32))
SIGNER = b"\x5a" * 32
SNP_MEASUREMENT = bytes(range(48))
TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115).to_u64()


def sgx_claims(**changes: object) -> VerifiedClaims:
    claims = VerifiedClaims(
        tee=TeeKind.SGX,
        measurement=MEASUREMENT,
        report_data=b"\x01" * 64,
        debug=False,
        tcb_status=TcbStatus.UP_TO_DATE,
        advisory_ids=(),
        signer=SIGNER,
        product_id=7,
        svn=3,
    )
    return dataclasses.replace(claims, **changes)  # type: ignore[arg-type]


def snp_claims(**snp_changes: object) -> VerifiedClaims:
    fields = SnpFields(
        guest_policy=0x3_0000 | 0x0134,  # ABI 1.52, nothing else allowed
        vmpl=0,
        host_data=b"\x07" * 32,
        family_id=b"\x01" * 16,
        image_id=b"\x02" * 16,
        id_key_digest=b"\x03" * 48,
        author_key_digest=bytes(48),
        chip_id=b"\x04" * 64,
        reported_tcb=TCB,
        current_tcb=TCB,
        committed_tcb=TCB,
        launch_tcb=TCB,
        platform_info=1,
        signing_key="vcek",
        product="Milan",
        report_version=3,
        firmware_major=1,
        firmware_minor=52,
        firmware_build=4,
    )
    return VerifiedClaims(
        tee=TeeKind.SNP,
        measurement=SNP_MEASUREMENT,
        report_data=b"\x02" * 64,
        debug=False,
        tcb_status=TcbStatus.UP_TO_DATE,
        svn=1,
        snp=dataclasses.replace(fields, **snp_changes),  # type: ignore[arg-type]
        platform={"firmware_major": 1, "firmware_minor": 52, "firmware_build": 4},  # display only
    )


def codes(violations: list[Violation]) -> list[str]:
    return [v.code for v in violations]


# --- defaults -----------------------------------------------------------------------------------
def test_default_policy_accepts_up_to_date_hardware_without_debug() -> None:
    assert evaluate(Policy(), sgx_claims()) == []
    assert evaluate(Policy(), snp_claims()) == []


def test_default_policy_accepts_sw_hardening_needed() -> None:
    claims = sgx_claims(tcb_status=TcbStatus.SW_HARDENING_NEEDED)
    assert evaluate(Policy(), claims) == []


def test_accept_any_tcb_status_with_none() -> None:
    policy = Policy(accepted_tcb_statuses=None)
    assert evaluate(policy, sgx_claims(tcb_status=TcbStatus.OUT_OF_DATE)) == []


# --- one named test per code --------------------------------------------------------------------
def test_simulation_not_allowed_by_default() -> None:
    claims = sgx_claims(tee=TeeKind.SIM, emulated=TeeKind.SGX)
    [v] = evaluate(Policy(), claims)
    assert v.code == "simulation_not_allowed"
    assert Code.SIMULATION_NOT_ALLOWED.value == "simulation_not_allowed"
    assert v.actual == "sim (emulating sgx)"
    assert evaluate(Policy(allow_simulation=True), claims) == []


def test_tee_not_allowed() -> None:
    [v] = evaluate(Policy(tees=["tdx", "snp"]), sgx_claims())
    assert v.code == "tee_not_allowed" and v.expected == "[tdx, snp]" and v.actual == "sgx"


def test_simulated_tee_matches_the_tee_it_emulates_or_sim() -> None:
    claims = sgx_claims(tee=TeeKind.SIM, emulated=TeeKind.SGX)
    assert evaluate(Policy(tees=["sgx"], allow_simulation=True), claims) == []
    assert evaluate(Policy(tees=["sim"], allow_simulation=True), claims) == []
    assert codes(evaluate(Policy(tees=["snp"], allow_simulation=True), claims)) == [
        "tee_not_allowed"
    ]


def test_empty_tee_list_refuses_everything() -> None:
    assert codes(evaluate(Policy(tees=[]), sgx_claims())) == ["tee_not_allowed"]


def test_debug_not_allowed_by_default() -> None:
    [v] = evaluate(Policy(), sgx_claims(debug=True))
    assert v.code == "debug_not_allowed"
    assert evaluate(Policy(allow_debug=True), sgx_claims(debug=True)) == []


def test_tcb_status_not_accepted() -> None:
    [v] = evaluate(Policy(), sgx_claims(tcb_status=TcbStatus.OUT_OF_DATE))
    assert v.code == "tcb_status_not_accepted" and v.actual == "OutOfDate"
    assert v.expected == "[UpToDate, SWHardeningNeeded]"


def test_empty_tcb_status_list_refuses_everything() -> None:
    assert codes(evaluate(Policy(accepted_tcb_statuses=[]), sgx_claims())) == [
        "tcb_status_not_accepted"
    ]


def test_advisory_not_accepted() -> None:
    claims = sgx_claims(advisory_ids=("INTEL-SA-00289", "INTEL-SA-00615"))
    violations = evaluate(Policy(accepted_advisories=["INTEL-SA-00615"]), claims)
    assert codes(violations) == ["advisory_not_accepted"]
    assert violations[0].actual == "INTEL-SA-00289"


def test_advisories_not_checked_when_none() -> None:
    claims = sgx_claims(advisory_ids=("INTEL-SA-00289",))
    assert evaluate(Policy(), claims) == []


def test_advisory_refused() -> None:
    claims = sgx_claims(advisory_ids=("INTEL-SA-00289", "INTEL-SA-00615"))
    violations = evaluate(Policy(refused_advisories=["INTEL-SA-00615", "X"]), claims)
    assert codes(violations) == ["advisory_refused"] and violations[0].actual == "INTEL-SA-00615"


def test_measurement_not_allowed() -> None:
    other = "ab" * 32
    [v] = evaluate(Policy(measurements=[other]), sgx_claims())
    assert v.code == "measurement_not_allowed" and v.actual == MEASUREMENT.hex()
    assert evaluate(Policy(measurements=[other, MEASUREMENT.hex().upper()]), sgx_claims()) == []


def test_empty_measurement_list_refuses_everything() -> None:
    [v] = evaluate(Policy(measurements=[]), sgx_claims())
    assert v.code == "measurement_not_allowed" and "nothing allowed" in (v.expected or "")


def test_signer_mismatch() -> None:
    [v] = evaluate(Policy(signer="00" * 32), sgx_claims())
    assert v.code == "signer_mismatch" and v.actual == SIGNER.hex()


def test_signer_required_but_absent_fails_closed() -> None:
    [v] = evaluate(Policy(signer=SIGNER.hex()), snp_claims())
    assert v.code == "signer_mismatch" and v.actual == "none"


def test_product_id_mismatch() -> None:
    [v] = evaluate(Policy(product_id=8), sgx_claims())
    assert v.code == "product_id_mismatch" and (v.expected, v.actual) == ("8", "7")


def test_svn_too_low() -> None:
    [v] = evaluate(Policy(min_svn=4), sgx_claims())
    assert v.code == "svn_too_low" and v.expected == ">= 4" and v.actual == "3"
    assert evaluate(Policy(min_svn=3), sgx_claims()) == []


def test_report_data_mismatch_policy_and_expected() -> None:
    policy = Policy(report_data="01" * 64)
    assert evaluate(policy, sgx_claims()) == []
    assert codes(evaluate(Policy(report_data="0101"), sgx_claims())) == ["report_data_mismatch"]
    assert evaluate(Policy(), sgx_claims(), expected_report_data=b"\x01" * 64) == []
    [v] = evaluate(Policy(), sgx_claims(), expected_report_data=b"\x02" * 32)
    assert v.code == "report_data_mismatch"
    assert v.expected == ("02" * 32) + "00" * 32


def test_snp_host_data_mismatch() -> None:
    [v] = evaluate(Policy(snp=SnpPolicy(host_data="00" * 32)), snp_claims())
    assert v.code == "snp_host_data_mismatch" and v.actual == "07" * 32
    assert evaluate(Policy(snp=SnpPolicy(host_data="07" * 32)), snp_claims()) == []


def test_snp_family_id_mismatch() -> None:
    policy = Policy(snp=SnpPolicy(family_id="ff" * 16, image_id="02" * 16))
    assert codes(evaluate(policy, snp_claims())) == ["snp_family_id_mismatch"]


def test_snp_image_id_mismatch() -> None:
    policy = Policy(snp=SnpPolicy(family_id="01" * 16, image_id="ff" * 16))
    assert codes(evaluate(policy, snp_claims())) == ["snp_image_id_mismatch"]


def test_snp_id_key_required() -> None:
    policy = Policy(snp=SnpPolicy(require_id_key=True))
    assert evaluate(policy, snp_claims()) == []
    assert codes(evaluate(policy, snp_claims(id_key_digest=bytes(48)))) == ["snp_id_key_required"]


def test_snp_id_key_not_allowed() -> None:
    policy = Policy(snp=SnpPolicy(id_key_digests=["aa" * 48]))
    assert codes(evaluate(policy, snp_claims())) == ["snp_id_key_not_allowed"]


def test_snp_author_key_not_allowed() -> None:
    policy = Policy(snp=SnpPolicy(author_key_digests=["aa" * 48]))
    assert codes(evaluate(policy, snp_claims())) == ["snp_author_key_not_allowed"]


def test_snp_vmpl_mismatch() -> None:
    [v] = evaluate(Policy(snp=SnpPolicy(vmpl=0)), snp_claims(vmpl=2))
    assert v.code == "snp_vmpl_mismatch" and (v.expected, v.actual) == ("0", "2")


def test_snp_signing_key_not_allowed() -> None:
    policy = Policy(snp=SnpPolicy(signing_keys=["vcek"]))
    assert codes(evaluate(policy, snp_claims(signing_key="vlek"))) == [
        "snp_signing_key_not_allowed"
    ]


def test_snp_product_not_allowed() -> None:
    policy = Policy(snp=SnpPolicy(products=["Genoa", "Turin"]))
    assert codes(evaluate(policy, snp_claims())) == ["snp_product_not_allowed"]


def test_snp_guest_policy_mismatch() -> None:
    policy = Policy(snp=SnpPolicy(guest_policy_smt=False, guest_policy_migrate_ma=False))
    violations = evaluate(policy, snp_claims(guest_policy=0x3_0000 | 1 << 16 | 1 << 18))
    assert codes(violations) == ["snp_guest_policy_mismatch"] * 2
    assert violations[0].expected == "smt false" and violations[0].actual == "smt true"
    required = Policy(snp=SnpPolicy(guest_policy_single_socket=True))
    assert codes(evaluate(required, snp_claims())) == ["snp_guest_policy_mismatch"]


def test_snp_abi_too_low() -> None:
    policy = Policy(snp=SnpPolicy(guest_policy_min_abi="1.53"))
    [v] = evaluate(policy, snp_claims())
    assert v.code == "snp_abi_too_low" and v.actual == "1.52"
    assert evaluate(Policy(snp=SnpPolicy(guest_policy_min_abi="1.52")), snp_claims()) == []


def test_snp_tcb_too_low() -> None:
    policy = Policy(snp=SnpPolicy(min_tcb=MinTcb(snp=9, microcode=100)))
    violations = evaluate(policy, snp_claims())
    # reported, current and committed TCB are all below on the snp component.
    assert codes(violations) == ["snp_tcb_too_low"] * 3
    assert (
        violations[0].expected == "reported snp >= 9" and violations[0].actual == "reported snp 8"
    )
    assert evaluate(Policy(snp=SnpPolicy(min_tcb=MinTcb(snp=8))), snp_claims()) == []


def test_snp_tcb_fmc_only_checked_on_turin() -> None:
    turin_tcb = TcbVersion(fmc=1, bootloader=2, tee=0, snp=5, microcode=9).to_u64()
    turin = snp_claims(
        product="Turin", reported_tcb=turin_tcb, current_tcb=turin_tcb, committed_tcb=turin_tcb
    )
    policy = Policy(snp=SnpPolicy(min_tcb=MinTcb(fmc=2)))
    assert codes(evaluate(policy, turin)) == ["snp_tcb_too_low"] * 3
    assert evaluate(policy, snp_claims()) == []  # Milan has no FMC component


def test_snp_firmware_too_low() -> None:
    assert codes(evaluate(Policy(snp=SnpPolicy(min_firmware="1.53")), snp_claims())) == [
        "snp_firmware_too_low"
    ]
    assert codes(evaluate(Policy(snp=SnpPolicy(min_firmware="1.52.5")), snp_claims())) == [
        "snp_firmware_too_low"
    ]
    assert evaluate(Policy(snp=SnpPolicy(min_firmware="1.52.4")), snp_claims()) == []


def test_snp_firmware_is_read_from_the_typed_fields_not_the_display_facts() -> None:
    # platform is for display: a claim there that the firmware is new changes nothing.
    claims = dataclasses.replace(
        snp_claims(), platform={"firmware_major": 9, "firmware_minor": 99, "firmware_build": 9}
    )
    [v] = evaluate(Policy(snp=SnpPolicy(min_firmware="1.53")), claims)
    assert v.code == "snp_firmware_too_low" and v.actual == "1.52"
    assert (
        evaluate(Policy(snp=SnpPolicy(min_firmware="1.52.4")), snp_claims(firmware_build=4)) == []
    )
    assert codes(
        evaluate(Policy(snp=SnpPolicy(min_firmware="1.52.4")), snp_claims(firmware_build=3))
    ) == ["snp_firmware_too_low"]
    no_facts = dataclasses.replace(snp_claims(), platform={})
    assert evaluate(Policy(snp=SnpPolicy(min_firmware="1.52")), no_facts) == []


def test_snp_claims_missing() -> None:
    claims = dataclasses.replace(snp_claims(), snp=None)
    assert codes(evaluate(Policy(snp=SnpPolicy()), claims)) == ["snp_claims_missing"]


def test_snp_section_does_not_apply_to_other_tees() -> None:
    assert evaluate(Policy(snp=SnpPolicy(vmpl=3)), sgx_claims()) == []


def test_snp_section_applies_to_simulated_snp() -> None:
    claims = dataclasses.replace(snp_claims(vmpl=1), tee=TeeKind.SIM, emulated=TeeKind.SNP)
    policy = Policy(allow_simulation=True, snp=SnpPolicy(vmpl=0))
    assert codes(evaluate(policy, claims)) == ["snp_vmpl_mismatch"]


def test_every_code_has_a_named_test_here() -> None:
    names = [name for name in globals() if name.startswith("test_")]
    for code in Code:
        assert any(name.startswith(f"test_{code.value}") for name in names), code


# --- several at once, enforce -------------------------------------------------------------------
def test_evaluate_returns_every_violation_at_once() -> None:
    claims = sgx_claims(
        tee=TeeKind.SIM,
        emulated=TeeKind.SGX,
        debug=True,
        tcb_status=TcbStatus.OUT_OF_DATE,
        svn=1,
        advisory_ids=("INTEL-SA-00001",),
    )
    policy = Policy(
        measurements=["00" * 32],
        signer="00" * 32,
        product_id=1,
        min_svn=2,
        tees=["tdx"],
        accepted_advisories=[],
        report_data="ff",
    )
    assert codes(evaluate(policy, claims)) == [
        "simulation_not_allowed",
        "tee_not_allowed",
        "debug_not_allowed",
        "tcb_status_not_accepted",
        "advisory_not_accepted",
        "measurement_not_allowed",
        "signer_mismatch",
        "product_id_mismatch",
        "svn_too_low",
        "report_data_mismatch",
    ]


def test_enforce_raises_policy_violation_with_all_violations() -> None:
    with pytest.raises(PolicyViolation) as info:
        enforce(Policy(min_svn=9), sgx_claims(debug=True))
    assert [v.code for v in info.value.violations] == [  # type: ignore[attr-defined]
        "debug_not_allowed",
        "svn_too_low",
    ]
    assert info.value.exit_code == 13
    assert info.value.to_dict()["violations"] == [
        "debug_not_allowed: the workload runs in debug mode (its memory is readable by the host)"
        " (expected debug false, actual debug true)",
        "svn_too_low: security version is below the policy's minimum (expected >= 9, actual 3)",
    ]


def test_enforce_passes_silently() -> None:
    enforce(Policy(), sgx_claims())


def test_violation_to_dict() -> None:
    v = Violation(code="x", message="m", expected="e", actual="a")
    assert v.to_dict() == {"code": "x", "message": "m", "expected": "e", "actual": "a"}
    assert str(Violation(code="x", message="m")) == "x: m"
