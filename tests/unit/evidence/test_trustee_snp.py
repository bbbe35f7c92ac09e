"""SEV-SNP evidence in Trustee's JSON form: byte-exact against Trustee's own end-to-end evidence,
round trips for every report version and both TCB layouts, and hostile JSON refused with
MalformedEvidence only."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_snp_report import make_report, milan_v2

from sealpod.errors import MalformedEvidence
from sealpod.evidence.snp_report import parse_report
from sealpod.evidence.trustee_snp import (
    certificates_pem,
    der_certificates,
    report_from_trustee,
    trustee_from_report,
)


def evidence(version: int = 5, *, turin: bool = True) -> dict[str, Any]:
    report = make_report(version=version) if turin else milan_v2()
    if version < 5:
        report = dataclasses.replace(report, launch_mit_vector=None, current_mit_vector=None)
    if version < 3:
        report = dataclasses.replace(report, cpuid_fam_id=None, cpuid_mod_id=None, cpuid_step=None)
    elif not turin:
        report = dataclasses.replace(report, version=version, cpuid_fam_id=0x19, cpuid_mod_id=1)
    return trustee_from_report(report.to_bytes(), [("VCEK", b"\x30\x03\x02\x01\x00")])


@pytest.mark.vectors
def test_trustee_e2e_evidence_rebuilds_the_signed_report(vectors: Path) -> None:
    data = json.loads((vectors / "trustee/snp/e2e-evidence.json").read_text())
    raw, certs = report_from_trustee(data)
    assert raw == (vectors / "trustee/snp/derived/e2e_genoa_report.reconstructed.bin").read_bytes()
    assert certs == [("VCEK", (vectors / "trustee/snp/derived/e2e_genoa_vcek.der").read_bytes())]
    assert trustee_from_report(raw, certs) == data  # field for field, back again
    assert der_certificates(certificates_pem(certs)) == [certs[0][1]]


@pytest.mark.parametrize(("version", "turin"), [(2, False), (3, False), (4, True), (5, True)])
def test_round_trip(version: int, turin: bool) -> None:
    data = evidence(version, turin=turin)
    raw, certs = report_from_trustee(data)
    assert parse_report(raw).version == version
    assert trustee_from_report(raw, certs) == data
    assert ("cpuid_fam_id" in data["attestation_report"]) is (version >= 3)
    assert ("launch_mit_vector" in data["attestation_report"]) is (version >= 5)


def test_primitive_fields_reach_their_offsets() -> None:
    data = evidence()
    data["attestation_report"]["measurement"] = list(range(48))
    data["attestation_report"]["guest_svn"] = 0x01020304
    raw, _ = report_from_trustee(data)
    assert raw[0x90 : 0x90 + 48] == bytes(range(48))
    assert raw[4:8] == bytes([4, 3, 2, 1])


def mutated(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    data = evidence()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()
R = "attestation_report"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ((R, "measurement"), list(range(47)), "measurement"),
        ((R, "measurement"), [256] * 48, "measurement"),
        ((R, "measurement"), "aa" * 48, "measurement"),
        ((R, "guest_svn"), -1, "guest_svn"),
        ((R, "policy"), 1 << 64, "policy"),
        ((R, "policy"), 0, "bit 17"),  # the rebuilt report goes through the parser
        ((R, "sig_algo"), 2, "signature_algo"),
        ((R, "vmpl"), "0", "vmpl"),
        ((R, "signature"), _DELETE, "signature"),
        ((R, "current_tcb", "fmc"), None, "current_tcb"),  # a Milan TCB among Turin ones
        ((R, "launch_tcb", "fmc"), None, "launch_tcb"),
        ((R, "cpuid_fam_id"), 0x19, "current_tcb has 'fmc'"),  # a Genoa report with Turin TCBs
        ((R, "surprise"), 1, "surprise"),
        (("cert_chain", 0, "cert_type"), "CRL", "cert_type"),
        (("cert_chain", 0, "data"), [], "cert_chain"),
        (("cert_chain",), [{"cert_type": "VCEK", "data": [1]}] * 9, "cert_chain"),
        ((R,), _DELETE, "attestation_report"),
    ],
)
def test_malformed_evidence_is_refused(
    path: tuple[str | int, ...], value: object, message: str
) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        report_from_trustee(mutated(path, value))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_json_raises_malformed_evidence_only(data: st.DataObject) -> None:
    doc = evidence()
    report = doc[R]
    key = data.draw(st.sampled_from(sorted(report)))
    report[key] = data.draw(_json)
    if data.draw(st.booleans()):
        doc[data.draw(st.sampled_from([R, "cert_chain", "extra"]))] = data.draw(_json)
    try:
        raw, _ = report_from_trustee(copy.deepcopy(doc))
    except MalformedEvidence:
        return
    parse_report(raw)  # whatever is accepted is a well-formed report


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64))
def test_non_objects_and_junk_raise_malformed_evidence(junk: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        report_from_trustee({"attestation_report": list(junk)})
