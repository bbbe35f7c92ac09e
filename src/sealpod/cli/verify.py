"""``sealpod verify``: verify SGX/TDX/SNP evidence offline and apply a policy.

Rendering only: files are read here, the clock is read here (``--at`` overrides it), and
:func:`sealpod.verify.appraise.appraise` plus :func:`sealpod.policy.evaluate` decide. The human
output says which step or policy rule failed, with the expected and the actual value; ``--json``
prints one object with the verdict, the claims, every violation and any error.

Exit codes: 0 accepted; 10 malformed evidence; 11 collateral; 12 verification failed; 13 policy
refused (or a malformed policy); 2 bad options or unreadable files; 14 no simulated platform.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod._files import read_limited
from sealpod.cli._common import (
    JsonOption,
    command,
    emit_json,
    err,
    out,
    shorten,
    styled,
    tee_option,
)
from sealpod.cli._evidence_options import (
    AcceptTcbOption,
    AllowDebugOption,
    CertChainOption,
    CollateralOption,
    PckCrlOption,
    PolicyFileOption,
    QeChainOption,
    QeIdentityOption,
    RootCrlOption,
    TcbChainOption,
    TcbInfoOption,
    VcekOption,
)
from sealpod.crypto import pem
from sealpod.errors import (
    CollateralUnavailable,
    ConfigError,
    MalformedEvidence,
    PolicyViolation,
    SealpodError,
)
from sealpod.tee.names import TeeName
from sealpod.verify.claims import TcbStatus, TeeKind, VerifiedClaims

if TYPE_CHECKING:  # the libraries are imported by the command itself (startup time)
    from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
    from sealpod.policy.evaluate import Violation
    from sealpod.policy.model import Policy
    from sealpod.verify.trust import TrustAnchors

MAX_FILE_SIZE = 16 * 1024 * 1024
#: ``--tee`` to the evidence format expected; ``sim`` expects any format, from the simulator.
_TEES = {"auto": None, "sim": None, "sgx": TeeKind.SGX, "tdx": TeeKind.TDX, "snp": TeeKind.SNP}


def _read(path: Path | str, what: str) -> bytes:
    if str(path) != "-":
        return read_limited(path, what, limit=MAX_FILE_SIZE, error=ConfigError)
    data = sys.stdin.buffer.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ConfigError(f"{what} {str(path)!r} is larger than {MAX_FILE_SIZE} bytes")
    return data


def _text(path: Path, what: str) -> str:
    try:
        return _read(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text") from exc


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"--at is {shorten(text)!r}, expected an ISO 8601 time such as 2025-07-19T10:01:17Z"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _policy(
    path: Path | None,
    accept_tcb: str | None,
    allow_debug: bool,
    allow_simulation: bool,
) -> Policy:
    from sealpod.policy.model import Policy

    policy = (
        Policy.from_text(_text(path, "policy"), json_format=path.suffix.lower() == ".json")
        if path is not None
        else Policy()
    )
    update: dict[str, object] = {}
    if accept_tcb is not None:
        if accept_tcb.strip().lower() == "any":
            update["accepted_tcb_statuses"] = None
        else:
            names = [n.strip() for n in accept_tcb.split(",") if n.strip()]
            known = {s.value for s in TcbStatus}
            unknown = [n for n in names if n not in known]
            if unknown or not names:
                raise ConfigError(
                    f"--accept-tcb has {', '.join(unknown) or 'nothing'}; expected 'any' or a "
                    f"comma-separated list of {', '.join(sorted(known))}"
                )
            update["accepted_tcb_statuses"] = names
    if allow_debug:
        update["allow_debug"] = True
    if allow_simulation:
        update["allow_simulation"] = True
    return policy.model_copy(update=update) if update else policy


def _chain_text(path: Path, what: str, root_pem: str | None) -> str:
    """A PEM chain from a PEM or DER file; the quote's root is appended when the file lacks one."""
    data = _read(path, what)
    text = (
        data.decode("ascii", "replace") if b"-----BEGIN" in data else pem.encode_certificate(data)
    )
    if root_pem is not None and root_pem.strip() not in text:
        text += root_pem
    return text


def _dcap_collateral_from_files(
    raw: bytes,
    *,
    tcb_info: Path | None,
    qe_identity: Path | None,
    pck_crl: Path | None,
    root_crl: Path | None,
    tcb_chain: Path | None,
    qe_chain: Path | None,
) -> QuoteCollateral:
    if tcb_info is None or qe_identity is None or root_crl is None or tcb_chain is None:
        missing = [
            flag
            for flag, value in (
                ("--tcb-info", tcb_info),
                ("--qe-identity", qe_identity),
                ("--root-crl", root_crl),
                ("--tcb-chain", tcb_chain),
            )
            if value is None
        ]
        raise ConfigError(f"separate DCAP collateral also needs {', '.join(missing)}")
    from sealpod.collateral.models import QuoteCollateral
    from sealpod.evidence.dcap_quote import parse_quote

    # The quote carries the PCK CA and the root: the PCK CRL's issuer chain, and the root that
    # the signing chains end at (it is still checked against the pinned fingerprint).
    ders = parse_quote(raw).signature_data.certification_data.certificates()
    root_pem = pem.encode_certificate(ders[-1]) if len(ders) > 1 else None
    tcb_chain_text = _chain_text(tcb_chain, "TCB signing chain", root_pem)
    return QuoteCollateral.from_pcs(
        tcb_info_response=_read(tcb_info, "TCB Info"),
        tcb_info_issuer_chain=tcb_chain_text,
        qe_identity_response=_read(qe_identity, "QE Identity"),
        qe_identity_issuer_chain=_chain_text(qe_chain, "QE Identity signing chain", root_pem)
        if qe_chain is not None
        else tcb_chain_text,
        root_ca_crl=_read(root_crl, "root CA CRL"),
        pck_crl=_read(pck_crl, "PCK CRL") if pck_crl is not None else None,
        pck_crl_issuer_chain=pem.encode_certificates(ders[1:]),
    )


class _SimCollateral:
    """The local simulated platform's DCAP collateral, for quotes of its own FMSPCs only."""

    def __init__(self, provider: DcapCollateralProvider) -> None:
        self._provider = provider

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        try:
            return self._provider.get(fmspc, ca, tee)
        except CollateralUnavailable as exc:
            raise CollateralUnavailable(
                f"{tee.value} quote (FMSPC {fmspc}) needs DCAP collateral (TCB Info, QE "
                "Identity, CRLs): give --collateral FILE or the separate collateral files"
            ) from exc


def local_trust(
    now: datetime, *, required: bool
) -> tuple[TrustAnchors, DcapCollateralProvider | None]:
    """Trust anchors and collateral including the local simulated platform, if there is one.

    Its roots are trusted as *simulated* roots even without ``--allow-simulation``: simulated
    evidence then verifies as ``tee = sim`` and the policy refuses it with
    ``simulation_not_allowed``, which says more than "untrusted root". With the flag a missing
    platform is an error.
    """
    from sealpod.settings import sealpod_home
    from sealpod.tee.sim import SimPlatform
    from sealpod.verify.trust import DEFAULT_TRUST

    try:
        platform = SimPlatform.load(sealpod_home())
    except SealpodError:
        if required:
            raise
        return DEFAULT_TRUST, None
    trust = DEFAULT_TRUST.with_sim_roots(*platform.trust_anchors().sim_roots)
    return trust, _SimCollateral(platform.dcap_collateral(now=now))


def _claims_json(claims: VerifiedClaims | None) -> dict[str, object]:
    if claims is None:
        keys = ("tee", "tcb_status", "measurement", "signer", "product_id", "svn", "debug")
        return {
            **dict.fromkeys(keys),
            "report_data": None,
            "advisory_ids": [],
            "simulated": None,
            "emulated": None,
        }
    return claims.to_json()


def _render_human(
    claims: VerifiedClaims | None,
    violations: list[Violation],
    error: SealpodError | None,
) -> None:
    if claims is not None:
        _print_claims(claims)
    if error is not None and not isinstance(error, PolicyViolation):
        err.print(styled(("NOT VERIFIED", "bold red")))
        details = error.to_dict()
        step = details.get("step")
        err.print(
            f"  {'failed at ' + str(step) + ': ' if step else ''}{error.message}", markup=False
        )
        for key in ("field", "offset", "expected", "actual"):
            if details.get(key) is not None:
                err.print(f"  {key}: {details[key]}", markup=False)
        err.print(f"  ({error.code})", markup=False)
        return
    if violations:
        err.print(styled(("REFUSED by policy", "bold red")))
        for v in violations:
            err.print(f"  - {v.code}: {v.message}", markup=False)
            if v.expected is not None or v.actual is not None:
                err.print(f"      expected {v.expected}, actual {v.actual}", markup=False)
        return
    out.print(styled(("VERIFIED", "bold green"), " and accepted by the policy"))


def _print_claims(claims: VerifiedClaims) -> None:
    if claims.simulated:
        out.print(
            styled(
                ("SIMULATED evidence: no hardware protection", "bold yellow"),
                f" (emulating {claims.emulated.value if claims.emulated else '?'})",
            )
        )
    rows: list[tuple[str, object]] = [
        ("tee", claims.tee.value + (f" ({claims.emulated.value})" if claims.emulated else "")),
        ("tcb status", claims.tcb_status.value),
        ("advisories", ", ".join(claims.advisory_ids) or "none"),
        ("measurement", claims.measurement.hex()),
        ("signer", claims.signer.hex() if claims.signer is not None else "-"),
        ("product id", claims.product_id if claims.product_id is not None else "-"),
        ("svn", claims.svn if claims.svn is not None else "-"),
        ("debug", claims.debug),
        ("report data", claims.report_data.hex()),
    ]
    rows += [(str(k), v) for k, v in claims.platform.items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.print(f"  {key.ljust(width)}  {value}", markup=False)


def verify_cmd(
    evidence: Annotated[
        str,
        typer.Argument(
            help="Evidence file ('-' for stdin): raw, hex, 0x-hex, base64 or envelope JSON."
        ),
    ],
    tee: Annotated[
        TeeName,
        tee_option(
            "The TEE the evidence must come from (auto: any format; sim: the local simulated "
            "platform, which the policy must still allow)."
        ),
    ] = TeeName.AUTO,
    collateral: CollateralOption = None,
    tcb_info: TcbInfoOption = None,
    qe_identity: QeIdentityOption = None,
    pck_crl: PckCrlOption = None,
    root_crl: RootCrlOption = None,
    tcb_chain: TcbChainOption = None,
    qe_chain: QeChainOption = None,
    vcek: VcekOption = None,
    cert_chain: CertChainOption = None,
    crl: Annotated[Path | None, typer.Option("--crl", help="AMD CRL for the product.")] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Verify as of this ISO 8601 time (default: now).")
    ] = None,
    policy_file: PolicyFileOption = None,
    accept_tcb: AcceptTcbOption = None,
    allow_debug: AllowDebugOption = False,
    allow_simulation: Annotated[
        bool,
        typer.Option(
            "--allow-simulation",
            help="Trust the local SIMULATED platform (no hardware protection) and accept it.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Verify SGX, TDX or SEV-SNP evidence and check it against a policy."""
    from sealpod.collateral.models import QuoteCollateral
    from sealpod.evidence.envelope import load_evidence
    from sealpod.policy.evaluate import evaluate
    from sealpod.verify.appraise import appraise

    # Bad input (options, --at, the policy file) is an input error like any other command's,
    # printed as such: only the evidence itself can be NOT VERIFIED.
    if collateral is not None and any(
        p is not None for p in (tcb_info, qe_identity, pck_crl, root_crl, tcb_chain, qe_chain)
    ):
        raise ConfigError("give either --collateral or the separate collateral files")
    now = _parse_time(at)
    policy = _policy(policy_file, accept_tcb, allow_debug, allow_simulation)
    claims: VerifiedClaims | None = None
    violations: list[Violation] = []
    error: SealpodError | None = None
    try:
        loaded = load_evidence(_read(evidence, "evidence"))
        raw = loaded.raw
        trust, sim_collateral = local_trust(now, required=allow_simulation or tee == "sim")
        dcap: DcapCollateralProvider | QuoteCollateral | None = sim_collateral
        if collateral is not None:
            dcap = QuoteCollateral.from_dcap_qvl_json(_read(collateral, "collateral"))
        elif tcb_info or qe_identity or pck_crl or root_crl or tcb_chain or qe_chain:
            dcap = _dcap_collateral_from_files(
                raw,
                tcb_info=tcb_info,
                qe_identity=qe_identity,
                pck_crl=pck_crl,
                root_crl=root_crl,
                tcb_chain=tcb_chain,
                qe_chain=qe_chain,
            )
        claims = appraise(
            loaded,
            trust=trust,
            dcap_collateral=dcap,
            snp_vcek=_read(vcek, "VCEK") if vcek is not None else None,
            snp_chain=_read(cert_chain, "certificate chain") if cert_chain is not None else None,
            snp_crl=_read(crl, "CRL") if crl is not None else None,
            tee=_TEES[tee],
            now=now,
        )
        if tee == "sim" and not claims.simulated:
            raise MalformedEvidence(
                f"--tee sim: this {claims.tee.value} evidence is not from the simulated platform"
            )
        violations = evaluate(policy, claims)
        if violations:
            error = PolicyViolation(
                "claims violate the policy: " + ", ".join(v.code for v in violations), violations
            )
    except SealpodError as exc:
        error = exc
    if json_output:
        doc: dict[str, object] = {
            "verified": error is None,
            "authentic": claims is not None,
            **_claims_json(claims),
            "violations": [v.to_dict() for v in violations],
        }
        if error is not None:
            doc["error"] = error.to_dict()
            if isinstance(error, PolicyViolation):
                doc["error"] = {"code": error.code, "message": error.message}
        emit_json(doc)
    else:
        _render_human(claims, violations, error)
    if error is not None:
        raise typer.Exit(error.exit_code)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    command(app, "verify")(verify_cmd)
