"""Signed DCAP collateral of the simulated platform, in exactly Intel PCS's formats.

TCB Info v3 (``id`` SGX or TDX) and QE Identity v2 (``QE`` / ``TD_QE``) are JSON strings signed
by the simulated TCB Signing key (ECDSA P-256 over the exact UTF-8 bytes of the string, signature
``r || s``), with their issuer chain (TCB Signing + root); the root CA CRL and the PCK CRL are DER
CRLs signed by the root and the PCK Platform CA. Together they are dcap-qvl's
``QuoteCollateralV3``, which is also what :class:`sealpod.collateral.models.QuoteCollateral`
models, so the real verifier consumes them unchanged.

The TCB status that the platform's own TCB level carries is the one ``sealpod sim set-tcb``
chose. When it is not ``UpToDate``, a higher ``UpToDate`` level the platform does not reach is
listed first, so that verifiers really walk the levels; an older ``OutOfDate`` level follows.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from sealpod.errors import CollateralUnavailable
from sealpod.tee import sim_config as cfg
from sealpod.tee.sim_pki import PckTcb, cert_pem, issue_crl
from sealpod.verify.claims import TcbStatus, TeeKind

if TYPE_CHECKING:
    from sealpod.collateral.models import QuoteCollateral

#: Real PCS collateral is valid for 30 days; the simulated one too, counted from ``now``.
COLLATERAL_VALIDITY = dt.timedelta(days=30)
#: Issued an hour in the past so that small clock differences never make it "not yet valid".
ISSUE_BACKDATE = dt.timedelta(hours=1)
_TCB_INFO_VERSION = 3
_QE_IDENTITY_VERSION = 2
_MISCSELECT = "00000000"
_MISCSELECT_MASK = "FFFFFFFF"
_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"


@dataclass(frozen=True, slots=True, kw_only=True)
class IntelSimPki:
    """The simulated Intel-side PKI (certificates and the keys that sign collateral)."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey = field(repr=False)
    pck_ca: x509.Certificate
    pck_ca_key: ec.EllipticCurvePrivateKey = field(repr=False)
    tcb_signing: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimCollateral:
    """One complete set of DCAP collateral (field names and meaning as QuoteCollateralV3)."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def to_dcap_qvl_json(self) -> str:
        """dcap-qvl's collateral JSON: CRLs and signatures hex, signed bodies as strings."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex(),
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            },
            indent=2,
        )

    def tcb_info_response(self) -> str:
        """The PCS ``/tcb`` response body: the signed string embedded verbatim."""
        return f'{{"tcbInfo":{self.tcb_info},"signature":"{self.tcb_info_signature.hex()}"}}'

    def qe_identity_response(self) -> str:
        """The PCS ``/qe/identity`` response body."""
        return (
            f'{{"enclaveIdentity":{self.qe_identity},'
            f'"signature":"{self.qe_identity_signature.hex()}"}}'
        )

    def to_model(self) -> QuoteCollateral:
        """The verifier's collateral model, built from the dcap-qvl JSON form."""
        from sealpod.collateral.models import QuoteCollateral

        return QuoteCollateral.from_dcap_qvl_json(self.to_dcap_qvl_json())


def sign_json_text(key: ec.EllipticCurvePrivateKey, text: str) -> bytes:
    """ECDSA-P256-SHA256 over the UTF-8 bytes of ``text``, as 64 bytes ``r || s``."""
    der = key.sign(text.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def _level(
    tcb: dict[str, object], date: str, status: TcbStatus, advisories: tuple[str, ...]
) -> dict[str, object]:
    level: dict[str, object] = {"tcb": tcb, "tcbDate": date, "tcbStatus": status.value}
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _sgx_tcb(pck: PckTcb, bump: int) -> dict[str, object]:
    comps = list(pck.components)
    comps[0] += bump
    return {"sgxtcbcomponents": [{"svn": s} for s in comps], "pcesvn": pck.pce_svn}


def _tdx_tcb(pck: PckTcb, tee_tcb_svn: bytes, bump: int) -> dict[str, object]:
    # Index 2 (late microcode) moves; indices 0-1 are the module's and are matched through
    # tdxModuleIdentities instead.
    tdx = list(tee_tcb_svn)
    tdx[2] += bump
    return {
        "sgxtcbcomponents": [{"svn": s} for s in pck.components],
        "pcesvn": pck.pce_svn,
        "tdxtcbcomponents": [{"svn": s} for s in tdx],
    }


def _levels(kind: TeeKind, config: cfg.SimConfig, issued: dt.datetime) -> list[dict[str, object]]:
    def tcb(bump: int) -> dict[str, object]:
        if kind is TeeKind.TDX:
            return _tdx_tcb(cfg.TDX_PCK_TCB, cfg.TDX_TEE_TCB_SVN, bump)
        return _sgx_tcb(cfg.SGX_PCK_TCB, bump)

    created = dt.datetime.fromisoformat(config.created.replace("Z", "+00:00"))
    day = dt.timedelta(days=1)
    levels = []
    if config.status is not TcbStatus.UP_TO_DATE:
        levels.append(_level(tcb(+1), cfg.iso_z(issued - day), TcbStatus.UP_TO_DATE, ()))
    levels.append(_level(tcb(0), cfg.iso_z(created - day), config.status, config.advisory_ids))
    levels.append(
        _level(tcb(-1), cfg.iso_z(created - 365 * day), TcbStatus.OUT_OF_DATE, ("SIM-SA-00001",))
    )
    return levels


def tcb_info_text(kind: TeeKind, config: cfg.SimConfig, issued: dt.datetime) -> str:
    """The TCB Info v3 JSON string for the simulated SGX or TDX platform."""
    body: dict[str, object] = {
        "id": "TDX" if kind is TeeKind.TDX else "SGX",
        "version": _TCB_INFO_VERSION,
        "issueDate": cfg.iso_z(issued),
        "nextUpdate": cfg.iso_z(issued + COLLATERAL_VALIDITY),
        "fmspc": (cfg.TDX_FMSPC if kind is TeeKind.TDX else cfg.SGX_FMSPC).hex().upper(),
        "pceId": cfg.PCE_ID.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": config.tcb_evaluation_data_number,
    }
    if kind is TeeKind.TDX:
        module = {
            "mrsigner": cfg.TDX_MR_SIGNER_SEAM.hex().upper(),
            "attributes": cfg.TDX_SEAM_ATTRIBUTES.hex().upper(),
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
        body["tdxModule"] = module
        major, minor = cfg.TDX_TEE_TCB_SVN[1], cfg.TDX_TEE_TCB_SVN[0]
        body["tdxModuleIdentities"] = [
            {
                "id": f"TDX_{major:02X}",
                **module,
                "tcbLevels": [
                    _level({"isvsvn": minor}, cfg.iso_z(issued), TcbStatus.UP_TO_DATE, ()),
                    _level(
                        {"isvsvn": minor - 2}, "2023-08-09T00:00:00Z", TcbStatus.OUT_OF_DATE, ()
                    ),
                ],
            }
        ]
    body["tcbLevels"] = _levels(kind, config, issued)
    return _dump(body)


def qe_identity_text(qe: cfg.QeFacts, config: cfg.SimConfig, issued: dt.datetime) -> str:
    """The QE Identity v2 JSON string for the simulated (TD) Quoting Enclave."""
    return _dump(
        {
            "id": qe.identity_id,
            "version": _QE_IDENTITY_VERSION,
            "issueDate": cfg.iso_z(issued),
            "nextUpdate": cfg.iso_z(issued + COLLATERAL_VALIDITY),
            "tcbEvaluationDataNumber": config.tcb_evaluation_data_number,
            "miscselect": _MISCSELECT,
            "miscselectMask": _MISCSELECT_MASK,
            "attributes": qe.attributes.hex().upper(),
            "attributesMask": _ATTRIBUTES_MASK,
            "mrsigner": qe.mr_signer.hex().upper(),
            "isvprodid": qe.isv_prod_id,
            "tcbLevels": [
                _level({"isvsvn": qe.isv_svn}, cfg.iso_z(issued), TcbStatus.UP_TO_DATE, ()),
                _level(
                    {"isvsvn": qe.isv_svn - 2},
                    "2021-11-10T00:00:00Z",
                    TcbStatus.OUT_OF_DATE,
                    ("SIM-SA-00002",),
                ),
            ],
        }
    )


def build_collateral(
    kind: TeeKind,
    *,
    pki: IntelSimPki,
    config: cfg.SimConfig,
    now: dt.datetime,
    revoked_pck_serials: tuple[int, ...] = (),
) -> SimCollateral:
    """Sign a fresh collateral set for ``kind`` (SGX or TDX), valid from ``now`` on."""
    issued = now.astimezone(dt.UTC).replace(microsecond=0) - ISSUE_BACKDATE
    tcb_info = tcb_info_text(kind, config, issued)
    qe = cfg.TDX_QE if kind is TeeKind.TDX else cfg.SGX_QE
    qe_identity = qe_identity_text(qe, config, issued)
    number = config.tcb_evaluation_data_number
    root_crl = issue_crl(
        issuer=pki.root, issuer_key=pki.root_key, revoked_serials=(),
        this_update=issued, next_update=issued + COLLATERAL_VALIDITY, number=number,
    )  # fmt: skip
    pck_crl = issue_crl(
        issuer=pki.pck_ca, issuer_key=pki.pck_ca_key, revoked_serials=revoked_pck_serials,
        this_update=issued, next_update=issued + COLLATERAL_VALIDITY, number=number,
    )  # fmt: skip
    signing_chain = cert_pem(pki.tcb_signing, pki.root).decode("ascii")
    return SimCollateral(
        pck_crl_issuer_chain=cert_pem(pki.pck_ca, pki.root).decode("ascii"),
        root_ca_crl=root_crl,
        pck_crl=pck_crl,
        tcb_info_issuer_chain=signing_chain,
        tcb_info=tcb_info,
        tcb_info_signature=sign_json_text(pki.tcb_signing_key, tcb_info),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=qe_identity,
        qe_identity_signature=sign_json_text(pki.tcb_signing_key, qe_identity),
    )


def kind_for_fmspc(fmspc: str) -> TeeKind:
    """Which simulated platform an FMSPC names.

    Raises:
        CollateralUnavailable: the FMSPC is not one of the simulated platform's.
    """
    value = fmspc.strip().lower()
    if value == cfg.SGX_FMSPC.hex():
        return TeeKind.SGX
    if value == cfg.TDX_FMSPC.hex():
        return TeeKind.TDX
    raise CollateralUnavailable(
        f"simulated collateral: fmspc is {fmspc!r}, expected {cfg.SGX_FMSPC.hex()} (SGX) or "
        f"{cfg.TDX_FMSPC.hex()} (TDX)"
    )
