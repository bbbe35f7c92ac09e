"""Where DCAP collateral comes from: files (the default, offline) or Intel PCS.

- :func:`load_collateral_file`: one dcap-qvl ``QuoteCollateralV3`` JSON file.
- :func:`load_collateral_parts`: the separate files Intel PCS serves (TCB Info and QE Identity
  responses, CRLs in DER/PEM/hex, issuer chains in PEM), as ``sealpod verify --tcb-info F
  --qe-identity F --pck-crl F --root-crl F --tcb-chain F --qe-chain F`` takes them.
- :class:`StaticCollateralProvider`: always the same collateral (a file given on the command
  line; the verifier still checks it matches the quote's FMSPC, CA and TEE).
- :class:`DirectoryCollateralProvider`: a folder of dcap-qvl JSON files named by platform.
- :class:`sealpod.collateral.intel.PcsCollateralProvider`: Intel PCS v4 with an on-disk cache.

Each provider implements :class:`sealpod.collateral.models.DcapCollateralProvider`.
"""

from __future__ import annotations

from pathlib import Path

from sealpod.collateral.models import QuoteCollateral
from sealpod.errors import CollateralUnavailable, MalformedCollateral
from sealpod.verify.claims import TeeKind

MAX_COLLATERAL_FILE_SIZE = 4 << 20


def _read(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_COLLATERAL_FILE_SIZE:
            raise MalformedCollateral(f"{what} {path} is {size} bytes, too large")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CollateralUnavailable(f"{what} {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise CollateralUnavailable(f"{what} {path} is a directory") from exc
    except PermissionError as exc:
        raise CollateralUnavailable(f"{what} {path} is not readable") from exc


def _text(path: Path, what: str) -> str:
    try:
        return _read(path, what).decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedCollateral(f"{what} {path} is not ASCII PEM") from exc


def load_collateral_file(path: Path) -> QuoteCollateral:
    """Load a dcap-qvl ``QuoteCollateralV3`` JSON file.

    Raises:
        CollateralUnavailable: the file cannot be read.
        MalformedCollateral: it is not that JSON.
    """
    return QuoteCollateral.from_dcap_qvl_json(_read(Path(path), "collateral file"))


def load_collateral_parts(
    *,
    tcb_info: Path,
    qe_identity: Path,
    root_crl: Path,
    tcb_chain: Path,
    qe_chain: Path | None = None,
    pck_crl: Path | None = None,
    pck_crl_chain: Path | None = None,
) -> QuoteCollateral:
    """Assemble collateral from separate Intel PCS files, taken byte for byte.

    ``qe_chain`` defaults to ``tcb_chain`` (Intel signs both with the TCB Signing key);
    ``pck_crl_chain`` is informational (the verifier checks the PCK CRL against the quote's own
    PCK CA) and defaults to empty.

    Raises:
        CollateralUnavailable: a file cannot be read.
        MalformedCollateral: a file is not of its expected shape.
    """
    return QuoteCollateral.from_pcs(
        tcb_info_response=_read(Path(tcb_info), "TCB Info"),
        tcb_info_issuer_chain=_text(Path(tcb_chain), "TCB Info issuer chain"),
        qe_identity_response=_read(Path(qe_identity), "QE Identity"),
        qe_identity_issuer_chain=_text(Path(qe_chain or tcb_chain), "QE Identity issuer chain"),
        root_ca_crl=_read(Path(root_crl), "root CA CRL"),
        pck_crl=_read(Path(pck_crl), "PCK CRL") if pck_crl is not None else None,
        pck_crl_issuer_chain=_text(Path(pck_crl_chain), "PCK CRL issuer chain")
        if pck_crl_chain is not None
        else "",
    )


class StaticCollateralProvider:
    """Always returns the same collateral, whatever platform is asked for."""

    def __init__(self, collateral: QuoteCollateral) -> None:
        self.collateral = collateral

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """The configured collateral (the verifier checks that it fits the quote)."""
        return self.collateral


class DirectoryCollateralProvider:
    """dcap-qvl JSON files in a folder, looked up as ``<tee>-<fmspc>-<ca>.json``, then
    ``<tee>-<fmspc>.json``, then ``<fmspc>.json`` (FMSPC in lower-case hex)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def candidates(self, fmspc: str, ca: str, tee: TeeKind) -> list[Path]:
        f = fmspc.lower()
        return [
            self.root / f"{tee.value}-{f}-{ca}.json",
            self.root / f"{tee.value}-{f}.json",
            self.root / f"{f}.json",
        ]

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """The first candidate file that exists.

        Raises:
            CollateralUnavailable: none exists.
            MalformedCollateral: the file found is not dcap-qvl JSON.
        """
        for path in self.candidates(fmspc, ca, tee):
            if path.is_file():
                return load_collateral_file(path)
        raise CollateralUnavailable(
            f"no collateral for {tee.value} FMSPC {fmspc} ({ca} CA) in {self.root}"
        )
