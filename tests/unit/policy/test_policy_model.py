"""Policy model: strict TOML/JSON loading; every mistake fails closed naming its key path."""

from __future__ import annotations

import json

import pytest

from sealpod.errors import MalformedPolicy
from sealpod.policy import MinTcb, Policy, SnpPolicy

FULL_TOML = """
measurements = ["00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"]
signer = "5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A5A"
product_id = 7
min_svn = 3
tees = ["sgx", "snp"]
allow_debug = false
accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded", "OutOfDate"]
accepted_advisories = ["INTEL-SA-00615"]
refused_advisories = ["INTEL-SA-00289"]
report_data = "0x0102"
allow_simulation = false

[snp]
host_data = "0707070707070707070707070707070707070707070707070707070707070707"
vmpl = 0
signing_keys = ["vcek"]
products = ["Milan", "Genoa"]
guest_policy_smt = false
guest_policy_migrate_ma = false
guest_policy_min_abi = "1.51"
require_id_key = true
min_firmware = "1.55.21"

[snp.min_tcb]
bootloader = 3
tee = 0
snp = 8
microcode = 115
"""


def test_full_toml_loads() -> None:
    policy = Policy.from_toml(FULL_TOML)
    assert policy.signer == "5a" * 32  # normalised to lower case
    assert policy.report_data == "0102"  # 0x prefix removed
    assert policy.tees == ["sgx", "snp"]
    assert policy.snp is not None and policy.snp.min_tcb == MinTcb(
        bootloader=3, tee=0, snp=8, microcode=115
    )
    assert policy.snp.min_firmware == "1.55.21"


def test_json_form_equals_toml_form() -> None:
    policy = Policy.from_toml(FULL_TOML)
    again = Policy.from_json(policy.model_dump_json())
    assert again == policy
    assert Policy.from_text(policy.model_dump_json(), json_format=True) == policy


def test_defaults_fail_closed() -> None:
    policy = Policy.from_toml("")
    assert policy.allow_debug is False
    assert policy.allow_simulation is False
    assert policy.accepted_tcb_statuses == ["UpToDate", "SWHardeningNeeded"]
    assert policy.measurements is None and policy.snp is None


@pytest.mark.parametrize(
    ("text", "path", "meant"),
    [
        ("alow_debug = true", "alow_debug", "allow_debug"),
        ("[snp]\nhost_dat = '00'", "snp.host_dat", "host_data"),
        ("[snp.min_tcb]\nbootlader = 1", "snp.min_tcb.bootlader", "bootloader"),
    ],
)
def test_a_typo_fails_closed_naming_the_key_and_what_was_meant(
    text: str, path: str, meant: str
) -> None:
    with pytest.raises(MalformedPolicy) as info:
        Policy.from_toml(text)
    assert f"{path}: unknown key (did you mean {meant!r}?)" in info.value.message
    assert "Extra inputs" not in info.value.message  # not pydantic's raw text


def test_a_release_policy_typo_names_the_table_it_meant() -> None:
    from sealpod.kms.release import parse_release_policy

    with pytest.raises(MalformedPolicy, match=r"\[relase\] looks like a typo of \[release\]"):
        parse_release_policy("p", "allow_simulation = true\n[relase]\nsecrets = ['a']\n")
    with pytest.raises(MalformedPolicy, match=r"\[release\]: secretz: unknown key \(did you"):
        parse_release_policy("p", "[release]\nsecrets = ['a']\nsecretz = ['b']\n")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('allow_debug = "yes"', "allow_debug"),
        ("min_svn = 1.5", "min_svn"),
        ("min_svn = true", "min_svn"),
        ("min_svn = -1", "min_svn"),
        ("product_id = 70000", "product_id"),
        ('tees = ["sev"]', "tees[0]"),
        ('accepted_tcb_statuses = ["Uptodate"]', "accepted_tcb_statuses[0]"),
        ('measurements = ["zz"]', "measurements"),
        ('measurements = ["00"]', "measurements"),
        ('signer = "00"', "signer"),
        ('report_data = ""', "report_data"),
        ("report_data = '" + "00" * 65 + "'", "report_data"),
        ("[snp]\nvmpl = 4", "snp.vmpl"),
        ("[snp]\nhost_data = '00'", "snp.host_data"),
        ("[snp]\nid_key_digests = ['00']", "snp.id_key_digests"),
        ("[snp]\nguest_policy_min_abi = '1'", "snp.guest_policy_min_abi"),
        ("[snp]\nmin_firmware = 'one.two'", "snp.min_firmware"),
        ('[snp]\nsigning_keys = ["ask"]', "snp.signing_keys[0]"),
        ("[snp.min_tcb]\nsnp = 256", "snp.min_tcb.snp"),
        ("snp = 1", "snp"),
    ],
)
def test_wrong_types_and_values_fail_with_the_key_path(text: str, path: str) -> None:
    with pytest.raises(MalformedPolicy) as info:
        Policy.from_toml(text)
    assert f"{path}:" in info.value.message


def test_several_problems_are_all_listed() -> None:
    with pytest.raises(MalformedPolicy) as info:
        Policy.from_toml("min_svn = 'x'\nallow_debg = true\n")
    assert "min_svn:" in info.value.message and "allow_debg:" in info.value.message


def test_bad_toml_syntax() -> None:
    with pytest.raises(MalformedPolicy, match="not valid TOML"):
        Policy.from_toml("allow_debug = ")


@pytest.mark.parametrize("text", ["{", "[]", '"x"', "NaN"])
def test_bad_json(text: str) -> None:
    with pytest.raises(MalformedPolicy):
        Policy.from_json(text)


def test_json_is_strict_too() -> None:
    with pytest.raises(MalformedPolicy, match="min_svn"):
        Policy.from_json(json.dumps({"min_svn": "3"}))
    with pytest.raises(MalformedPolicy, match="allow_debug"):
        Policy.from_json(json.dumps({"allow_debug": 1}))


def test_oversized_policy_refused() -> None:
    with pytest.raises(MalformedPolicy, match="at most"):
        Policy.from_toml("#" * (256 * 1024 + 1))


def test_policy_is_frozen() -> None:
    from pydantic import ValidationError

    policy = Policy()
    with pytest.raises(ValidationError):
        policy.allow_debug = True  # type: ignore[misc]


def test_empty_lists_are_kept_not_turned_into_none() -> None:
    policy = Policy.from_toml("measurements = []\ntees = []\naccepted_tcb_statuses = []")
    assert policy.measurements == [] and policy.tees == [] and policy.accepted_tcb_statuses == []


def test_snp_policy_normalises_digests() -> None:
    snp = SnpPolicy(id_key_digests=["AA" * 48])
    assert snp.id_key_digests == ["aa" * 48]


def test_every_toml_example_in_docs_policy_md_loads() -> None:
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[3] / "docs" / "policy.md"
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        if "[release]" in block:  # a KMS release policy: the appraisal policy plus [release]
            from sealpod.kms.release import parse_release_policy

            parse_release_policy("doc", block)
        else:
            Policy.from_toml(block)
