"""Evidence envelope and format detection: raw / hex / 0x-hex / base64 / envelope JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sealpod.errors import MalformedEvidence
from sealpod.evidence.envelope import (
    MAX_INPUT_SIZE,
    EvidenceEnvelope,
    RawEvidence,
    detect_kind,
    load_evidence,
)
from sealpod.evidence.snp_report import REPORT_SIZE
from sealpod.verify.claims import TeeKind


def snp_report_bytes(version: int = 2) -> bytes:
    raw = bytearray(REPORT_SIZE)
    raw[0:4] = version.to_bytes(4, "little")
    raw[0x08:0x10] = (0x3_0000).to_bytes(8, "little")
    raw[0x34:0x38] = (1).to_bytes(4, "little")
    raw[0x90:0xC0] = b"\xab" * 48
    return bytes(raw)


def dcap_header(version: int, tee_type: int = 0, key_type: int = 2, size: int = 1024) -> bytes:
    raw = bytearray(size)
    raw[0:2] = version.to_bytes(2, "little")
    raw[2:4] = key_type.to_bytes(2, "little")
    raw[4:8] = tee_type.to_bytes(4, "little")
    raw[48:56] = b"\xcd" * 8
    return bytes(raw)


# --- TEE kind from the bytes --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (snp_report_bytes(2), TeeKind.SNP),
        (snp_report_bytes(3), TeeKind.SNP),
        (snp_report_bytes(5), TeeKind.SNP),
        (dcap_header(3), TeeKind.SGX),
        (dcap_header(3, key_type=3), TeeKind.SGX),
        (dcap_header(4, 0x00), TeeKind.SGX),
        (dcap_header(4, 0x81), TeeKind.TDX),
        (dcap_header(5, 0x81), TeeKind.TDX),
        (dcap_header(5, 0x00), TeeKind.SGX),
    ],
)
def test_detect_kind(raw: bytes, kind: TeeKind) -> None:
    assert detect_kind(raw) is kind


def test_detect_kind_refuses_unknown_tee_type() -> None:
    with pytest.raises(MalformedEvidence, match="tee_type") as info:
        detect_kind(dcap_header(4, 0x42))
    assert info.value.offset == 4


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x03\x00\x02\x00",  # a DCAP header cut short
        dcap_header(2),  # no DCAP v2
        dcap_header(3, key_type=1),  # EPID
        snp_report_bytes(2)[:-1],  # SNP report one byte short
        snp_report_bytes(6),
        b"\x00" * REPORT_SIZE,  # version 0
    ],
)
def test_detect_kind_refuses_other_bytes(raw: bytes) -> None:
    with pytest.raises(MalformedEvidence, match="neither a DCAP quote"):
        detect_kind(raw)


# --- encodings ----------------------------------------------------------------------------------
def test_raw_binary() -> None:
    ev = load_evidence(snp_report_bytes())
    assert isinstance(ev, RawEvidence)
    assert (ev.tee, ev.encoding, ev.raw) == (TeeKind.SNP, "binary", snp_report_bytes())
    assert "raw=" not in repr(ev)


@pytest.mark.parametrize(
    "text",
    [
        snp_report_bytes().hex(),
        snp_report_bytes().hex().upper(),
        "0x" + snp_report_bytes().hex(),
        "0X" + snp_report_bytes().hex() + "\n",
        "  "
        + " ".join(snp_report_bytes().hex()[i : i + 32] for i in range(0, 2 * REPORT_SIZE, 32)),
        "\n".join(snp_report_bytes().hex()[i : i + 64] for i in range(0, 2 * REPORT_SIZE, 64)),
    ],
)
def test_hex_text(text: str) -> None:
    ev = load_evidence(text.encode())
    assert isinstance(ev, RawEvidence)
    assert (ev.tee, ev.encoding, ev.raw) == (TeeKind.SNP, "hex", snp_report_bytes())


@pytest.mark.parametrize(
    "encode",
    [
        base64.b64encode,
        base64.urlsafe_b64encode,
        lambda b: base64.b64encode(b).rstrip(b"="),
        base64.encodebytes,  # with newlines every 76 characters
    ],
)
def test_base64_text(encode: object) -> None:
    raw = dcap_header(4, 0x81, size=1001)  # 1001 bytes: base64 needs padding
    ev = load_evidence(encode(raw))  # type: ignore[operator]
    assert isinstance(ev, RawEvidence)
    assert (ev.tee, ev.encoding, ev.raw) == (TeeKind.TDX, "base64", raw)


def test_envelope_json() -> None:
    env = EvidenceEnvelope(
        tee="snp",
        evidence=base64.b64encode(snp_report_bytes()).decode(),
        certificates="-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        runtime_data='{"nonce":"x"}',
    )
    ev = load_evidence(env.to_json().encode())
    assert ev == env
    assert isinstance(ev, EvidenceEnvelope)
    assert ev.kind is TeeKind.SNP and ev.raw == snp_report_bytes()
    assert ev.certificate_bytes is not None and ev.certificate_bytes.startswith(b"-----BEGIN")
    assert "evidence=" not in repr(ev)


def test_envelope_with_leading_whitespace_and_minimal_fields() -> None:
    doc = {"tee": "sgx", "evidence": base64.b64encode(dcap_header(3)).decode()}
    ev = load_evidence(b"\n  " + json.dumps(doc).encode())
    assert isinstance(ev, EvidenceEnvelope) and ev.certificates is None


def test_tee_evidence_from_the_tee_helper_round_trips() -> None:
    from sealpod.tee.base import Evidence

    env = Evidence(tee=TeeKind.SNP, raw=snp_report_bytes()).to_envelope()
    assert load_evidence(env.to_json().encode()) == env


# --- refusals -----------------------------------------------------------------------------------
def _envelope(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "tee": "snp",
        "evidence": base64.b64encode(snp_report_bytes()).decode(),
    }
    doc.update(fields)
    return json.dumps(doc).encode()


def test_envelope_tee_must_match_the_bytes() -> None:
    with pytest.raises(MalformedEvidence, match="tee is 'sgx' but the evidence is a snp"):
        load_evidence(_envelope(tee="sgx"))


def test_envelope_unknown_tee_name() -> None:
    with pytest.raises(MalformedEvidence, match="tee") as info:
        load_evidence(_envelope(tee="sim"))
    assert info.value.field == "tee"


def test_envelope_unknown_field_fails_closed() -> None:
    with pytest.raises(MalformedEvidence, match="simulated") as info:
        load_evidence(_envelope(simulated=False))
    assert info.value.field == "simulated"


def test_envelope_missing_evidence() -> None:
    with pytest.raises(MalformedEvidence, match="evidence"):
        load_evidence(b'{"tee": "snp"}')


def test_envelope_bad_base64() -> None:
    with pytest.raises(MalformedEvidence, match="neither hex nor base64"):
        load_evidence(_envelope(evidence="!!not base64!!"))


def test_envelope_evidence_of_unknown_format() -> None:
    with pytest.raises(MalformedEvidence, match="neither a DCAP quote"):
        load_evidence(_envelope(evidence=base64.b64encode(b"hello world").decode()))


def test_envelope_certificates_must_be_pem() -> None:
    with pytest.raises(MalformedEvidence, match="PEM"):
        load_evidence(_envelope(certificates="MIIB..."))


def test_envelope_wrong_types() -> None:
    with pytest.raises(MalformedEvidence, match="runtime_data"):
        load_evidence(_envelope(runtime_data=5))


def test_envelope_not_json() -> None:
    with pytest.raises(MalformedEvidence, match="envelope"):
        load_evidence(b"{not json")


def test_oversized_input() -> None:
    with pytest.raises(MalformedEvidence, match="at most"):
        load_evidence(b"0" * (MAX_INPUT_SIZE + 1))


def test_oversized_envelope_field() -> None:
    with pytest.raises(MalformedEvidence, match="runtime_data"):
        load_evidence(_envelope(runtime_data="x" * (64 * 1024 + 1)))


@pytest.mark.parametrize("data", [b"", b"   \n", b"\x00", b"zz", b"0x", b"0xabc", b"hello"])
def test_neither_encoding(data: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        load_evidence(data)


def test_binary_that_is_no_evidence() -> None:
    with pytest.raises(MalformedEvidence, match="neither a DCAP quote"):
        load_evidence(b"\x01\x02\x03\xff" * 100)


def test_hex_of_bytes_that_are_no_evidence() -> None:
    with pytest.raises(MalformedEvidence, match="neither a DCAP quote"):
        load_evidence(b"00" * 100)


# --- real files (skipped without ../shared/vectors) ----------------------------------------------
@pytest.mark.vectors
@pytest.mark.parametrize(
    ("name", "kind", "encoding"),
    [
        ("dcap-qvl/sgx_quote", TeeKind.SGX, "binary"),
        ("dcap-qvl/tdx_quote", TeeKind.TDX, "binary"),
        ("dcap-qvl/tdx-quote.hex", TeeKind.TDX, "hex"),  # starts with 0x
        ("dcap-qvl/quote-from-tappd.hex", TeeKind.TDX, "hex"),
        ("automata/samples/quotev3.hex", TeeKind.SGX, "hex"),
        ("automata/samples/quotev5.dat", TeeKind.TDX, "binary"),
        ("go-sev-guest/attestation.bin", TeeKind.SNP, "binary"),
        ("virtee-sev/report_milan.hex", TeeKind.SNP, "hex"),
    ],
)
def test_real_evidence_files(vectors: Path, name: str, kind: TeeKind, encoding: str) -> None:
    ev = load_evidence((vectors / name).read_bytes())
    assert isinstance(ev, RawEvidence)
    assert (ev.tee, ev.encoding) == (kind, encoding)
