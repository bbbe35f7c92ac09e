"""``sealpod ratls``: issue, inspect and verify RA-TLS certificates (docs/ratls.md).

Rendering only: :mod:`sealpod.ratls` issues, parses and verifies; the policy and the simulated
platform's trust are set up exactly as ``sealpod verify`` does (:mod:`sealpod.cli.verify`).

Exit codes: 0 accepted; 10 not an RA-TLS certificate / malformed evidence; 11 collateral; 12
verification failed (including evidence that binds another key: ``verify.binding``); 13 refused by
policy; 14 server unreachable or no TEE; 2 bad options.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod._files import read_limited, write_atomic
from sealpod.cli._common import (
    EmulateOption,
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
from sealpod.cli.tee import GramineRootOption, TsmRootOption, _roots
from sealpod.cli.verify import (
    _dcap_collateral_from_files,
    _parse_time,
    _policy,
    _print_claims,
    _read,
    local_trust,
)
from sealpod.errors import ConfigError, PolicyViolation, SealpodError, TeeUnavailable
from sealpod.tee.names import TeeName

if TYPE_CHECKING:
    from sealpod.tee.base import TeeBackend
    from sealpod.tee.sim import Emulated

MAX_CERT_FILE = 1 << 20


def cert_cmd(
    output: Annotated[Path, typer.Option("--out", "-o", help="Directory for key.pem, cert.pem.")],
    tee: Annotated[
        TeeName, tee_option("The TEE that attests: sgx (Gramine), tdx or snp (configfs-tsm), sim.")
    ] = TeeName.AUTO,
    emulate: EmulateOption = None,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="With --tee sim: report this bundle's identity."),
    ] = None,
    names: Annotated[
        list[str] | None,
        typer.Option("--name", help="DNS name or IP for the certificate (repeatable)."),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=398, help="Validity in days.")] = 7,
    legacy_gramine: Annotated[
        bool,
        typer.Option("--legacy-gramine", help="SGX: also add Gramine's pre-1.8 quote extension."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    gramine_root: GramineRootOption = None,
    tsm_root: TsmRootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a key and an RA-TLS certificate whose evidence binds it."""
    from sealpod.build.keys import write_private_key
    from sealpod.ratls.certificate import parse_ratls_certificate
    from sealpod.ratls.issue import issue_ratls_certificate
    from sealpod.ratls.verify import inspect_certificate

    gramine, tsm = _roots(gramine_root, tsm_root)
    backend = open_ratls_backend(tee, emulate=emulate, bundle=bundle, gramine_root=gramine,
                                 tsm_root=tsm)  # fmt: skip
    key_pem, cert_pem = issue_ratls_certificate(
        backend,
        now=datetime.now(UTC),
        validity=timedelta(days=days),
        names=tuple(names) if names else ("localhost", "127.0.0.1"),
        legacy_gramine=legacy_gramine,
    )
    kind = parse_ratls_certificate(cert_pem).tcg
    if tee in ("tdx", "snp") and kind is not None and kind.kind.value != tee:
        raise TeeUnavailable(f"--tee {tee}, but this VM's configfs-tsm produced {kind.kind.value}")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {output}: {exc.strerror or exc}") from exc
    cert_path = output / "cert.pem"
    if (cert_path.exists() or cert_path.is_symlink()) and not force:
        raise ConfigError(f"{cert_path} already exists; use --force to overwrite it")
    write_private_key(output / "key.pem", key_pem, force=force)
    try:
        write_atomic(cert_path, cert_pem, mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {cert_path}: {exc.strerror or exc}") from exc
    info = inspect_certificate(cert_pem, sim_roots=_sim_roots())
    if json_output:
        emit_json({"ok": True, "key": str(output / "key.pem"), "certificate": str(cert_path),
                   "backend": backend.name, **info})  # fmt: skip
        return
    out.print(f"Wrote {output / 'key.pem'} (0600) and {cert_path}", markup=False)
    if backend.name == "sim":
        out.print(styled(("SIMULATED evidence: no hardware protection", "bold yellow")))
    _print_inspection(info)


def open_ratls_backend(
    tee: str,
    *,
    emulate: str | None,
    bundle: Path | None,
    gramine_root: Path | None = None,
    tsm_root: Path | None = None,
) -> TeeBackend:
    """The evidence backend for ``--tee`` (sgx = Gramine's /dev/attestation, tdx/snp = tsm).

    Raises:
        ConfigError: an unknown ``--tee``, or ``--bundle``/``--emulate`` without ``--tee sim``.
        TeeUnavailable: the TEE is absent.
    """
    from sealpod.tee.select import open_backend

    if tee != "sim" and (bundle is not None or emulate is not None):
        raise ConfigError("--bundle and --emulate apply to --tee sim only")
    identity = None
    if bundle is not None:
        from sealpod.build.bundle import load_bundle
        from sealpod.tee.sim import bundle_identity

        identity = bundle_identity(load_bundle(bundle))
    emulated: Emulated = "tdx" if emulate == "tdx" else ("snp" if emulate == "snp" else "sgx")
    gramine, tsm = _roots(gramine_root, tsm_root)
    # One vocabulary: sgx is Gramine's /dev/attestation, tdx/snp configfs-tsm (sealpod.tee.select).
    return open_backend(tee, emulate=emulated, identity=identity, gramine_root=gramine,
                        tsm_root=tsm)  # fmt: skip


def inspect_cmd(
    certificate: Annotated[Path, typer.Argument(help="Certificate file (PEM or DER).")],
    json_output: JsonOption = False,
) -> None:
    """Read an RA-TLS certificate offline: evidence extensions, kind, identity, key binding."""
    from sealpod.ratls.verify import inspect_certificate

    data = read_limited(certificate, "certificate", limit=MAX_CERT_FILE, error=ConfigError)
    info = inspect_certificate(data, sim_roots=_sim_roots())
    if json_output:
        emit_json({"ok": True, **info})
        return
    _print_inspection(info)


def _sim_roots() -> frozenset[bytes]:
    """The local simulated platform's roots (empty when there is none), to label its evidence."""
    trust, _ = local_trust(datetime.now(UTC), required=False)
    return trust.sim_roots


def _print_inspection(info: dict[str, object]) -> None:
    out.print(f"  subject        {info['subject']}", markup=False)
    out.print(f"  key            {info['key_algorithm']}  spki sha256 {info['spki_sha256']}",
              markup=False)  # fmt: skip
    out.print(f"  valid          {info['not_before']} .. {info['not_after']}", markup=False)
    evidence = info["evidence"]
    for ev in evidence if isinstance(evidence, list) else []:
        status = "binds the certificate key" if ev["binds_key"] else "DOES NOT bind the key"
        out.print(f"  evidence       {ev['extension']} ({ev['oid']}): {ev['kind']}, {status}",
                  markup=False)  # fmt: skip
        if ev["binding_problem"]:
            out.print(f"                 {ev['binding_problem']}", markup=False)
        for key, value in ev["claimed_identity"].items():
            out.print(f"    {str(key).ljust(14)} {value}", markup=False)
    out.print("  (offline: the evidence is NOT verified; use `sealpod ratls verify`)", markup=False)


def verify_cmd(
    address: Annotated[str, typer.Argument(help="HOST:PORT of the RA-TLS server.")],
    policy_file: PolicyFileOption = None,
    collateral: CollateralOption = None,
    tcb_info: TcbInfoOption = None,
    qe_identity: QeIdentityOption = None,
    pck_crl: PckCrlOption = None,
    root_crl: RootCrlOption = None,
    tcb_chain: TcbChainOption = None,
    qe_chain: QeChainOption = None,
    vcek: VcekOption = None,
    cert_chain: CertChainOption = None,
    crl: Annotated[Path | None, typer.Option("--crl", help="AMD CRL for SNP.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Verify as of this ISO 8601 time.")] = None,
    accept_tcb: AcceptTcbOption = None,
    allow_debug: AllowDebugOption = False,
    allow_simulation: Annotated[
        bool,
        typer.Option("--allow-simulation", help="Accept the local SIMULATED platform."),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, max=300, help="Connect timeout, seconds.")
    ] = 10.0,
    json_output: JsonOption = False,
) -> None:
    """Connect to an RA-TLS server, verify its evidence, key binding and policy; print claims.

    The collateral options are those of `sealpod verify`; the evidence comes from the server.
    """
    from sealpod.collateral.models import DcapCollateralProvider, QuoteCollateral
    from sealpod.ratls.certificate import parse_ratls_certificate
    from sealpod.ratls.client import fetch_peer_certificate, parse_address
    from sealpod.ratls.verify import RaTlsVerdict, check_binding, verify_ratls_certificate

    verdict: RaTlsVerdict | None = None
    error: SealpodError | None = None
    separate = (tcb_info, qe_identity, pck_crl, root_crl, tcb_chain, qe_chain)
    try:
        host, port = parse_address(address)
        if collateral is not None and any(p is not None for p in separate):
            raise ConfigError("give either --collateral or the separate collateral files")
        now = _parse_time(at)
        policy = _policy(policy_file, accept_tcb, allow_debug, allow_simulation)
        trust, sim_collateral = local_trust(now, required=allow_simulation)
        # The handshake proves the server holds the certificate's key; nothing else is sent.
        cert = parse_ratls_certificate(fetch_peer_certificate(host, port, timeout=timeout))
        dcap: DcapCollateralProvider | QuoteCollateral | None = sim_collateral
        if collateral is not None:
            dcap = QuoteCollateral.from_dcap_qvl_json(_read(collateral, "collateral"))
        elif any(p is not None for p in separate):
            dcap = _dcap_collateral_from_files(
                check_binding(cert).evidence, tcb_info=tcb_info, qe_identity=qe_identity,
                pck_crl=pck_crl, root_crl=root_crl, tcb_chain=tcb_chain, qe_chain=qe_chain,
            )  # fmt: skip
        verdict = verify_ratls_certificate(
            cert, trust=trust, policy=policy, now=now, dcap_collateral=dcap,
            snp_vcek=_read(vcek, "VCEK") if vcek is not None else None,
            snp_chain=_read(cert_chain, "certificate chain") if cert_chain is not None else None,
            snp_crl=_read(crl, "CRL") if crl is not None else None,
        )  # fmt: skip
        if verdict.violations:
            error = PolicyViolation(
                "the RA-TLS server's claims violate the policy: "
                + ", ".join(v.code for v in verdict.violations),
                list(verdict.violations),
            )
    except SealpodError as exc:
        error = exc
    if json_output:
        doc: dict[str, object] = {"verified": error is None, "address": address}
        if verdict is not None:
            doc["claims"] = verdict.claims.to_json()
            doc["extension"] = verdict.extension
            doc["spki_sha256"] = verdict.spki_sha256.hex()
        if error is not None:
            doc["error"] = error.to_dict()
            if isinstance(error, PolicyViolation) and verdict is not None:
                doc["violations"] = [v.to_dict() for v in verdict.violations]
        emit_json(doc)
    elif error is not None:
        if verdict is not None:
            _print_claims(verdict.claims)
        err.print(styled(("REFUSED", "bold red"), f" {shorten(address)}"))
        err.print(f"  {error.message}", markup=False)
        details = error.to_dict()
        for key in ("step", "field", "expected", "actual"):
            if details.get(key) is not None:
                err.print(f"  {key}: {details[key]}", markup=False)
        for v in getattr(error, "violations", ()):
            err.print(f"  - {v}", markup=False)
        err.print(f"  ({error.code})", markup=False)
    elif verdict is not None:
        _print_claims(verdict.claims)
        out.print(f"  evidence     {verdict.extension}, binds TLS key {verdict.spki_sha256.hex()}",
                  markup=False)  # fmt: skip
        out.print(styled(("VERIFIED", "bold green"), " RA-TLS server accepted by the policy"))
    if error is not None:
        raise typer.Exit(error.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``ratls cert|inspect|verify`` to the root app."""
    ratls_app = typer.Typer(
        name="ratls", help="RA-TLS: certificates carrying TEE evidence bound to their key.",
        no_args_is_help=True,
    )  # fmt: skip
    command(ratls_app, "cert")(cert_cmd)
    command(ratls_app, "inspect")(inspect_cmd)
    command(ratls_app, "verify")(verify_cmd)
    app.add_typer(ratls_app)
