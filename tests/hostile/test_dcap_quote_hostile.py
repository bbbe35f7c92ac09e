"""Hostile quotes: byte flips over every field and reserved range of each layout, every
truncation length, and hypothesis properties. Nothing but a typed sealpod error may come out,
and whatever parses must round-trip exactly.

The field tables below are written from Intel's layout documents, independently of the codec;
``test_layout_tables_cover_the_quote`` checks that they tile each synthetic quote exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.errors import MalformedEvidence, SealpodError, VerificationError
from sealpod.evidence.dcap_quote import Quote, parse_quote
from sealpod.testing.dcap_builders import DcapPki
from sealpod.verify.dcap import DcapVerifier

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STRUCT, RESERVED, SIGNED, PEM = "struct", "reserved", "signed", "pem"

HEADER_V3 = [("version", 2, STRUCT), ("att_key_type", 2, STRUCT), ("reserved", 4, RESERVED),
             ("qe_svn", 2, SIGNED), ("pce_svn", 2, SIGNED), ("qe_vendor_id", 16, SIGNED),
             ("user_data", 20, SIGNED)]  # fmt: skip
HEADER_V4 = [("version", 2, STRUCT), ("att_key_type", 2, STRUCT), ("tee_type", 4, STRUCT),
             ("qe_svn", 2, SIGNED), ("pce_svn", 2, SIGNED), ("qe_vendor_id", 16, SIGNED),
             ("user_data", 20, SIGNED)]  # fmt: skip
V5_DESCRIPTOR = [("body_type", 2, STRUCT), ("body_size", 4, STRUCT)]


def sgx_report(prefix: str, kind: str) -> list[tuple[str, int, str]]:
    return [(prefix + name, size, RESERVED if name.startswith("reserved") else kind)
            for name, size in [("cpu_svn", 16), ("misc_select", 4), ("reserved1", 12),
                               ("isv_ext_prod_id", 16), ("attributes", 16), ("mr_enclave", 32),
                               ("reserved2", 32), ("mr_signer", 32), ("reserved3", 32),
                               ("config_id", 64), ("isv_prod_id", 2), ("isv_svn", 2),
                               ("config_svn", 2), ("reserved4", 42), ("isv_family_id", 16),
                               ("report_data", 64)]]  # fmt: skip


TD10 = [(n, s, SIGNED) for n, s in [("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48),
        ("seam_attributes", 8), ("td_attributes", 8), ("xfam", 8), ("mr_td", 48),
        ("mr_config_id", 48), ("mr_owner", 48), ("mr_owner_config", 48), ("rt_mr0", 48),
        ("rt_mr1", 48), ("rt_mr2", 48), ("rt_mr3", 48), ("report_data", 64)]]  # fmt: skip
TD15 = [*TD10, ("tee_tcb_svn2", 16, SIGNED), ("mr_service_td", 48, SIGNED)]


def layout(quote: Quote) -> list[tuple[str, int, str]]:
    """(field, size, kind) tiling ``quote.to_bytes()``."""
    version = quote.header.version
    sig = quote.signature_data
    fields = list(HEADER_V3 if version == 3 else HEADER_V4)
    if version == 5:
        fields += V5_DESCRIPTOR
    body = {1: sgx_report("body.", SIGNED), 2: TD10, 3: TD15}[quote.body_type]
    fields += body
    fields += [("signature_data_len", 4, STRUCT), ("signature", 64, SIGNED),
               ("attestation_key", 64, SIGNED)]  # fmt: skip
    if version >= 4:
        fields += [("qe_cert_data_type", 2, STRUCT), ("qe_cert_data_size", 4, STRUCT)]
    fields += sgx_report("qe_report.", SIGNED)
    fields += [("qe_report_signature", 64, SIGNED), ("qe_auth_data_size", 2, STRUCT),
               ("qe_auth_data", len(sig.qe_auth_data), SIGNED),
               ("pck_cert_data_type", 2, STRUCT), ("pck_cert_data_size", 4, STRUCT),
               ("pck_chain_pem", len(sig.certification_data.pem), PEM)]  # fmt: skip
    if quote.padding:
        fields.append(("padding", quote.padding, STRUCT))
    return fields


CASES = [("sgx", 3), ("sgx", 4), ("sgx", 5), ("tdx", 4), ("tdx", 5)]


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


@pytest.fixture(scope="module")
def quotes(pki: DcapPki) -> dict[tuple[str, int], Quote]:
    out = {case: pki.quote(tee=case[0], version=case[1]) for case in CASES}
    padded = pki.quote(tee="tdx", version=4, padding=70)
    out[("tdx-padded", 4)] = padded
    return out


def _verify(pki: DcapPki, raw: bytes, tee: str) -> None:
    collateral = pki.collateral(tee="sgx" if tee == "sgx" else "tdx")
    DcapVerifier(pki.trust()).verify(raw, collateral, now=NOW)


@pytest.mark.parametrize("case", [*CASES, ("tdx-padded", 4)])
def test_layout_tables_cover_the_quote(
    quotes: dict[tuple[str, int], Quote], case: tuple[str, int]
) -> None:
    quote = quotes[case]
    assert sum(size for _, size, _ in layout(quote)) == len(quote.to_bytes())


@pytest.mark.parametrize("case", [*CASES, ("tdx-padded", 4)])
def test_byte_flip_table(
    pki: DcapPki, quotes: dict[tuple[str, int], Quote], case: tuple[str, int]
) -> None:
    quote = quotes[case]
    raw = quote.to_bytes()
    _verify(pki, raw, case[0])  # the unmodified quote verifies
    offset = 0
    for name, size, kind in layout(quote):
        for position in sorted({offset, offset + size // 2, offset + size - 1}):
            for mask in (0x01, 0x80):
                flipped = bytearray(raw)
                flipped[position] ^= mask
                where = f"{name}@{position}^{mask:#x}"
                try:
                    parsed = parse_quote(bytes(flipped))
                except MalformedEvidence as exc:
                    assert kind in (STRUCT, RESERVED, PEM), f"{where}: refused by the parser"
                    if kind == RESERVED:
                        assert "reserved" in str(exc), where
                    continue
                assert kind in (SIGNED, PEM), f"{where}: a {kind} field parsed"
                assert parsed.to_bytes() == bytes(flipped), where
                with pytest.raises(VerificationError):
                    _verify(pki, bytes(flipped), case[0])
        offset += size


@pytest.mark.slow
@pytest.mark.parametrize("case", [("sgx", 3), ("tdx", 5)])
def test_every_byte_flip_fails_verification(
    pki: DcapPki, quotes: dict[tuple[str, int], Quote], case: tuple[str, int]
) -> None:
    raw = quotes[case].to_bytes()
    collateral = pki.collateral(tee=case[0])
    verifier = DcapVerifier(pki.trust())
    for position in range(len(raw)):
        flipped = bytearray(raw)
        flipped[position] ^= 0x04
        with pytest.raises(SealpodError):
            verifier.verify(bytes(flipped), collateral, now=NOW)


@pytest.mark.parametrize("case", CASES)
def test_every_truncation_is_malformed(
    quotes: dict[tuple[str, int], Quote], case: tuple[str, int]
) -> None:
    raw = quotes[case].to_bytes()
    for n in range(len(raw)):
        with pytest.raises(MalformedEvidence):
            parse_quote(raw[:n])


def test_truncating_padding_keeps_the_quote(quotes: dict[tuple[str, int], Quote]) -> None:
    quote = quotes[("tdx-padded", 4)]
    raw = quote.to_bytes()
    end = len(raw) - quote.padding
    for n in range(end, len(raw) + 1):
        parsed = parse_quote(raw[:n])
        assert parsed.padding == n - end
        assert parsed.raw == raw[:end]


# --- properties ---------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_are_refused_or_round_trip(data: bytes) -> None:
    try:
        parsed = parse_quote(data)
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == data


def _prefixed(quote: Quote) -> st.SearchStrategy[bytes]:
    raw = quote.to_bytes()
    # a valid prefix followed by random data keeps the parser busy deep inside the layout
    return st.builds(
        lambda n, tail: raw[:n] + tail, st.integers(0, len(raw)), st.binary(max_size=64)
    )


mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "set"]),
    st.integers(0, 1 << 16),
    st.integers(0, 255),
)


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=st.sampled_from(CASES), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_quotes_are_refused_or_round_trip(
    pki: DcapPki,
    quotes: dict[tuple[str, int], Quote],
    case: tuple[str, int],
    mutations: list[tuple[str, int, int]],
) -> None:
    data = bytearray(quotes[case].to_bytes())
    for op, where, value in mutations:
        i = where % (len(data) + 1)
        if op == "insert":
            data.insert(i, value)
        elif data and i < len(data):
            if op == "flip":
                data[i] ^= value or 1
            elif op == "delete":
                del data[i]
            else:
                data[i] = value
    try:
        parsed = parse_quote(bytes(data))
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == bytes(data)
    try:
        _verify(pki, bytes(data), case[0])
    except SealpodError:
        return
    # a mutation that verifies can only have touched zero padding it then restored
    assert bytes(data).rstrip(b"\0") == quotes[case].to_bytes().rstrip(b"\0")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_valid_prefix_then_noise(quotes: dict[tuple[str, int], Quote], data: st.DataObject) -> None:
    quote = quotes[data.draw(st.sampled_from(CASES))]
    blob = data.draw(_prefixed(quote))
    try:
        parsed = parse_quote(blob)
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == blob
