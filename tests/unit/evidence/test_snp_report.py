"""SEV-SNP report codec: layouts v2/v3/v5, decoded views, structural refusals."""

from __future__ import annotations

import dataclasses

import pytest

from sealpod.errors import MalformedEvidence
from sealpod.evidence.snp_report import (
    REPORT_SIZE,
    SIGNED_SIZE,
    GuestPolicy,
    PlatformInfo,
    SigningKey,
    SnpProduct,
    SnpReport,
    TcbVersion,
    parse_report,
    product_from_cpuid,
    tcb_reserved_bytes,
)

MILAN_TCB = TcbVersion(bootloader=3, tee=0, snp=8, microcode=115).to_u64()
TURIN_TCB = TcbVersion(fmc=1, bootloader=2, tee=3, snp=4, microcode=9).to_u64()


def make_report(**fields: object) -> SnpReport:
    """A v5 Turin report with distinct non-zero values in every field (unsigned)."""
    base: dict[str, object] = {
        "version": 5,
        "guest_svn": 7,
        "policy": 0x3_001F | 1 << 16,
        "family_id": bytes(range(1, 17)),
        "image_id": bytes(range(17, 33)),
        "vmpl": 1,
        "signature_algo": 1,
        "current_tcb": TURIN_TCB,
        "platform_info": 0x25,
        "key_info": 0,
        "report_data": bytes(range(64)),
        "measurement": bytes(range(100, 148)),
        "host_data": b"\x11" * 32,
        "id_key_digest": b"\x22" * 48,
        "author_key_digest": b"\x33" * 48,
        "report_id": b"\x44" * 32,
        "report_id_ma": b"\xff" * 32,
        "reported_tcb": TURIN_TCB,
        "cpuid_fam_id": 0x1A,
        "cpuid_mod_id": 0x02,
        "cpuid_step": 0x01,
        "chip_id": bytes(range(8)) + bytes(56),
        "committed_tcb": TURIN_TCB,
        "current_build": 40,
        "current_minor": 55,
        "current_major": 1,
        "committed_build": 39,
        "committed_minor": 55,
        "committed_major": 1,
        "launch_tcb": TURIN_TCB,
        "launch_mit_vector": 0x1234,
        "current_mit_vector": 0x5678,
        "signature_r": b"\x01" * 48 + bytes(24),
        "signature_s": b"\x02" * 48 + bytes(24),
    }
    base.update(fields)
    return SnpReport(**base)  # type: ignore[arg-type]


def milan_v2(**fields: object) -> SnpReport:
    return make_report(
        version=2,
        cpuid_fam_id=None,
        cpuid_mod_id=None,
        cpuid_step=None,
        launch_mit_vector=None,
        current_mit_vector=None,
        current_tcb=MILAN_TCB,
        reported_tcb=MILAN_TCB,
        committed_tcb=MILAN_TCB,
        launch_tcb=MILAN_TCB,
        chip_id=bytes(range(64)),
        **fields,
    )


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_round_trip_every_version(version: int) -> None:
    report = make_report(version=version)
    if version < 3:
        report = dataclasses.replace(report, cpuid_fam_id=None, cpuid_mod_id=None, cpuid_step=None)
    if version < 5:
        report = dataclasses.replace(report, launch_mit_vector=None, current_mit_vector=None)
    raw = report.to_bytes()
    assert len(raw) == REPORT_SIZE
    parsed = parse_report(raw)
    assert parsed == report
    assert parsed.raw == raw
    assert parsed.to_bytes() == raw
    assert parsed.signed_bytes == raw[:SIGNED_SIZE]


def test_v5_fields_decoded_at_their_offsets() -> None:
    raw = make_report().to_bytes()
    parsed = parse_report(raw)
    assert parsed.launch_mit_vector == 0x1234
    assert int.from_bytes(raw[0x1F8:0x200], "little") == 0x1234
    assert int.from_bytes(raw[0x200:0x208], "little") == 0x5678
    assert raw[0x188:0x18B] == bytes([0x1A, 0x02, 0x01])
    assert raw[0x1A0:0x1A8] == bytes(range(8))
    assert parsed.firmware_version == "1.55.40"


def test_v2_has_no_cpuid_and_no_mitigation_vectors() -> None:
    parsed = parse_report(milan_v2().to_bytes())
    assert parsed.cpuid_fam_id is None and parsed.launch_mit_vector is None
    assert parsed.product is None
    assert not parsed.turin_layout()


def test_v3_mitigation_vector_bytes_are_reserved() -> None:
    raw = bytearray(
        make_report(version=3, launch_mit_vector=None, current_mit_vector=None).to_bytes()
    )
    raw[0x1F8] = 1
    with pytest.raises(MalformedEvidence, match="reserved_0x1f8") as info:
        parse_report(bytes(raw))
    assert info.value.offset == 0x1F8


def test_v2_cpuid_bytes_are_reserved() -> None:
    raw = bytearray(milan_v2().to_bytes())
    raw[0x188] = 0x19
    with pytest.raises(MalformedEvidence, match="reserved_0x188"):
        parse_report(bytes(raw))


def test_milan_and_turin_tcb_layouts() -> None:
    milan = TcbVersion.from_u64(0x7308_0000_0000_0003, turin=False)
    assert (milan.bootloader, milan.tee, milan.snp, milan.microcode, milan.fmc) == (
        3,
        0,
        8,
        115,
        None,
    )
    turin = TcbVersion.from_u64(0x0900_0000_0403_0201, turin=True)
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 9)
    assert turin.to_u64() == 0x0900_0000_0403_0201
    assert milan.to_u64() == 0x7308_0000_0000_0003
    assert tcb_reserved_bytes(0x7308_0000_0000_0003, turin=False) == bytes(4)
    assert str(turin) == "fmc 1, bootloader 2, tee 3, snp 4, microcode 9"


def test_report_tcb_decodes_by_product() -> None:
    report = parse_report(make_report().to_bytes())
    assert report.product is SnpProduct.TURIN
    assert report.tcb("reported").fmc == 1
    assert report.tcb("launch").microcode == 9
    # The same u64 read with the Milan layout gives other numbers: the product decides.
    assert report.tcb("reported", SnpProduct.MILAN).bootloader == 1


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        (0x19, 0x01, SnpProduct.MILAN),
        (0x19, 0x11, SnpProduct.GENOA),
        (0x19, 0xA0, SnpProduct.GENOA),
        (0x1A, 0x02, SnpProduct.TURIN),
        (0x1A, 0x11, SnpProduct.TURIN),
        (0x19, 0x50, None),
        (0x17, 0x31, None),
    ],
)
def test_product_from_cpuid(family: int, model: int, product: SnpProduct | None) -> None:
    assert product_from_cpuid(family, model) is product


def test_guest_policy_bits() -> None:
    gp = GuestPolicy.from_u64(0xB_0000 | 0x0102)
    assert (gp.abi_major, gp.abi_minor) == (1, 2)
    assert gp.smt and gp.debug and not gp.migrate_ma and not gp.single_socket
    every = GuestPolicy.from_u64(0x3FF_0000)
    assert all(
        getattr(every, n)
        for n in (
            "smt", "migrate_ma", "debug", "single_socket", "cxl_allowed", "mem_aes_256_xts",
            "rapl_dis", "ciphertext_hiding_dram", "page_swap_disable",
        )
    )  # fmt: skip


def test_platform_info_bits() -> None:
    pi = PlatformInfo.from_u64(0x25)
    assert pi.smt_enabled and pi.ecc_enabled and pi.alias_check_complete
    assert not pi.tsme_enabled and not pi.rapl_disabled
    assert PlatformInfo.from_u64(1 << 40).raw == 1 << 40  # unknown bits kept, not refused


@pytest.mark.parametrize(
    ("key_info", "kind", "author", "masked"),
    [
        (0, SigningKey.VCEK, False, False),
        (0b111, SigningKey.VLEK, True, True),
        (0x1C, SigningKey.NONE, False, False),
    ],
)
def test_key_info(key_info: int, kind: SigningKey, author: bool, masked: bool) -> None:
    report = parse_report(make_report(key_info=key_info).to_bytes())
    assert report.signing_key is kind
    assert report.author_key_en is author
    assert report.mask_chip_key is masked


def test_reserved_signing_key_selector_refused() -> None:
    with pytest.raises(MalformedEvidence, match="signing_key' is 2"):
        parse_report(make_report(key_info=2 << 2).to_bytes())


def test_key_info_reserved_bits_refused() -> None:
    with pytest.raises(MalformedEvidence, match="key_info"):
        parse_report(make_report(key_info=1 << 5).to_bytes())


def test_policy_bit_17_must_be_one() -> None:
    with pytest.raises(MalformedEvidence, match="bit 17"):
        parse_report(make_report(policy=0x1_0000).to_bytes())


def test_policy_high_bits_must_be_zero() -> None:
    with pytest.raises(MalformedEvidence, match="63:26"):
        parse_report(make_report(policy=0x2_0000 | 1 << 26).to_bytes())


@pytest.mark.parametrize("version", [0, 1, 6, 0x0002_0003])
def test_unsupported_version_refused(version: int) -> None:
    with pytest.raises(MalformedEvidence, match="'version'") as info:
        parse_report(make_report(version=version).to_bytes())
    assert info.value.field == "version"


def test_unknown_signature_algorithm_refused() -> None:
    with pytest.raises(MalformedEvidence, match="signature_algo' is 2"):
        parse_report(make_report(signature_algo=2).to_bytes())


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1, 2 * REPORT_SIZE])
def test_wrong_size_refused(size: int) -> None:
    raw = (make_report().to_bytes() * 2)[:size]
    with pytest.raises(MalformedEvidence, match=f"is {size} bytes, expected {REPORT_SIZE}"):
        parse_report(raw)


def test_signature_reserved_tail_must_be_zero() -> None:
    raw = bytearray(make_report().to_bytes())
    raw[-1] = 1
    with pytest.raises(MalformedEvidence, match="signature_reserved"):
        parse_report(bytes(raw))


def test_signature_components_little_endian() -> None:
    report = make_report(
        signature_r=(5).to_bytes(72, "little"), signature_s=(7).to_bytes(72, "little")
    )
    assert parse_report(report.to_bytes()).signature_rs == (5, 7)


def test_raw_not_in_repr() -> None:
    report = parse_report(make_report().to_bytes())
    assert "raw=" not in repr(report)
