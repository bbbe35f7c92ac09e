"""Report bodies carried in Intel DCAP quotes: the SGX enclave report and the TDX TD reports.

Layouts:
- ``SgxReportBody`` (384 bytes): Intel SDM vol. 3D, REPORTBODY (``sgx_report_body_t`` in
  ``sgx_report.h``), also the "ISV Enclave Report Body" and "QE Report" of the DCAP quote
  format (Intel SGX ECDSA Quote Library API, appendix A.3/A.4). The quote format document calls
  the KSS fields (``isv_ext_prod_id``, ``config_id``, ``config_svn``, ``isv_family_id``)
  reserved; they are named here so that an enclave using Key Separation and Sharing is not
  refused, and only the ranges that are reserved in the SDM are required to be zero.
- ``Td10ReportBody`` (584 bytes) and ``Td15ReportBody`` (648 bytes, adds ``tee_tcb_svn2`` and
  ``mr_service_td``): Intel TDX DCAP Quoting Library API, "TD Quote Body" (quote v4 and v5).

Each body is a frozen dataclass with a ``to_bytes()`` that reproduces the parsed bytes exactly;
``raw`` keeps the bytes as received (empty for a body built in code).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealpod._binary import Reader, Writer

SGX_REPORT_BODY_SIZE = 384
TD10_REPORT_BODY_SIZE = 584
TD15_REPORT_BODY_SIZE = 648

CPU_SVN_SIZE = 16
ATTRIBUTES_SIZE = 16
SGX_MEASUREMENT_SIZE = 32
REPORT_DATA_SIZE = 64
TDX_MEASUREMENT_SIZE = 48
TEE_TCB_SVN_SIZE = 16

# SGX ATTRIBUTES.FLAGS bit 1 (SDM 38.7.1): the enclave was launched in debug mode.
SGX_ATTRIBUTES_DEBUG = 0x02
# TDX TD_ATTRIBUTES bit 0 (TUD.DEBUG): the TD is debuggable by the host VMM.
TD_ATTRIBUTES_DEBUG = 0x01


@dataclass(frozen=True, slots=True, kw_only=True)
class SgxReportBody:
    """SGX REPORTBODY: an enclave's identity as measured by the CPU."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes = bytes(16)
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes = bytes(64)
    isv_prod_id: int
    isv_svn: int
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)
    report_data: bytes
    raw: bytes = field(default=b"", repr=False, compare=False)

    SIZE = SGX_REPORT_BODY_SIZE

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "sgx report body") -> SgxReportBody:
        """Parse exactly 384 bytes.

        Raises:
            MalformedEvidence: wrong size, or a reserved byte is not zero.
        """
        r = Reader(data, name=name)
        cpu_svn = r.take(CPU_SVN_SIZE, "cpu_svn")
        misc_select = r.u32("misc_select")
        r.zeros(12, "reserved1")
        isv_ext_prod_id = r.take(16, "isv_ext_prod_id")
        attributes = r.take(ATTRIBUTES_SIZE, "attributes")
        mr_enclave = r.take(SGX_MEASUREMENT_SIZE, "mr_enclave")
        r.zeros(32, "reserved2")
        mr_signer = r.take(SGX_MEASUREMENT_SIZE, "mr_signer")
        r.zeros(32, "reserved3")
        config_id = r.take(64, "config_id")
        isv_prod_id = r.u16("isv_prod_id")
        isv_svn = r.u16("isv_svn")
        config_svn = r.u16("config_svn")
        r.zeros(42, "reserved4")
        isv_family_id = r.take(16, "isv_family_id")
        report_data = r.take(REPORT_DATA_SIZE, "report_data")
        body = cls(
            cpu_svn=cpu_svn,
            misc_select=misc_select,
            isv_ext_prod_id=isv_ext_prod_id,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            config_id=config_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=isv_family_id,
            report_data=report_data,
            raw=bytes(data),
        )
        r.end()
        return body

    def to_bytes(self) -> bytes:
        return (
            Writer()
            .raw(self.cpu_svn, CPU_SVN_SIZE)
            .u32(self.misc_select)
            .zeros(12)
            .raw(self.isv_ext_prod_id, 16)
            .raw(self.attributes, ATTRIBUTES_SIZE)
            .raw(self.mr_enclave, SGX_MEASUREMENT_SIZE)
            .zeros(32)
            .raw(self.mr_signer, SGX_MEASUREMENT_SIZE)
            .zeros(32)
            .raw(self.config_id, 64)
            .u16(self.isv_prod_id)
            .u16(self.isv_svn)
            .u16(self.config_svn)
            .zeros(42)
            .raw(self.isv_family_id, 16)
            .raw(self.report_data, REPORT_DATA_SIZE)
            .getvalue()
        )

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG: the enclave's memory is readable by a debugger."""
        return bool(self.attributes[0] & SGX_ATTRIBUTES_DEBUG)


def _parse_td10_fields(r: Reader) -> dict[str, bytes]:
    return {
        "tee_tcb_svn": r.take(TEE_TCB_SVN_SIZE, "tee_tcb_svn"),
        "mr_seam": r.take(TDX_MEASUREMENT_SIZE, "mr_seam"),
        "mr_signer_seam": r.take(TDX_MEASUREMENT_SIZE, "mr_signer_seam"),
        "seam_attributes": r.take(8, "seam_attributes"),
        "td_attributes": r.take(8, "td_attributes"),
        "xfam": r.take(8, "xfam"),
        "mr_td": r.take(TDX_MEASUREMENT_SIZE, "mr_td"),
        "mr_config_id": r.take(TDX_MEASUREMENT_SIZE, "mr_config_id"),
        "mr_owner": r.take(TDX_MEASUREMENT_SIZE, "mr_owner"),
        "mr_owner_config": r.take(TDX_MEASUREMENT_SIZE, "mr_owner_config"),
        "rt_mr0": r.take(TDX_MEASUREMENT_SIZE, "rt_mr0"),
        "rt_mr1": r.take(TDX_MEASUREMENT_SIZE, "rt_mr1"),
        "rt_mr2": r.take(TDX_MEASUREMENT_SIZE, "rt_mr2"),
        "rt_mr3": r.take(TDX_MEASUREMENT_SIZE, "rt_mr3"),
        "report_data": r.take(REPORT_DATA_SIZE, "report_data"),
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Td10ReportBody:
    """TDX 1.0 TD quote body: the TDX module's identity and the TD's measurements."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rt_mr0: bytes
    rt_mr1: bytes
    rt_mr2: bytes
    rt_mr3: bytes
    report_data: bytes
    raw: bytes = field(default=b"", repr=False, compare=False)

    SIZE = TD10_REPORT_BODY_SIZE

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "td10 report body") -> Td10ReportBody:
        """Parse exactly 584 bytes.

        Raises:
            MalformedEvidence: wrong size.
        """
        r = Reader(data, name=name)
        fields = _parse_td10_fields(r)
        r.end()
        return cls(**fields, raw=bytes(data))

    def _write_td10(self, w: Writer) -> Writer:
        return (
            w.raw(self.tee_tcb_svn, TEE_TCB_SVN_SIZE)
            .raw(self.mr_seam, TDX_MEASUREMENT_SIZE)
            .raw(self.mr_signer_seam, TDX_MEASUREMENT_SIZE)
            .raw(self.seam_attributes, 8)
            .raw(self.td_attributes, 8)
            .raw(self.xfam, 8)
            .raw(self.mr_td, TDX_MEASUREMENT_SIZE)
            .raw(self.mr_config_id, TDX_MEASUREMENT_SIZE)
            .raw(self.mr_owner, TDX_MEASUREMENT_SIZE)
            .raw(self.mr_owner_config, TDX_MEASUREMENT_SIZE)
            .raw(self.rt_mr0, TDX_MEASUREMENT_SIZE)
            .raw(self.rt_mr1, TDX_MEASUREMENT_SIZE)
            .raw(self.rt_mr2, TDX_MEASUREMENT_SIZE)
            .raw(self.rt_mr3, TDX_MEASUREMENT_SIZE)
            .raw(self.report_data, REPORT_DATA_SIZE)
        )

    def to_bytes(self) -> bytes:
        return self._write_td10(Writer()).getvalue()

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rt_mr0, self.rt_mr1, self.rt_mr2, self.rt_mr3)

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.TUD.DEBUG: the host can read and change the TD's state."""
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)


@dataclass(frozen=True, slots=True, kw_only=True)
class Td15ReportBody(Td10ReportBody):
    """TDX 1.5 TD quote body (quote v5 body type 3): TD 1.0 plus two fields."""

    tee_tcb_svn2: bytes
    mr_service_td: bytes

    SIZE = TD15_REPORT_BODY_SIZE

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "td15 report body") -> Td15ReportBody:
        """Parse exactly 648 bytes.

        Raises:
            MalformedEvidence: wrong size.
        """
        r = Reader(data, name=name)
        fields = _parse_td10_fields(r)
        fields["tee_tcb_svn2"] = r.take(TEE_TCB_SVN_SIZE, "tee_tcb_svn2")
        fields["mr_service_td"] = r.take(TDX_MEASUREMENT_SIZE, "mr_service_td")
        r.end()
        return cls(**fields, raw=bytes(data))

    def to_bytes(self) -> bytes:
        return (
            self._write_td10(Writer())
            .raw(self.tee_tcb_svn2, TEE_TCB_SVN_SIZE)
            .raw(self.mr_service_td, TDX_MEASUREMENT_SIZE)
            .getvalue()
        )


ReportBody = SgxReportBody | Td10ReportBody | Td15ReportBody
