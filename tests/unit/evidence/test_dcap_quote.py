"""DCAP quote codec: layouts of v3/v4/v5, padding, certification data, named refusals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sealpod.errors import MalformedEvidence
from sealpod.evidence.dcap_body import (
    SGX_REPORT_BODY_SIZE,
    TD10_REPORT_BODY_SIZE,
    TD15_REPORT_BODY_SIZE,
    SgxReportBody,
    Td10ReportBody,
    Td15ReportBody,
)
from sealpod.evidence.dcap_quote import (
    BODY_TYPE_SGX,
    BODY_TYPE_TD10,
    BODY_TYPE_TD15,
    INTEL_QE_VENDOR_ID,
    MAX_QE_AUTH_DATA_SIZE,
    QUOTE_HEADER_SIZE,
    TEE_TYPE_TDX,
    PckCertChain,
    Quote,
    parse_quote,
)
from sealpod.testing.dcap_builders import DcapPki, sgx_body, td_body

NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


@pytest.fixture(scope="module")
def make_quote(pki: DcapPki) -> Callable[..., Quote]:
    def make(tee: str = "sgx", version: int | None = None, **kwargs: object) -> Quote:
        return pki.quote(tee=tee, version=version, **kwargs)  # type: ignore[arg-type]

    return make


CASES = [("sgx", 3), ("sgx", 4), ("sgx", 5), ("tdx", 4), ("tdx", 5)]


@pytest.mark.parametrize(("tee", "version"), CASES)
def test_round_trip_and_fields(make_quote: Callable[..., Quote], tee: str, version: int) -> None:
    quote = make_quote(tee, version, report_data=bytes(range(64)))
    raw = quote.to_bytes()
    parsed = parse_quote(raw)
    assert parsed == quote
    assert parsed.to_bytes() == raw
    assert parsed.raw == raw
    assert parsed.header.version == version
    assert parsed.header.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert parsed.body.report_data == bytes(range(64))
    assert parsed.signature_data.nested is (version >= 4)
    assert parsed.signed_bytes == quote.signed_bytes
    body_size = {"sgx": SGX_REPORT_BODY_SIZE, "tdx": TD10_REPORT_BODY_SIZE}[tee]
    if version == 5 and tee == "tdx":
        body_size = TD15_REPORT_BODY_SIZE
    descriptor = 6 if version == 5 else 0
    assert len(parsed.signed_bytes) == QUOTE_HEADER_SIZE + descriptor + body_size
    assert raw[: len(parsed.signed_bytes)] == parsed.signed_bytes
    assert len(parsed.signature_data.certification_data.certificates()) == 3


def test_body_types(make_quote: Callable[..., Quote]) -> None:
    assert isinstance(parse_quote(make_quote("sgx", 5).to_bytes()).body, SgxReportBody)
    v4 = parse_quote(make_quote("tdx", 4).to_bytes())
    assert type(v4.body) is Td10ReportBody
    assert v4.body_type == BODY_TYPE_TD10
    assert v4.is_tdx and v4.header.tee_type == TEE_TYPE_TDX
    v5 = parse_quote(make_quote("tdx", 5).to_bytes())
    assert isinstance(v5.body, Td15ReportBody)
    assert v5.body_type == BODY_TYPE_TD15
    assert parse_quote(make_quote("sgx", 3).to_bytes()).body_type == BODY_TYPE_SGX


def test_v5_td10_body(pki: DcapPki) -> None:
    quote = pki.quote(tee="tdx", version=5, body=td_body())
    parsed = parse_quote(quote.to_bytes())
    assert type(parsed.body) is Td10ReportBody
    assert parsed.to_bytes() == quote.to_bytes()


def test_zero_padding_is_counted_and_kept(make_quote: Callable[..., Quote]) -> None:
    raw = make_quote("tdx", 4).to_bytes()
    padded = raw + bytes(3065)
    parsed = parse_quote(padded)
    assert parsed.padding == 3065
    assert parsed.raw == raw
    assert parsed.to_bytes() == padded


def test_non_zero_trailing_byte_is_refused(make_quote: Callable[..., Quote]) -> None:
    raw = make_quote("tdx", 4).to_bytes()
    with pytest.raises(MalformedEvidence, match="trailing padding"):
        parse_quote(raw + bytes(10) + b"\x01")


def test_nul_terminated_pem_chain_parses_and_other_garbage_does_not(
    make_quote: Callable[..., Quote],
) -> None:
    quote = make_quote("tdx", 4)
    chain = quote.signature_data.certification_data
    for suffix in (b"", b"\0", b"\0\0"):
        pem = chain.pem.rstrip(b"\0") + suffix
        sig = replace(quote.signature_data, certification_data=PckCertChain(pem=pem))
        parsed = parse_quote(replace(quote, signature_data=sig).to_bytes())
        assert parsed.signature_data.certification_data.pem == pem
    for suffix in (b"\x01", b"\0\x01", b"garbage"):
        sig = replace(quote.signature_data, certification_data=PckCertChain(pem=chain.pem + suffix))
        with pytest.raises(MalformedEvidence, match="PEM certificates"):
            parse_quote(replace(quote, signature_data=sig).to_bytes())


def test_bad_base64_in_pem_is_refused() -> None:
    bad = b"-----BEGIN CERTIFICATE-----\nAB=C\n-----END CERTIFICATE-----\n"
    with pytest.raises(MalformedEvidence, match="base64"):
        PckCertChain.from_bytes(bad)


def test_empty_pem_chain_is_refused() -> None:
    with pytest.raises(MalformedEvidence, match="empty"):
        PckCertChain.from_bytes(b"\0")


def test_unknown_version_is_refused(make_quote: Callable[..., Quote]) -> None:
    raw = bytearray(make_quote("tdx", 4).to_bytes())
    raw[0] = 7
    with pytest.raises(MalformedEvidence, match="'version' is 7"):
        parse_quote(bytes(raw))


def test_v3_with_tdx_tee_type_is_refused(make_quote: Callable[..., Quote]) -> None:
    # go-tdx-guest's negative recipe: a TDX v4 quote relabelled as v3.
    raw = bytearray(make_quote("tdx", 4).to_bytes())
    raw[0] = 3
    with pytest.raises(MalformedEvidence, match="reserved"):
        parse_quote(bytes(raw))


def test_unsupported_attestation_key_type_is_refused(make_quote: Callable[..., Quote]) -> None:
    raw = bytearray(make_quote("sgx", 3).to_bytes())
    raw[2] = 3  # ECDSA-384
    with pytest.raises(MalformedEvidence, match="att_key_type"):
        parse_quote(bytes(raw))


def test_unknown_tee_type_is_refused(make_quote: Callable[..., Quote]) -> None:
    raw = bytearray(make_quote("tdx", 4).to_bytes())
    raw[4] = 0x82
    with pytest.raises(MalformedEvidence, match="tee_type"):
        parse_quote(bytes(raw))


def test_v5_body_type_must_match_tee_and_size(make_quote: Callable[..., Quote]) -> None:
    raw = make_quote("tdx", 5).to_bytes()
    wrong_type = bytearray(raw)
    wrong_type[QUOTE_HEADER_SIZE] = BODY_TYPE_SGX
    with pytest.raises(MalformedEvidence, match="body_type"):
        parse_quote(bytes(wrong_type))
    wrong_size = bytearray(raw)
    wrong_size[QUOTE_HEADER_SIZE + 2] ^= 1
    with pytest.raises(MalformedEvidence, match="body_size"):
        parse_quote(bytes(wrong_size))
    unknown = bytearray(raw)
    unknown[QUOTE_HEADER_SIZE] = 4
    with pytest.raises(MalformedEvidence, match="body_type"):
        parse_quote(bytes(unknown))


def test_reserved_bytes_of_sgx_body_must_be_zero(make_quote: Callable[..., Quote]) -> None:
    raw = bytearray(make_quote("sgx", 3).to_bytes())
    raw[QUOTE_HEADER_SIZE + 20] = 1  # reserved1
    with pytest.raises(MalformedEvidence, match="reserved1"):
        parse_quote(bytes(raw))


def test_kss_fields_are_named_not_reserved(pki: DcapPki) -> None:
    body = sgx_body(
        isv_ext_prod_id=b"\x01" * 16,
        config_id=b"\x02" * 64,
        config_svn=7,
        isv_family_id=b"\x03" * 16,
    )
    parsed = parse_quote(pki.quote(tee="sgx", body=body).to_bytes())
    assert isinstance(parsed.body, SgxReportBody)
    assert parsed.body.config_svn == 7
    assert parsed.body.isv_family_id == b"\x03" * 16


def test_signature_data_length_bounds_the_quote(make_quote: Callable[..., Quote]) -> None:
    raw = make_quote("tdx", 4).to_bytes()
    offset = QUOTE_HEADER_SIZE + TD10_REPORT_BODY_SIZE
    longer = bytearray(raw)
    longer[offset : offset + 4] = (int.from_bytes(raw[offset : offset + 4], "little") + 1).to_bytes(
        4, "little"
    )
    with pytest.raises(MalformedEvidence):
        parse_quote(bytes(longer) + b"\0")
    huge = bytearray(raw)
    huge[offset : offset + 4] = (1 << 30).to_bytes(4, "little")
    with pytest.raises(MalformedEvidence, match="signature_data_len"):
        parse_quote(bytes(huge))


def test_certification_data_type_must_be_6_then_5(make_quote: Callable[..., Quote]) -> None:
    raw = make_quote("tdx", 4).to_bytes()
    outer = QUOTE_HEADER_SIZE + TD10_REPORT_BODY_SIZE + 4 + 128
    bad = bytearray(raw)
    bad[outer] = 5
    with pytest.raises(MalformedEvidence, match="expected 6"):
        parse_quote(bytes(bad))
    quote = make_quote("sgx", 3)
    qe_auth_len = len(quote.signature_data.qe_auth_data)
    inner = QUOTE_HEADER_SIZE + SGX_REPORT_BODY_SIZE + 4 + 128 + 384 + 64 + 2 + qe_auth_len
    bad = bytearray(quote.to_bytes())
    bad[inner] = 3  # PPID encrypted: needs the PCK certificate from elsewhere
    with pytest.raises(MalformedEvidence, match="expected 5"):
        parse_quote(bytes(bad))


def test_qe_auth_data_is_bounded(make_quote: Callable[..., Quote]) -> None:
    quote = make_quote("sgx", 3)
    sig = replace(quote.signature_data, qe_auth_data=bytes(MAX_QE_AUTH_DATA_SIZE + 1))
    with pytest.raises(MalformedEvidence, match="qe_auth_data_size"):
        parse_quote(replace(quote, signature_data=sig).to_bytes())


def test_oversized_input_is_refused() -> None:
    with pytest.raises(MalformedEvidence, match="at most"):
        parse_quote(bytes(2 << 20))


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(MalformedEvidence, match="expected bytes"):
        parse_quote("not bytes")  # type: ignore[arg-type]


def test_debug_bits(pki: DcapPki) -> None:
    debug_attrs = bytes.fromhex("07000000000000000700000000000000")
    assert sgx_body(attributes=debug_attrs).debug
    assert not sgx_body().debug
    assert td_body(td_attributes=bytes.fromhex("0100001000000000")).debug
    assert not td_body().debug


def test_td15_needs_version_5(make_quote: Callable[..., Quote]) -> None:
    quote = make_quote("tdx", 5)
    with pytest.raises(ValueError, match="version 5"):
        replace(quote, header=replace(quote.header, version=4)).to_bytes()


def test_non_canonical_base64_is_refused() -> None:
    import base64

    assert base64.b64decode(b"MAR=") == base64.b64decode(b"MAQ=") == b"0\x04"
    for body, ok in ((b"MAQ=", True), (b"MAR=", False)):
        pem = b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n"
        if ok:
            assert PckCertChain.from_bytes(pem).certificates() == (b"0\x04",)
        else:
            with pytest.raises(MalformedEvidence, match="canonical"):
                PckCertChain.from_bytes(pem)
