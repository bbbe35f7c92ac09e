"""Collateral models: signed-response splitting, CRL forms, TCB Info / QE Identity shapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sealpod.collateral.models import (
    QeIdentity,
    QuoteCollateral,
    TcbInfo,
    crl_to_der,
    split_signed_json,
)
from sealpod.errors import MalformedCollateral
from sealpod.testing.dcap_builders import (
    DcapPki,
    qe_identity_document,
    tcb_info_document,
)
from sealpod.verify.claims import TcbStatus, TeeKind

NOW = datetime(2025, 3, 1, tzinfo=UTC)
SIG = "ab" * 64


def test_split_keeps_the_exact_bytes() -> None:
    value = '{ "b":1,\n  "a" : "x\\u00e9}" ,"c":[1, {"d":"}"}] }'
    body = ('{"signature":"' + SIG + '",\r\n "tcbInfo" :  ' + value + "  }\n").encode()
    raw, sig = split_signed_json(body, "tcbInfo", what="t")
    assert raw == value
    assert sig == bytes.fromhex(SIG)


def test_split_non_ascii_value_round_trips() -> None:
    value = '{"note":"Größe"}'
    raw, _ = split_signed_json(
        ('{"tcbInfo":' + value + ',"signature":"' + SIG + '"}').encode(), "tcbInfo", what="t"
    )
    assert raw.encode() == value.encode()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"tcbInfo":{},"tcbInfo":{},"signature":"' + SIG.encode() + b'"}', "twice"),
        (b'{"tcbInfo":{},"signature":"' + SIG.encode() + b'","extra":1}', "expected"),
        (b'{"tcbInfo":{},"signature":"' + SIG.encode() + b'"} x', "trailing"),
        (b'{"tcbInfo":[],"signature":"' + SIG.encode() + b'"}', "not an object"),
        (b'{"tcbInfo":{},"signature":"abcd"}', "2 bytes"),
        (b'{"tcbInfo":{},"signature":"zz"}', "hex"),
        (b'{"tcbInfo":{},"signature":' + SIG.encode() + b"}", "not JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[]", "expected '{'"),
        (b'{"tcbInfo":{}', "expected '}'"),
        (b'{"tcbInfo":NaN,"signature":"' + SIG.encode() + b'"}', "not JSON"),
        (b"{}", "expected"),
    ],
)
def test_split_refusals(body: bytes, match: str) -> None:
    with pytest.raises(MalformedCollateral, match=match):
        split_signed_json(body, "tcbInfo", what="t")


def test_crl_forms(tmp_path: object) -> None:
    pki = DcapPki.create(now=NOW)
    der = pki.collateral().root_ca_crl
    pem = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(der) + b"-----END X509 CRL-----\n"
    assert crl_to_der(der) == der
    assert crl_to_der(pem) == der
    assert crl_to_der(der.hex()) == der
    assert crl_to_der("0x" + der.hex().upper()) == der
    # as PCS mirrors serve it too: on one line, or indented (OpenSSL reads both)
    one_line = b"-----BEGIN X509 CRL-----" + base64.b64encode(der) + b"-----END X509 CRL-----"
    assert crl_to_der(one_line) == der
    assert crl_to_der(pem.replace(b"\n", b"\n    ")) == der
    with pytest.raises(MalformedCollateral, match="PEM"):
        crl_to_der(b"-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n")
    for bad in (b"", b"hello", b"abcd", "not hex at all"):
        with pytest.raises(MalformedCollateral):
            crl_to_der(bad)


def _tcb(**over: Any) -> dict[str, Any]:
    doc = tcb_info_document(tee="tdx", issue=NOW, next_update=NOW + timedelta(days=30))
    doc.update(over)
    return doc


def test_tcb_info_accessors() -> None:
    info = TcbInfo.from_raw(json.dumps(_tcb()))
    assert info.tee is TeeKind.TDX
    level = info.tcb_levels[0]
    assert level.sgx_svns == (2,) * 16 and level.pce_svn == 13 and level.tdx_svns == (1,) * 16
    assert level.tcb_status is TcbStatus.UP_TO_DATE and level.advisory_ids == ()


def _flat_level(status: str = "UpToDate") -> dict[str, Any]:
    tcb = {f"sgxtcbcomp{i:02d}svn": i for i in range(1, 17)} | {"pcesvn": 7}
    return {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}


def test_tcb_info_v2() -> None:
    doc = {
        "version": 2, "issueDate": "2025-01-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z",
        "fmspc": "00906ed50000", "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 16,
        "tcbLevels": [_flat_level()],
    }  # fmt: skip
    info = TcbInfo.from_raw(json.dumps(doc))
    assert info.tee is TeeKind.SGX
    assert info.tcb_levels[0].sgx_svns == tuple(range(1, 17))
    assert info.tcb_levels[0].tdx_svns is None
    doc["id"] = "SGX"
    with pytest.raises(MalformedCollateral, match="v2 has no id"):
        TcbInfo.from_raw(json.dumps(doc))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"id": None}, "needs an id"),
        ({"tdxModule": None}, "needs tdxModule"),
        ({"id": "SGX"}, "cannot carry TDX"),
        ({"fmspc": "00906E"}, "6 bytes"),
        ({"fmspc": "zz906ed50000"}, "hex"),
        ({"issueDate": "2025-03-01T00:00:00"}, "timezone"),
        ({"version": 4}, "version"),
        ({"surprise": True}, "surprise"),
        ({"tcbLevels": []}, "at least 1"),
        ({"tcbEvaluationDataNumber": "17"}, "integer"),
    ],
)
def test_tcb_info_refusals(change: dict[str, Any], match: str) -> None:
    doc = _tcb()
    for key, value in change.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    with pytest.raises(MalformedCollateral, match=match):
        TcbInfo.from_raw(json.dumps(doc))


def test_tcb_level_refusals() -> None:
    doc = _tcb()
    doc["tcbLevels"][0]["tcbStatus"] = "Fine"
    with pytest.raises(MalformedCollateral, match="tcbStatus"):
        TcbInfo.from_raw(json.dumps(doc))
    doc = _tcb()
    doc["tcbLevels"][0]["tcb"]["sgxtcbcomponents"] = doc["tcbLevels"][0]["tcb"]["sgxtcbcomponents"][
        :15
    ]
    with pytest.raises(MalformedCollateral, match="16"):
        TcbInfo.from_raw(json.dumps(doc))
    doc = _tcb()
    doc["tcbLevels"][0]["tcb"]["sgxtcbcomponents"][0]["svn"] = 256
    with pytest.raises(MalformedCollateral, match="255"):
        TcbInfo.from_raw(json.dumps(doc))


def test_qe_identity_model() -> None:
    doc = qe_identity_document(tee="sgx", issue=NOW, next_update=NOW + timedelta(days=1))
    qe = QeIdentity.from_raw(json.dumps(doc))
    assert qe.id == "QE" and qe.isvprodid == 1 and len(qe.mrsigner) == 32
    doc["tcbLevels"][0]["tcbStatus"] = "SWHardeningNeeded"
    with pytest.raises(MalformedCollateral, match="UpToDate/OutOfDate/Revoked"):
        QeIdentity.from_raw(json.dumps(doc))
    doc = qe_identity_document(tee="sgx", issue=NOW, next_update=NOW + timedelta(days=1))
    doc["mrsigner"] = "00" * 31
    with pytest.raises(MalformedCollateral, match="32 bytes"):
        QeIdentity.from_raw(json.dumps(doc))
    with pytest.raises(MalformedCollateral):
        QeIdentity.from_raw(b"not json")


def test_dcap_qvl_json_round_trip_and_refusals() -> None:
    collateral = DcapPki.create(now=NOW).collateral()
    text = collateral.to_dcap_qvl_json()
    assert QuoteCollateral.from_dcap_qvl_json(text) == collateral
    doc = json.loads(text)
    doc["pck_crl"] = ""
    assert QuoteCollateral.from_dcap_qvl_json(json.dumps(doc)).pck_crl is None
    doc["pck_certificate_chain"] = None  # newer dcap-qvl field, accepted and unused
    QuoteCollateral.from_dcap_qvl_json(json.dumps(doc))
    for broken, match in (
        ({**doc, "extra": 1}, "unknown fields"),
        ({k: v for k, v in doc.items() if k != "tcb_info"}, "missing fields"),
        ({**doc, "tcb_info_signature": "00"}, "1 bytes"),
        ({**doc, "root_ca_crl": 5}, "string"),
        ({**doc, "tcb_info": 5}, "tcb_info"),
    ):
        with pytest.raises(MalformedCollateral, match=match):
            QuoteCollateral.from_dcap_qvl_json(json.dumps(broken))
    for not_object in ("[]", "nope", "1e999999"):
        with pytest.raises(MalformedCollateral):
            QuoteCollateral.from_dcap_qvl_json(not_object)


def test_digest_covers_every_field() -> None:
    collateral = DcapPki.create(now=NOW).collateral()
    base = collateral.digest()
    assert base == QuoteCollateral.from_dcap_qvl_json(collateral.to_dcap_qvl_json()).digest()
    for name, value in (
        ("tcb_info", collateral.tcb_info + " "),
        ("pck_crl", None),
        ("qe_identity_signature", bytes(64)),
        ("pck_crl_issuer_chain", ""),
    ):
        assert collateral.model_copy(update={name: value}).digest() != base, name
