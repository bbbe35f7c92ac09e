"""Hostile collateral and PCK extensions: only typed sealpod errors, never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealpod.collateral.models import (
    QeIdentity,
    QuoteCollateral,
    TcbInfo,
    crl_to_der,
    split_signed_json,
)
from sealpod.errors import CertificateError, MalformedCollateral, SealpodError
from sealpod.testing.dcap_builders import (
    DcapPki,
    PckFacts,
    encode_sgx_extensions,
    qe_identity_document,
    tcb_info_document,
)
from sealpod.verify.dcap import DcapVerifier
from sealpod.verify.pck import parse_sgx_extensions

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20)
)  # fmt: skip
JSON = st.recursive(SCALARS, _containers, max_leaves=8)


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_split_signed_json_random(body: bytes) -> None:
    try:
        raw, sig = split_signed_json(body, "tcbInfo", what="t")
    except MalformedCollateral:
        return
    assert raw in body.decode() and len(sig) == 64


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(doc))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


TCB_DOC = tcb_info_document(tee="tdx", issue=NOW, next_update=NOW + timedelta(days=1))
QE_DOC = qe_identity_document(tee="tdx", issue=NOW, next_update=NOW + timedelta(days=1))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_tcb_info_with_a_random_value_anywhere(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_paths(TCB_DOC)))
    doc = _replace(TCB_DOC, path, data.draw(JSON))
    try:
        TcbInfo.from_raw(json.dumps(doc))
    except MalformedCollateral:
        pass


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_qe_identity_with_a_random_value_anywhere(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(_paths(QE_DOC)))
    doc = _replace(QE_DOC, path, data.draw(JSON))
    try:
        QeIdentity.from_raw(json.dumps(doc))
    except MalformedCollateral:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_dcap_qvl_json_random(text: str) -> None:
    try:
        QuoteCollateral.from_dcap_qvl_json(text)
    except MalformedCollateral:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_crl_to_der_random(data: bytes | str) -> None:
    try:
        out = crl_to_der(data)
    except MalformedCollateral:
        return
    assert out[:1] == b"\x30"


EXTENSION = encode_sgx_extensions(PckFacts(platform_instance_id=bytes(16)))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=600)
    | st.tuples(st.integers(0, len(EXTENSION) - 1), st.integers(1, 255)).map(
        lambda t: EXTENSION[: t[0]] + bytes([EXTENSION[t[0]] ^ t[1]]) + EXTENSION[t[0] + 1 :]
    )
    | st.integers(0, len(EXTENSION)).map(lambda n: EXTENSION[:n])
)
def test_sgx_extension_random_and_mutated(data: bytes) -> None:
    try:
        parse_sgx_extensions(data)
    except CertificateError:
        pass


FIELDS = [
    "pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
    "tcb_info_signature", "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
]  # fmt: skip


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(FIELDS), where=st.integers(0, 1 << 16), mask=st.integers(1, 127))
def test_flipped_collateral_is_refused_with_a_typed_error(
    pki: DcapPki, field: str, where: int, mask: int
) -> None:
    collateral = pki.collateral()
    value = getattr(collateral, field)
    assert value
    data = bytearray(value.encode() if isinstance(value, str) else value)
    i = where % len(data)
    data[i] ^= mask
    changed: str | bytes = bytes(data).decode("latin-1") if isinstance(value, str) else bytes(data)
    broken = collateral.model_copy(update={field: changed})
    verifier = DcapVerifier(pki.trust())
    try:
        verifier.verify(pki.quote().to_bytes(), broken, now=NOW)
    except SealpodError:
        return
    # Only the informational PCK CRL issuer chain, or whitespace in a PEM, may change freely.
    assert field in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain")
