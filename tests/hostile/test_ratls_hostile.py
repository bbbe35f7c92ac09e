"""Hostile RA-TLS input: every CBOR and X.509 path either parses (and round-trips) or raises
MalformedEvidence — never another exception. Named cases: missing or duplicate extension, wrong
OID, truncated CBOR, oversized fields, wrong tags and shapes."""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.errors import MalformedEvidence
from sealpod.ratls.certificate import (
    OID_TCG_DICE_EVIDENCE,
    parse_ratls_certificate,
    parse_snp_endorsements,
)
from sealpod.ratls.evidence import (
    MAX_CLAIM_VALUE_SIZE,
    MAX_CLAIMS,
    MAX_EVIDENCE_SIZE,
    MAX_EXTENSION_SIZE,
    TAG_INTEL_TEE_QUOTE,
    encode_claims,
    parse_claims,
    parse_hash_entry,
    parse_tagged_evidence,
)
from sealpod.ratls.verify import inspect_certificate


def _seed_certificate() -> bytes:
    """The fuzzers' seed: a well-formed RA-TLS certificate (DER) around an SGX quote made by the
    test builders, with Gramine's legacy extension too. (The real third-party certificates live
    in ../shared/vectors and are not needed to fuzz the parsers.)"""
    from datetime import UTC, datetime, timedelta

    from sealpod.ratls.issue import issue_ratls_certificate
    from sealpod.tee.base import Evidence
    from sealpod.testing.dcap_builders import (
        assemble_quote,
        build_certificate,
        new_key,
        sgx_body,
    )
    from sealpod.testing.dcap_builders import pem as pem_of
    from sealpod.verify.claims import TeeKind

    when = datetime(2026, 1, 1, tzinfo=UTC)
    pck_key = new_key()
    year = timedelta(days=365)
    pck = build_certificate(subject="PCK", key=pck_key, issuer=None, issuer_key=pck_key,
                            not_before=when, not_after=when + year, ca=False)  # fmt: skip
    attestation_key = new_key()

    class Builder:
        name = "test-builder"

        def describe(self) -> dict[str, object]:
            return {"name": self.name}

        def get_evidence(self, report_data: bytes) -> Evidence:
            quote = assemble_quote(
                version=3, body=sgx_body(report_data=report_data.ljust(64, b"\0")),
                attestation_key=attestation_key, pck_key=pck_key,
                pck_chain_pem=pem_of(pck).encode(),
            )  # fmt: skip
            return Evidence(tee=TeeKind.SGX, raw=quote.to_bytes())

    _key, cert_pem = issue_ratls_certificate(Builder(), now=when, legacy_gramine=True)
    der: bytes = pem.unarmor(cert_pem)[2]
    return der


GRAMINE_DER = _seed_certificate()
TCG_VALUE = parse_ratls_certificate(GRAMINE_DER).extension(OID_TCG_DICE_EVIDENCE).value  # type: ignore[union-attr]
CLAIMS = encode_claims(b"\x30\x00")
HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tagged(value: object, tag: int = TAG_INTEL_TEE_QUOTE) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, value))


def with_extensions(der: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """``der`` with its extension list replaced by ``edit(list)`` (signature left stale: RA-TLS
    does not trust the self-signature)."""
    cert = asn1_x509.Certificate.load(der)
    tbs = cert["tbs_certificate"]
    exts = [asn1_x509.Extension.load(e.dump()) for e in tbs["extensions"]]
    tbs["extensions"] = asn1_x509.Extensions(edit(exts))
    cert["tbs_certificate"] = tbs
    return bytes(cert.dump(force=True))


# --- named cases ---------------------------------------------------------------------------------
def test_duplicate_evidence_extension() -> None:
    def dup(exts: list) -> list:  # type: ignore[type-arg]
        return [*exts, next(e for e in exts if e["extn_id"].dotted == OID_TCG_DICE_EVIDENCE)]

    with pytest.raises(MalformedEvidence, match="more than one"):
        parse_ratls_certificate(with_extensions(GRAMINE_DER, dup))


def test_missing_evidence_extensions() -> None:
    def strip(exts: list) -> list:  # type: ignore[type-arg]
        return [e for e in exts if e["extn_id"].dotted in ("2.5.29.19", "2.5.29.14")]

    with pytest.raises(MalformedEvidence, match="no RA-TLS evidence"):
        parse_ratls_certificate(with_extensions(GRAMINE_DER, strip))


@pytest.mark.parametrize(
    "oid",
    ["2.23.133.5.4.10", "1.2.840.113741.1.13.1", "1.2.840.113741.1337.6", "2.23.133.5.4.2"],
)
def test_evidence_under_a_wrong_oid_is_not_evidence(oid: str) -> None:
    def rename(exts: list) -> list:  # type: ignore[type-arg]
        out: list[asn1_x509.Extension] = []
        for e in exts:
            if e["extn_id"].dotted in (OID_TCG_DICE_EVIDENCE, "0.6.9.42.840.113741.1337.6"):
                if any(x["extn_id"].dotted == oid for x in out):
                    continue
                e = asn1_x509.Extension({"extn_id": oid, "critical": False,
                                         "extn_value": e["extn_value"].contents})  # fmt: skip
            out.append(e)
        return out

    with pytest.raises(MalformedEvidence):
        parse_ratls_certificate(with_extensions(GRAMINE_DER, rename))


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 100, len(TCG_VALUE) // 2, len(TCG_VALUE) - 1])
def test_truncated_cbor(cut: int) -> None:
    with pytest.raises(MalformedEvidence):
        parse_tagged_evidence(TCG_VALUE[:cut])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00" * (MAX_EXTENSION_SIZE + 1), "at most"),
        (tagged([b"\x03" * (MAX_EVIDENCE_SIZE + 1), CLAIMS]), "evidence is"),
        (tagged([b"q", b"\xa0" + b"\x00" * 20000]), "claims buffer is"),
        (tagged([b"q", cbor2.dumps({"pubkey-hash": b"\x00" * (MAX_CLAIM_VALUE_SIZE + 1)})]),
         "at most"),
        (tagged([b"q", cbor2.dumps({f"k{i}": b"" for i in range(MAX_CLAIMS + 1)})]),
         "entries"),
    ],
)  # fmt: skip
def test_oversized_fields(value: bytes, message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        parse_tagged_evidence(value)


@pytest.mark.parametrize(
    "value",
    [
        cbor2.dumps([b"q", CLAIMS]),  # no tag
        tagged([b"q", CLAIMS], tag=60001),  # unknown tag
        tagged([b"q"]),  # one item
        tagged([b"q", CLAIMS, b"x"]),  # three items
        tagged([b"q", "text"]),  # claims not bytes
        tagged({"a": b"q"}),  # not an array
        tagged([b"", CLAIMS]),  # empty evidence
        tagged([b"q", b""]),  # empty claims
        tagged([b"q", cbor2.dumps({"nonce": b"x"})]),  # no pubkey-hash
        tagged([b"q", cbor2.dumps({"pubkey-hash": cbor2.dumps([2, b"\x00" * 32])})]),  # alg
        tagged([b"q", cbor2.dumps({"pubkey-hash": cbor2.dumps([1, b"\x00" * 31])})]),  # size
        tagged([b"q", cbor2.dumps({1: b"x", "pubkey-hash": b""})]),  # non-text key
        tagged([b"q", cbor2.dumps([1, 2])]),  # claims not a map
        TCG_VALUE + b"\x00",  # trailing byte
        b"\xd9\xea\x60\x9f\x41q\x41q\xff",  # indefinite-length array
    ],
)
def test_wrong_shapes(value: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        parse_tagged_evidence(value)


def test_real_extension_round_trips() -> None:
    assert parse_tagged_evidence(TCG_VALUE).to_bytes() == TCG_VALUE


# --- properties ----------------------------------------------------------------------------------
cbor_leaves = st.one_of(
    st.integers(-(2**70), 2**70), st.binary(max_size=64), st.text(max_size=16),
    st.booleans(), st.none(), st.floats(allow_nan=False),
)  # fmt: skip
cbor_values = st.recursive(
    cbor_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.builds(cbor2.CBORTag, st.sampled_from([60000, 0x1A7504, 1, 2, 24, 258]), inner),
    ),
    max_leaves=12,
)


@HOSTILE
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_are_malformed(data: bytes) -> None:
    for parse in (parse_tagged_evidence, parse_claims, parse_hash_entry, parse_snp_endorsements):
        try:
            parse(data)
        except MalformedEvidence:
            pass


@HOSTILE
@given(cbor_values)
def test_any_cbor_structure_parses_or_is_malformed(value: object) -> None:
    try:
        data = cbor2.dumps(value)
    except (ValueError, TypeError):
        return
    for candidate in (data, tagged([b"quote", data]), tagged(value)):
        try:
            parsed = parse_tagged_evidence(candidate)
        except MalformedEvidence:
            continue
        assert parsed.to_bytes() == candidate


@HOSTILE
@given(st.integers(0, len(TCG_VALUE) - 1), st.integers(1, 255))
def test_flipped_evidence_bytes(offset: int, xor: int) -> None:
    data = bytearray(TCG_VALUE)
    data[offset] ^= xor
    try:
        parsed = parse_tagged_evidence(bytes(data))
    except MalformedEvidence:
        return
    assert parsed.to_bytes() == bytes(data)


@HOSTILE
@given(st.integers(0, len(GRAMINE_DER) - 1), st.integers(1, 255))
def test_flipped_certificate_bytes(offset: int, xor: int) -> None:
    data = bytearray(GRAMINE_DER)
    data[offset] ^= xor
    try:
        inspect_certificate(bytes(data))
    except MalformedEvidence:
        pass


@HOSTILE
@given(st.integers(0, len(GRAMINE_DER)))
def test_truncated_certificates(cut: int) -> None:
    try:
        parse_ratls_certificate(GRAMINE_DER[:cut])
    except MalformedEvidence:
        return
    assert cut == len(GRAMINE_DER)


@HOSTILE
@given(st.binary(max_size=2048))
def test_random_certificate_input(data: bytes) -> None:
    for candidate in (data, b"-----BEGIN CERTIFICATE-----\n" + data):
        try:
            inspect_certificate(candidate)
        except MalformedEvidence:
            pass


def test_validity_type_is_checked_before_use() -> None:
    cert = parse_ratls_certificate(GRAMINE_DER)
    assert cert.not_before < dt.datetime(2026, 1, 1, tzinfo=dt.UTC) < cert.not_after
