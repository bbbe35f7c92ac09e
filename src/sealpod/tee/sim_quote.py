"""Simulated evidence in the real formats: SGX DCAP v3 quotes, TDX v4 quotes, SNP reports.

Each is built from the evidence codecs' own dataclasses (``to_bytes()``), and signed the way the
hardware chain signs: the workload's report body by the Quoting Enclave's attestation key
(ECDSA P-256 over header || body), the QE report by the PCK key, with the QE report's REPORTDATA
binding the attestation key and QE authentication data (``SHA-256(att_key || auth) || 0*32``);
SNP reports by the VCEK (ECDSA P-384/SHA-384 over bytes 0x000-0x29F, r and s little-endian).

Where the workload's identity goes (:class:`SimIdentity`, usually from a sealed bundle):

* SGX: MRENCLAVE = measurement, MRSIGNER = signer id, ISVPRODID, ISVSVN, ATTRIBUTES.DEBUG;
* TDX: MRTD = measurement zero-extended to 48 bytes, MROWNER = signer id likewise, TD_ATTRIBUTES
  bit 0 = debug (TDX has no product id or svn);
* SNP: MEASUREMENT = measurement zero-extended to 48 bytes, GUEST_SVN = svn, FAMILY_ID = product
  id (u16 little-endian, zero-extended), ID_KEY_DIGEST = signer id zero-extended, policy bit 19 =
  debug.

A real CVM's launch measurement covers the guest image, not one container (docs/protocol.md, CVM
binding); the
simulator places the container's identity there so that every verification path has something to
compare.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from sealpod.evidence.dcap_body import SgxReportBody, Td10ReportBody
from sealpod.evidence.dcap_quote import (
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    PckCertChain,
    Quote,
    QuoteHeader,
    QuoteSignatureData,
)
from sealpod.evidence.snp_report import SIGNED_SIZE, SnpReport
from sealpod.tee import sim_config as cfg

MEASUREMENT_SIZE = 32
# SGX ATTRIBUTES.FLAGS: INIT (bit 0), DEBUG (bit 1), MODE64BIT (bit 2); XFRM x87|SSE.
_SGX_FLAGS = 0x01 | 0x04
_SGX_FLAG_DEBUG = 0x02
_SGX_XFRM = 0x03
_QE_AUTH_DATA = bytes(range(32))
_SNP_VERSION = 3
_MILAN_CPUID = (0x19, 0x01, 0x01)  # family, model, stepping
_SNP_FIRMWARE = (1, 55, 21)  # major, minor, build


@dataclass(frozen=True, slots=True, kw_only=True)
class SimIdentity:
    """The identity a simulated enclave or CVM reports (a bundle's, normally)."""

    measurement: bytes
    signer: bytes
    product_id: int = 0
    svn: int = 0
    debug: bool = False

    def __post_init__(self) -> None:
        if len(self.measurement) != MEASUREMENT_SIZE or len(self.signer) != MEASUREMENT_SIZE:
            raise ValueError("measurement and signer must be 32 bytes each")
        if not 0 <= self.product_id <= 0xFFFF or not 0 <= self.svn <= 0xFFFF:
            raise ValueError("product_id and svn must fit in 16 bits")

    def sgx_attributes(self) -> bytes:
        flags = _SGX_FLAGS | (_SGX_FLAG_DEBUG if self.debug else 0)
        return flags.to_bytes(8, "little") + _SGX_XFRM.to_bytes(8, "little")

    def to_json(self) -> dict[str, object]:
        return {
            "measurement": self.measurement.hex(),
            "signer": self.signer.hex(),
            "product_id": self.product_id,
            "svn": self.svn,
            "debug": self.debug,
        }


#: Used when no bundle is given: a fixed, recognisable identity.
UNNAMED = SimIdentity(
    measurement=hashlib.sha256(b"sealpod-sim/unnamed-workload").digest(),
    signer=hashlib.sha256(b"sealpod-sim/unnamed-signer").digest(),
)


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes, size: int) -> tuple[int, int]:
    algorithm = hashes.SHA384() if size == 48 else hashes.SHA256()
    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(algorithm)))
    return r, s


def p256_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256/SHA-256 as DCAP stores it: ``r || s``, 32 bytes each, big-endian."""
    r, s = _raw_signature(key, data, 32)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def p256_public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The attestation key as DCAP stores it: ``x || y``, 32 bytes each."""
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def _qe_report(
    qe: cfg.QeFacts, cpu_svn: bytes, attestation_key: bytes, pck_key: ec.EllipticCurvePrivateKey
) -> tuple[SgxReportBody, bytes]:
    binding = hashlib.sha256(attestation_key + _QE_AUTH_DATA).digest() + bytes(32)
    body = SgxReportBody(
        cpu_svn=cpu_svn, misc_select=0, attributes=qe.attributes, mr_enclave=qe.mr_enclave,
        mr_signer=qe.mr_signer, isv_prod_id=qe.isv_prod_id, isv_svn=qe.isv_svn,
        report_data=binding,
    )  # fmt: skip
    return body, p256_signature(pck_key, body.to_bytes())


def _sign_quote(
    header: QuoteHeader,
    body: SgxReportBody | Td10ReportBody,
    *,
    qe: cfg.QeFacts,
    cpu_svn: bytes,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: bytes,
    nested: bool,
) -> bytes:
    ak_raw = p256_public_raw(attestation_key)
    qe_report, qe_sig = _qe_report(qe, cpu_svn, ak_raw, pck_key)
    sig_data = QuoteSignatureData(
        signature=bytes(64), attestation_key=ak_raw, qe_report=qe_report,
        qe_report_signature=qe_sig, qe_auth_data=_QE_AUTH_DATA,
        certification_data=PckCertChain(pem=pck_chain_pem), nested=nested,
    )  # fmt: skip
    unsigned = Quote(header=header, body=body, signature_data=sig_data)
    signature = p256_signature(attestation_key, unsigned.signed_bytes)
    return replace(unsigned, signature_data=replace(sig_data, signature=signature)).to_bytes()


def _header(
    version: int, tee_type: int, qe: cfg.QeFacts, pce_svn: int, qe_id: bytes
) -> QuoteHeader:
    return QuoteHeader(
        version=version, tee_type=tee_type, qe_svn=qe.isv_svn, pce_svn=pce_svn,
        qe_vendor_id=cfg.INTEL_QE_VENDOR_ID, user_data=qe_id + bytes(4),
    )  # fmt: skip


def build_sgx_quote(
    identity: SimIdentity,
    report_data: bytes,
    *,
    qe_id: bytes,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: bytes,
) -> bytes:
    """A DCAP v3 SGX quote for ``identity`` with ``report_data`` (64 bytes)."""
    tcb = cfg.SGX_PCK_TCB
    body = SgxReportBody(
        cpu_svn=tcb.cpu_svn, misc_select=0, attributes=identity.sgx_attributes(),
        mr_enclave=identity.measurement, mr_signer=identity.signer,
        isv_prod_id=identity.product_id, isv_svn=identity.svn, report_data=report_data,
    )  # fmt: skip
    return _sign_quote(
        _header(3, TEE_TYPE_SGX, cfg.SGX_QE, tcb.pce_svn, qe_id), body,
        qe=cfg.SGX_QE, cpu_svn=tcb.cpu_svn, attestation_key=attestation_key, pck_key=pck_key,
        pck_chain_pem=pck_chain_pem, nested=False,
    )  # fmt: skip


def _pad48(value: bytes) -> bytes:
    return value.ljust(48, b"\x00")


def build_tdx_quote(
    identity: SimIdentity,
    report_data: bytes,
    *,
    qe_id: bytes,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: bytes,
) -> bytes:
    """A DCAP v4 TDX quote (TD 1.0 body) for ``identity`` with ``report_data``."""
    td_attributes = cfg.TDX_ATTR_SEPT_VE_DISABLE | (cfg.TDX_ATTR_DEBUG if identity.debug else 0)
    body = Td10ReportBody(
        tee_tcb_svn=cfg.TDX_TEE_TCB_SVN, mr_seam=cfg.TDX_MR_SEAM,
        mr_signer_seam=cfg.TDX_MR_SIGNER_SEAM, seam_attributes=cfg.TDX_SEAM_ATTRIBUTES,
        td_attributes=td_attributes.to_bytes(8, "little"), xfam=cfg.TDX_XFAM,
        mr_td=_pad48(identity.measurement), mr_config_id=bytes(48),
        mr_owner=_pad48(identity.signer), mr_owner_config=bytes(48),
        rt_mr0=bytes(48), rt_mr1=bytes(48), rt_mr2=bytes(48), rt_mr3=bytes(48),
        report_data=report_data,
    )  # fmt: skip
    tcb = cfg.TDX_PCK_TCB
    return _sign_quote(
        _header(4, TEE_TYPE_TDX, cfg.TDX_QE, tcb.pce_svn, qe_id), body,
        qe=cfg.TDX_QE, cpu_svn=tcb.cpu_svn, attestation_key=attestation_key, pck_key=pck_key,
        pck_chain_pem=pck_chain_pem, nested=True,
    )  # fmt: skip


def build_snp_report(
    identity: SimIdentity,
    report_data: bytes,
    *,
    chip_id: bytes,
    vcek_key: ec.EllipticCurvePrivateKey,
    vmpl: int = 0,
) -> bytes:
    """A version-3 SNP attestation report (Milan) signed by the simulated VCEK."""
    tcb = cfg.SNP_TCB.to_u64()
    policy = cfg.SNP_POLICY_BASE | (cfg.SNP_POLICY_DEBUG if identity.debug else 0)
    major, minor, build = _SNP_FIRMWARE
    family, model, stepping = _MILAN_CPUID
    unsigned = SnpReport(
        version=_SNP_VERSION, guest_svn=identity.svn, policy=policy,
        family_id=identity.product_id.to_bytes(2, "little").ljust(16, b"\x00"),
        image_id=bytes(16), vmpl=vmpl, signature_algo=1, current_tcb=tcb,
        platform_info=cfg.SNP_PLATFORM_INFO, key_info=0, report_data=report_data,
        measurement=_pad48(identity.measurement), host_data=bytes(32),
        id_key_digest=_pad48(identity.signer), author_key_digest=bytes(48),
        report_id=secrets.token_bytes(32), report_id_ma=b"\xff" * 32, reported_tcb=tcb,
        cpuid_fam_id=family, cpuid_mod_id=model, cpuid_step=stepping, chip_id=chip_id,
        committed_tcb=tcb, current_build=build, current_minor=minor, current_major=major,
        committed_build=build, committed_minor=minor, committed_major=major, launch_tcb=tcb,
        launch_mit_vector=None, current_mit_vector=None,
        signature_r=bytes(72), signature_s=bytes(72),
    )  # fmt: skip
    r, s = _raw_signature(vcek_key, unsigned.to_bytes()[:SIGNED_SIZE], 48)
    signed = replace(
        unsigned, signature_r=r.to_bytes(72, "little"), signature_s=s.to_bytes(72, "little")
    )
    return signed.to_bytes()
