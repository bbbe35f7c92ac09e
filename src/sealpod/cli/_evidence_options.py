"""The options that say where verification's collateral comes from and how lenient a policy
is, shared by ``sealpod verify`` and ``sealpod ratls verify`` (one spelling, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CollateralOption = Annotated[
    Path | None,
    typer.Option("--collateral", help="DCAP collateral, dcap-qvl QuoteCollateralV3 JSON."),
]
TcbInfoOption = Annotated[
    Path | None, typer.Option("--tcb-info", help="Intel PCS TCB Info response.")
]
QeIdentityOption = Annotated[
    Path | None, typer.Option("--qe-identity", help="Intel PCS QE Identity response.")
]
PckCrlOption = Annotated[Path | None, typer.Option("--pck-crl", help="PCK CRL (DER/PEM/hex).")]
RootCrlOption = Annotated[
    Path | None, typer.Option("--root-crl", help="Intel root CA CRL (DER/PEM/hex).")
]
TcbChainOption = Annotated[
    Path | None, typer.Option("--tcb-chain", help="TCB Info signing chain (PEM or DER).")
]
QeChainOption = Annotated[
    Path | None,
    typer.Option("--qe-chain", help="QE Identity signing chain (default: --tcb-chain)."),
]
VcekOption = Annotated[
    Path | None, typer.Option("--vcek", help="SNP VCEK or VLEK certificate (DER or PEM).")
]
CertChainOption = Annotated[
    Path | None, typer.Option("--cert-chain", help="SNP ASK (or ASVK) and ARK, PEM.")
]
PolicyFileOption = Annotated[
    Path | None, typer.Option("--policy", help="Policy file, TOML (or .json).")
]
AcceptTcbOption = Annotated[
    str | None,
    typer.Option("--accept-tcb", help="Accepted TCB statuses, comma-separated, or 'any'."),
]
AllowDebugOption = Annotated[
    bool, typer.Option("--allow-debug", help="Accept debug-mode workloads.")
]
