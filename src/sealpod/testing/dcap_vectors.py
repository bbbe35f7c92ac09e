"""The DCAP entries of the shared conformance vectors (../shared/vectors/README.md, A and D).

This module knows where each quote and each piece of collateral lives in that folder and what
outcome the README states; it holds no vector data itself (the folder is never copied into the
repository). Tests, the dcap-qvl differential test and ``bench/verify_bench.py`` share it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealpod.collateral.models import QuoteCollateral
from sealpod.errors import NoMatchingTcbLevel, SealpodError
from sealpod.evidence.dcap_quote import parse_quote
from sealpod.verify.claims import TcbStatus

ONE_SECOND = timedelta(seconds=1)


def at(text: str) -> datetime:
    """An ISO-8601 UTC time such as ``2025-07-19T10:01:17Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def load_quote(root: Path, rel: str, *, strip_trailing: bool = False) -> bytes:
    """Read a quote file: raw binary, or hex text (``.hex``/``.txt``; ``0x`` and whitespace
    allowed). ``strip_trailing`` cuts whatever follows the signature data."""
    data = (root / rel).read_bytes()
    if rel.endswith((".hex", ".txt")):
        text = re.sub(rb"\s", b"", data).removeprefix(b"0x")
        data = bytes.fromhex(text.decode())
    if strip_trailing:
        data = data[: _quote_length(data)]
    return data


def _quote_length(data: bytes) -> int:
    """Header, body and signature data, from the length fields (for files with trailing text)."""
    version = int.from_bytes(data[0:2], "little")
    tee = int.from_bytes(data[4:8], "little")
    if version == 5:
        offset = 48 + 6 + int.from_bytes(data[50:54], "little")
    else:
        offset = 48 + (584 if tee == 0x81 else 384)
    return offset + 4 + int.from_bytes(data[offset : offset + 4], "little")


def pem_of(root: Path, rel: str) -> str:
    """A certificate file (DER or PEM) as PEM text."""
    data = (root / rel).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return data.decode()
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.PEM).decode()


def intel_root_pem(root: Path) -> str:
    return pem_of(root, "dcap-qvl/Intel_SGX_RootCA.der")


def signing_chain_2025(root: Path) -> str:
    """The re-issued TCB Signing certificate (2025-05-06..2032-05-06) and the Intel root."""
    return pem_of(root, "automata/solana-tests-data/signing.der") + intel_root_pem(root)


def signing_chain_2018(root: Path) -> str:
    """The original TCB Signing certificate (expired 2025-05-21), same serial and key."""
    return (root / "go-tdx-guest/tcbinfo_issuer_chain.pem").read_text()


def dcap_qvl_collateral(root: Path, rel: str) -> QuoteCollateral:
    return QuoteCollateral.from_dcap_qvl_json((root / rel).read_bytes())


def pcs_collateral(
    root: Path,
    quote: bytes,
    *,
    tcb_info: str,
    qe_identity: str,
    pck_crl: str | None,
    root_crl: str,
    chain: str,
) -> QuoteCollateral:
    """Collateral from raw Intel PCS files; the PCK CRL issuer chain is the quote's own."""
    pck_chain = parse_quote(quote).signature_data.certification_data.pem.rstrip(b"\0").decode()
    return QuoteCollateral.from_pcs(
        tcb_info_response=(root / tcb_info).read_bytes(),
        tcb_info_issuer_chain=chain,
        qe_identity_response=(root / qe_identity).read_bytes(),
        qe_identity_issuer_chain=chain,
        root_ca_crl=(root / root_crl).read_bytes(),
        pck_crl=(root / pck_crl).read_bytes() if pck_crl else None,
        pck_crl_issuer_chain=pck_chain,
    )


CollateralFn = Callable[[Path, bytes], QuoteCollateral]


def _qvl(rel: str) -> CollateralFn:
    return lambda root, quote: dcap_qvl_collateral(root, rel)


def _pcs(
    tcb_info: str,
    qe_identity: str,
    pck_crl: str | None,
    root_crl: str = "automata/solana-tests-data/intel_root_ca_crl.der",
    chain: Callable[[Path], str] = signing_chain_2025,
) -> CollateralFn:
    def make(root: Path, quote: bytes) -> QuoteCollateral:
        return pcs_collateral(
            root,
            quote,
            tcb_info=tcb_info,
            qe_identity=qe_identity,
            pck_crl=pck_crl,
            root_crl=root_crl,
            chain=chain(root),
        )

    return make


@dataclass(frozen=True, kw_only=True)
class DcapVector:
    """One quote + collateral + time(s) with the README's stated outcome."""

    id: str
    quote: str
    collateral: CollateralFn
    times: tuple[datetime, ...]
    status: TcbStatus | None = None  # expected on success
    advisories: tuple[str, ...] = ()
    qe_status: TcbStatus | None = None
    error: type[SealpodError] | None = None  # expected failure
    error_match: str | None = None
    unsafe_allow_missing_pck_crl: bool = False
    strip_trailing: bool = False
    debug: bool = False
    dcap_qvl: bool = True  # dcap-qvl can take it (not TCB Info v2, has a PCK CRL)
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def load(self, root: Path) -> tuple[bytes, QuoteCollateral]:
        quote = load_quote(root, self.quote, strip_trailing=self.strip_trailing)
        return quote, self.collateral(root, quote)


Q1_COLLATERAL = _qvl("dcap-qvl/sgx_quote_collateral.json")
Q2_COLLATERAL = _qvl("dcap-qvl/tdx_quote_collateral.json")
Q4_COLLATERAL = _qvl("dcap-qvl/tdx_quote_outdated_collateral.json")
PLATFORM_CRL_2025_06 = "automata/from-test-source/onchain_test_platform_crl_2025-06.der"
Q11_COLLATERAL = _pcs(
    "automata/evm-0625/tcbinfov3_90C06F000000.json", "automata/evm-0625/qe_td.json",
    PLATFORM_CRL_2025_06,
)  # fmt: skip
GO_TDX_COLLATERAL = _pcs(
    "go-tdx-guest/sample_tcbInfo_response",
    "go-tdx-guest/sample_qeIdentity_response",
    "go-tdx-guest/pckcrl",
    root_crl="go-tdx-guest/rootcrl.der",
    chain=signing_chain_2018,
)
Q1_WINDOW = (at("2025-06-19T10:56:11Z"), at("2025-07-19T10:01:17Z"))
Q4_WINDOW = (at("2026-02-18T10:58:51Z"), at("2026-03-20T10:41:15Z") - ONE_SECOND)
SA_289_615 = ("INTEL-SA-00289", "INTEL-SA-00615")
SA_960_982_986 = ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")
UP = TcbStatus.UP_TO_DATE
OOD = TcbStatus.OUT_OF_DATE

# README A.1: complete offline collateral and a known expected result.
A1: tuple[DcapVector, ...] = (
    DcapVector(
        id="Q1", quote="dcap-qvl/sgx_quote", collateral=Q1_COLLATERAL, times=Q1_WINDOW,
        status=TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED, advisories=SA_289_615,
        qe_status=UP,
    ),
    DcapVector(
        id="Q2", quote="dcap-qvl/tdx_quote", collateral=Q2_COLLATERAL,
        times=(at("2025-06-19T10:32:27Z"), at("2025-07-19T10:00:34Z")), status=UP,
    ),
    DcapVector(
        id="Q3", quote="dcap-qvl/near_quote_hex.txt",
        collateral=_qvl("dcap-qvl/near_quote_collateral.json"),
        times=(at("2025-09-10T00:00:00Z"),), status=UP,
    ),
    DcapVector(
        id="Q4", quote="dcap-qvl/tdx_quote_outdated", collateral=Q4_COLLATERAL, times=Q4_WINDOW,
        error=NoMatchingTcbLevel, error_match="no matching TCB level",
    ),
    DcapVector(
        id="Q5", quote="go-tdx-guest/quote_v5_sample.dat", collateral=Q4_COLLATERAL,
        times=Q4_WINDOW, status=UP,
    ),
    DcapVector(
        id="Q6", quote="automata/samples/quotev3.hex",
        collateral=_pcs(
            "automata/evm-0825/sgx_tcbinfov3_00606a000000.json",
            "automata/evm-0825/sgx_qeidentity_v4.json", "automata/evm-0825/platform_crl.der",
        ),
        times=(at("2025-08-15T05:45:00Z"),), status=TcbStatus.SW_HARDENING_NEEDED,
        advisories=("INTEL-SA-00615",),
    ),
    DcapVector(
        id="Q7", quote="automata/samples/quotev3.hex",
        collateral=_pcs(
            "automata/evm-0625/tcbinfo.json", "automata/evm-0625/identity.json",
            PLATFORM_CRL_2025_06,
        ),
        times=(at("2025-06-05T03:45:00Z"),), status=TcbStatus.SW_HARDENING_NEEDED,
        dcap_qvl=False, notes="TCB Info v2: dcap-qvl 0.7 cannot decode it",
    ),
    DcapVector(
        id="Q8", quote="automata/samples/quotev4.hex",
        collateral=_pcs(
            "automata/evm-0625/tcbinfov3_00806f050000.json", "automata/evm-0625/qe_td.json",
            PLATFORM_CRL_2025_06,
        ),
        times=(at("2025-06-05T03:45:00Z"),), status=OOD, advisories=SA_960_982_986,
    ),
    DcapVector(
        id="Q9", quote="automata/solana-tests-data/quote_tdx.bin",
        collateral=_pcs(
            "automata/solana-tests-data/tcb_info_v3_with_tdx_module.json",
            "automata/solana-tests-data/qe_identity.json",
            "automata/solana-tests-data/pck_platform_crl.der",
        ),
        times=(at("2025-07-07T09:20:26Z"), at("2025-08-06T09:06:43Z") - ONE_SECOND),
        status=OOD, advisories=SA_960_982_986,
    ),
    DcapVector(
        id="Q10", quote="automata/samples/quotev4.hex",
        collateral=_pcs(
            "automata/evm-1025/tcb_info.json", "automata/evm-1025/identity.json",
            "automata/evm-1025/pck_crl.der",
        ),
        times=(at("2025-10-24T07:10:18Z"),), status=OOD, advisories=SA_960_982_986,
    ),
    DcapVector(
        id="Q11", quote="automata/samples/quotev5.dat", collateral=Q11_COLLATERAL,
        times=(at("2025-06-15T00:00:00Z"),), status=UP,
        notes="TD 1.5 with a non-zero MRSERVICETD: dcap-qvl refuses it by default",
    ),
    DcapVector(
        id="Q13", quote="trustee/dcap/tdx_quote_4.dat", collateral=GO_TDX_COLLATERAL,
        times=(at("2023-07-01T01:00:00Z"),), status=UP, debug=True,
        notes="debug TD: dcap-qvl refuses debug by default",
    ),
    DcapVector(
        id="Q14", quote="automata/solana-tests-data/quote_sgx.bin", collateral=Q1_COLLATERAL,
        times=Q1_WINDOW, status=TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        advisories=SA_289_615, debug=True, notes="debug enclave",
    ),
    DcapVector(
        id="Q19", quote="trustee/dcap/tdx_quote_6.dat",
        collateral=_pcs("trustee/dcap/tcbInfo.json", "trustee/dcap/enclaveIdentity.json", None),
        times=(at("2025-10-28T06:45:09Z"), at("2025-11-26T13:07:17Z") - ONE_SECOND),
        status=OOD, unsafe_allow_missing_pck_crl=True, dcap_qvl=False,
        notes="no PCK CRL for this period",
    ),
)  # fmt: skip

# README A.2: valid signatures, no matching TCB level with the stated collateral.
A2: tuple[DcapVector, ...] = (
    DcapVector(
        id="A2-tappd", quote="dcap-qvl/quote-from-tappd.hex", collateral=Q2_COLLATERAL,
        times=(at("2025-07-19T10:00:34Z"),), error=NoMatchingTcbLevel,
    ),
    DcapVector(
        id="A2-tdx-quote-hex", quote="dcap-qvl/tdx-quote.hex", collateral=Q2_COLLATERAL,
        times=(at("2025-07-19T10:00:34Z"),), error=NoMatchingTcbLevel,
    ),
    DcapVector(
        id="A2-SPR_E4", quote="go-tdx-guest/tdx_prod_quote_SPR_E4.dat",
        collateral=GO_TDX_COLLATERAL, times=(at("2023-07-01T01:00:00Z"),),
        error=NoMatchingTcbLevel, strip_trailing=True,
        notes="the file has 39 bytes of text after the quote; stripped here",
    ),
    DcapVector(
        id="A2-trustee-5", quote="trustee/dcap/tdx_quote_5.dat", collateral=Q11_COLLATERAL,
        times=(at("2025-06-15T00:00:00Z"),), error=NoMatchingTcbLevel,
    ),
)  # fmt: skip

SPR_E4 = "go-tdx-guest/tdx_prod_quote_SPR_E4.dat"
SPR_E4_TIME = at("2023-07-01T01:00:00Z")
# README A.2: PCK extension facts of SPR_E4.
SPR_E4_PCK = {
    "ppid": "089ddfdb9c0359c82a3bc7719239574e",
    "fmspc": "50806f000000",
    "pce_id": "0000",
    "pce_svn": "11",
    "cpu_svn": "03030202020100020000000000000000",
}
