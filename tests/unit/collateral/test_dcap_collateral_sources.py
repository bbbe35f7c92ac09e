"""File-based collateral sources."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealpod.collateral.models import DcapCollateralProvider
from sealpod.collateral.sources import (
    DirectoryCollateralProvider,
    StaticCollateralProvider,
    load_collateral_file,
    load_collateral_parts,
)
from sealpod.errors import CollateralUnavailable, MalformedCollateral
from sealpod.testing.dcap_builders import DcapPki, pcs_response, pem
from sealpod.verify.claims import TeeKind
from sealpod.verify.dcap import DcapVerifier

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pki() -> DcapPki:
    return DcapPki.create(now=NOW)


def test_collateral_file_round_trip(pki: DcapPki, tmp_path: Path) -> None:
    collateral = pki.collateral()
    path = tmp_path / "c.json"
    path.write_text(collateral.to_dcap_qvl_json())
    assert load_collateral_file(path) == collateral
    provider = StaticCollateralProvider(load_collateral_file(path))
    assert isinstance(provider, DcapCollateralProvider)
    assert provider.get("00906ed50000", "platform", TeeKind.SGX) == collateral


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CollateralUnavailable, match="does not exist"):
        load_collateral_file(tmp_path / "absent.json")
    with pytest.raises(CollateralUnavailable, match="directory"):
        load_collateral_file(tmp_path)
    (tmp_path / "bad.json").write_text('{"tcb_info": 1}')
    with pytest.raises(MalformedCollateral):
        load_collateral_file(tmp_path / "bad.json")


def test_parts_from_pcs_files_verify(pki: DcapPki, tmp_path: Path) -> None:
    c = pki.collateral(tee="tdx")
    files = {
        "tcb.json": pcs_response("tcbInfo", c.tcb_info, c.tcb_info_signature),
        "qe.json": pcs_response("enclaveIdentity", c.qe_identity, c.qe_identity_signature),
        "root.crl": c.root_ca_crl,
        "pck.crl": c.pck_crl or b"",
        "chain.pem": c.tcb_info_issuer_chain.encode(),
        "pckchain.pem": (pem(pki.pck_ca) + pem(pki.root)).encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    got = load_collateral_parts(
        tcb_info=tmp_path / "tcb.json", qe_identity=tmp_path / "qe.json",
        root_crl=tmp_path / "root.crl", tcb_chain=tmp_path / "chain.pem",
        pck_crl=tmp_path / "pck.crl", pck_crl_chain=tmp_path / "pckchain.pem",
    )  # fmt: skip
    assert got.tcb_info == c.tcb_info and got.qe_identity_issuer_chain == c.tcb_info_issuer_chain
    claims = DcapVerifier(pki.trust()).verify(pki.quote(tee="tdx").to_bytes(), got, now=NOW)
    assert claims.emulated is TeeKind.TDX


def test_directory_provider(pki: DcapPki, tmp_path: Path) -> None:
    collateral = pki.collateral()
    (tmp_path / "sgx-00906ed50000.json").write_text(collateral.to_dcap_qvl_json())
    provider = DirectoryCollateralProvider(tmp_path)
    assert provider.get("00906ED50000", "platform", TeeKind.SGX) == collateral
    with pytest.raises(CollateralUnavailable, match="no collateral"):
        provider.get("00906ED50000", "platform", TeeKind.TDX)
