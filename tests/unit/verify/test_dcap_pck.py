"""PCK certificate SGX extension decoding (asn1crypto) and its refusals."""

from __future__ import annotations

import pytest
from asn1crypto import core

from sealpod.errors import CertificateError
from sealpod.testing.dcap_builders import PckFacts, encode_sgx_extensions
from sealpod.verify.pck import SGX_EXTENSIONS_OID, parse_sgx_extensions

FACTS = PckFacts(
    ppid=bytes(range(16)),
    comp_svns=tuple(range(1, 17)),
    pce_svn=11,
    cpu_svn=bytes(range(16, 32)),
    pce_id=b"\x00\x01",
    fmspc=bytes.fromhex("50806f000000"),
    sgx_type=1,
)


def test_decodes_every_field() -> None:
    ext = parse_sgx_extensions(encode_sgx_extensions(FACTS))
    assert ext.ppid == FACTS.ppid
    assert ext.tcb.comp_svns == tuple(range(1, 17))
    assert ext.tcb.pce_svn == 11
    assert ext.tcb.cpu_svn == FACTS.cpu_svn
    assert ext.pce_id == b"\x00\x01"
    assert ext.fmspc.hex() == "50806f000000"
    assert ext.sgx_type == 1
    assert ext.platform_instance_id is None


def test_platform_instance_id() -> None:
    facts = PckFacts(platform_instance_id=b"\x07" * 16)
    assert parse_sgx_extensions(encode_sgx_extensions(facts)).platform_instance_id == b"\x07" * 16


def test_unknown_entries_are_ignored() -> None:
    extra = [(SGX_EXTENSIONS_OID + ".99", core.OctetString(b"future").dump())]
    ext = parse_sgx_extensions(encode_sgx_extensions(FACTS, extra=extra))
    assert ext.fmspc == FACTS.fmspc


def test_duplicate_entry_is_refused() -> None:
    extra = [(SGX_EXTENSIONS_OID + ".4", core.OctetString(bytes(6)).dump())]
    with pytest.raises(CertificateError, match="appears twice"):
        parse_sgx_extensions(encode_sgx_extensions(FACTS, extra=extra))


@pytest.mark.parametrize(
    ("facts", "match"),
    [
        (PckFacts(ppid=bytes(15)), "PPID is 15 bytes"),
        (PckFacts(fmspc=bytes(7)), "FMSPC is 7 bytes"),
        (PckFacts(pce_id=bytes(3)), "PCE-ID is 3 bytes"),
        (PckFacts(cpu_svn=bytes(8)), "CPUSVN is 8 bytes"),
        (PckFacts(comp_svns=(256,) + (0,) * 15), "component 1 SVN is 256"),
        (PckFacts(pce_svn=70000), "PCESVN is 70000"),
        (PckFacts(comp_svns=(1,) * 15), "component 16 SVN is missing"),
        (PckFacts(sgx_type=-1), "SGX Type is -1"),
    ],
)
def test_wrong_values_are_refused(facts: PckFacts, match: str) -> None:
    with pytest.raises(CertificateError, match=match) as info:
        parse_sgx_extensions(encode_sgx_extensions(facts))
    assert info.value.step == "Step 3: PCK certificate chain"


def test_garbage_is_refused() -> None:
    for data in (
        b"",
        b"\x30",
        b"\x04\x02ab",
        b"\x30\x03\x02\x01\x01",
        encode_sgx_extensions(FACTS) + b"\0",
    ):
        with pytest.raises(CertificateError):
            parse_sgx_extensions(data)


def test_missing_mandatory_entry_is_refused() -> None:
    without_fmspc = _drop(encode_sgx_extensions(FACTS), SGX_EXTENSIONS_OID + ".4")
    with pytest.raises(CertificateError, match="FMSPC is missing"):
        parse_sgx_extensions(without_fmspc)


def _drop(der: bytes, oid: str) -> bytes:
    class Entry(core.Sequence):  # type: ignore[misc]
        _fields = [("id", core.ObjectIdentifier), ("value", core.Any)]  # noqa: RUF012

    class Entries(core.SequenceOf):  # type: ignore[misc]
        _child_spec = Entry

    parsed = Entries.load(der)
    kept = [
        Entry({"id": e["id"].dotted, "value": core.Any.load(e["value"].dump())})
        for e in parsed
        if e["id"].dotted != oid
    ]
    return bytes(Entries(kept).dump())
