"""CLI commands for evidence generation: ``tee detect``, ``sim init|show|set-tcb|export``,
``attest`` and ``verify-local``.

Rendering only: arguments are parsed here, the work is done by :mod:`sealpod.tee`. Simulated
output always says so, on stderr, so it cannot be mistaken for hardware evidence in a log.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
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
    status,
    styled,
    tee_option,
)
from sealpod.errors import ConfigError, PolicyViolation
from sealpod.tee.names import TeeName

if TYPE_CHECKING:  # the libraries are imported by the commands that use them (startup time)
    from sealpod.tee.local import TargetInfo
    from sealpod.tee.sim import Emulated, SimIdentity, SimPlatform

SIM_WARNING = "SIMULATED evidence: NO hardware protection (accepted only with allow_simulation)"
SIM_PLATFORM_WARNING = "SIMULATED platform: NO hardware protection (development and tests only)"
_HEX64 = re.compile(r"(0x)?[0-9a-fA-F]{64}")
MAX_PUBLIC_KEY_SIZE = 64 * 1024
MAX_LOCAL_REPORT_FILE_SIZE = 8192

# Hidden test hooks; None means the library's default (GRAMINE_ROOT, TSM_REPORT_ROOT), looked
# up only when a command runs so that registering it imports no backend.
GramineRootOption = Annotated[
    Path | None,
    typer.Option("--gramine-root", help="Gramine's attestation directory.", hidden=True),
]
TsmRootOption = Annotated[
    Path | None, typer.Option("--tsm-root", help="configfs-tsm report directory.", hidden=True)
]


def _hex(value: str, what: str) -> bytes:
    text = value.strip().removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{what} is not hex") from None


def _write_output(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    if str(path) == "-":
        typer.echo(data.decode())
        return
    try:
        write_atomic(path, data, mode=mode)  # a symlink at ``path`` is refused
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def _roots(gramine_root: Path | None, tsm_root: Path | None) -> tuple[Path, Path]:
    """The hidden ``--gramine-root`` / ``--tsm-root`` options, or the real device paths."""
    from sealpod.tee.gramine import GRAMINE_ROOT
    from sealpod.tee.tsm import TSM_REPORT_ROOT

    return (
        GRAMINE_ROOT if gramine_root is None else gramine_root,
        TSM_REPORT_ROOT if tsm_root is None else tsm_root,
    )


def _load_identity(bundle: Path | None) -> tuple[SimIdentity, bytes | None]:
    from sealpod.tee.sim import UNNAMED, bundle_identity

    if bundle is None:
        return UNNAMED, None
    from sealpod.build.bundle import load_bundle

    loaded = load_bundle(bundle)
    return bundle_identity(loaded), loaded.measurement


# --- tee detect ---------------------------------------------------------------------------------
def detect(
    json_output: JsonOption = False,
    gramine_root: GramineRootOption = None,
    tsm_root: TsmRootOption = None,
) -> None:
    """Say which TEE backends this machine offers, and why the others are absent."""
    from sealpod.tee.detect import detect_backends

    gramine, tsm = _roots(gramine_root, tsm_root)
    statuses = detect_backends(gramine_root=gramine, tsm_root=tsm)
    if json_output:
        emit_json({"ok": True, "backends": [s.to_json() for s in statuses]})
        return
    from rich.table import Table

    table = Table("backend", "available", "why")
    for s in statuses:
        table.add_row(s.name, "yes" if s.available else "no", s.reason)
    out.print(table)


# --- sim ----------------------------------------------------------------------------------------
def sim_init(
    force: Annotated[bool, typer.Option("--force", help="Replace an existing platform.")] = False,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Keep an existing platform instead of failing.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create the simulated platform (keys and certificates) under $SEALPOD_HOME/sim."""
    from sealpod.tee.sim import SimPlatform, state_dir_for

    if force and exist_ok:
        raise ConfigError("give --force or --exist-ok, not both")
    if exist_ok and (state_dir_for() / "platform.json").is_file():
        _show(SimPlatform.load(), json_output)
        return
    with status("generating simulated platform keys (RSA-4096 ARK/ASK)..."):
        platform = SimPlatform.init(force=force)
    _show(platform, json_output)


def sim_show(json_output: JsonOption = False) -> None:
    """Show the simulated platform: roots, FMSPCs, TCB status."""
    from sealpod.tee.sim import SimPlatform

    _show(SimPlatform.load(), json_output)


def _show(platform: SimPlatform, json_output: bool) -> None:
    info = platform.describe()
    if json_output:
        emit_json({"ok": True, "simulated": True, **info})
        return
    err.print(styled((SIM_PLATFORM_WARNING, "bold yellow")))
    for key in ("state_dir", "tcb_status", "advisory_ids", "sgx_root_sha256", "ark_sha256"):
        out.print(f"{key}: {info[key]}", markup=False)
    out.print(f"fmspc: sgx {info['sgx_fmspc']}, tdx {info['tdx_fmspc']}", markup=False)


def sim_set_tcb(
    status: Annotated[str, typer.Argument(help="UpToDate, SWHardeningNeeded, OutOfDate, ...")],
    advisory: Annotated[
        list[str] | None,
        typer.Option("--advisory", help="Advisory id of the platform's TCB level (repeatable)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Choose the TCB status the simulated collateral gives the platform."""
    from sealpod.tee.sim import SimPlatform

    platform = SimPlatform.load().set_tcb(status, tuple(advisory or ()))
    if json_output:
        emit_json(
            {
                "ok": True,
                "tcb_status": platform.config.tcb_status,
                "advisory_ids": list(platform.config.advisory_ids),
            }
        )
        return
    out.print(f"simulated TCB status: {platform.config.tcb_status}", markup=False)


def sim_export(
    directory: Annotated[Path, typer.Argument(help="Directory to write the files into.")],
    json_output: JsonOption = False,
) -> None:
    """Write the sim roots, SNP chain and freshly signed DCAP collateral (dcap-qvl JSON)."""
    from cryptography.hazmat.primitives import serialization

    from sealpod.tee.sim import SimPlatform
    from sealpod.verify.claims import TeeKind

    platform = SimPlatform.load()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. DIRECTORY is an existing file
        raise ConfigError(
            f"cannot create directory {directory}: {exc.strerror or exc}, expected a directory path"
        ) from exc
    files = {
        "sgx_root.pem": platform.cert("sgx-root").public_bytes(serialization.Encoding.PEM),
        "ark.pem": platform.cert("ark").public_bytes(serialization.Encoding.PEM),
        "ask_ark.pem": platform.snp_chain(),
        "vcek.der": platform.vcek_der(),
        "snp_crl.der": platform.snp_crl(),
        "sgx_collateral.json": platform.collateral(TeeKind.SGX).to_dcap_qvl_json().encode(),
        "tdx_collateral.json": platform.collateral(TeeKind.TDX).to_dcap_qvl_json().encode(),
    }
    for name, data in files.items():
        _write_output(directory / name, data)
    if json_output:
        emit_json({"ok": True, "directory": str(directory), "files": sorted(files)})
        return
    out.print(f"wrote {len(files)} files to {directory}", markup=False)


# --- attest -------------------------------------------------------------------------------------
def _report_data(
    report_data: str | None,
    nonce: str | None,
    public_key: Path | None,
    key_out: Path | None,
    measurement: bytes | None,
) -> tuple[bytes, str | None]:
    """The 64 bytes to attest and, for the nonce form, the binding's inputs as runtime data."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sealpod.crypto.binding import attestation_report_data

    if report_data is not None:
        if nonce is not None or public_key is not None:
            raise ConfigError("give either --report-data, or --nonce with --bundle, not both")
        return _hex(report_data, "--report-data"), None
    if nonce is None:
        raise ConfigError("give --report-data HEX, or --nonce HEX with --bundle (and --public-key)")
    if measurement is None:
        raise ConfigError("--nonce needs --bundle: the binding includes the bundle's measurement")
    if public_key is not None:
        pem = read_limited(public_key, "--public-key", limit=MAX_PUBLIC_KEY_SIZE, error=ConfigError)
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"--public-key {public_key} is not a PEM public key") from exc
    else:  # an ephemeral key, as the runtime makes one (docs/protocol.md, Attested secret release)
        private = ec.generate_private_key(ec.SECP256R1())
        key = private.public_key()
        if key_out is not None:
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_output(key_out, pem, mode=0o600)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    nonce_bytes = _hex(nonce, "--nonce")
    data = attestation_report_data(nonce_bytes, der, measurement)
    runtime = json.dumps(
        {
            "binding": "sealpod-attest/v1",
            "nonce": nonce_bytes.hex(),
            "public_key": base64.b64encode(der).decode(),
            "measurement": measurement.hex(),
        },
        separators=(",", ":"),
    )
    return data, runtime


def _target(text: str) -> TargetInfo:
    from sealpod.tee.local import TargetInfo
    from sealpod.tee.sim import UNNAMED

    path = Path(text)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:  # ENAMETOOLONG: a long argument is no path; it may still be hex (below)
        is_dir = exists = False
    if is_dir:
        identity, _ = _load_identity(path)
        return TargetInfo.for_identity(identity)
    if exists:
        data = read_limited(path, "--target", limit=4096, error=ConfigError)
        if len(data) != 512:
            raise ConfigError(
                f"--target {path} is {len(data)} bytes, expected a 512-byte TARGETINFO"
            )
        return TargetInfo.from_bytes(data)
    if _HEX64.fullmatch(text):
        return TargetInfo(mr_enclave=_hex(text, "--target"), attributes=UNNAMED.sgx_attributes())
    raise ConfigError(
        f"--target {shorten(text)!r} is neither a bundle, a TARGETINFO file nor 64 hex digits"
    )


def attest(
    output: Annotated[Path, typer.Option("--output", "-o", help="Evidence file ('-': stdout).")],
    tee: Annotated[
        TeeName, tee_option("The TEE to ask (auto: hardware only, never the simulator).")
    ] = TeeName.AUTO,
    emulate: EmulateOption = None,
    report_data: Annotated[
        str | None, typer.Option("--report-data", help="Up to 64 bytes, hex.")
    ] = None,
    nonce: Annotated[str | None, typer.Option("--nonce", help="32-byte KMS nonce, hex.")] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="PEM public key to bind (--nonce form).")
    ] = None,
    key_out: Annotated[
        Path | None,
        typer.Option("--key-out", help="Save the generated ephemeral private key (0600)."),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Sealed bundle: identity and measurement.")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="A local SGX report for --target instead.")
    ] = False,
    target: Annotated[
        str | None, typer.Option("--target", help="Bundle, TARGETINFO file or MRENCLAVE hex.")
    ] = None,
    privlevel: Annotated[
        int | None, typer.Option("--privlevel", min=0, max=3, help="SNP VMPL (--tee snp).")
    ] = None,
    gramine_root: GramineRootOption = None,
    tsm_root: TsmRootOption = None,
    json_output: JsonOption = False,
) -> None:
    """Ask the TEE for evidence binding report data and write the evidence envelope."""
    from sealpod.tee.select import open_backend

    gramine, tsm = _roots(gramine_root, tsm_root)
    identity, measurement = _load_identity(bundle)
    data, runtime = _report_data(report_data, nonce, public_key, key_out, measurement)
    if local:
        _attest_local(output, tee, target, identity, data, gramine, json_output)
        return
    if target is not None:
        raise ConfigError("--target applies to --local only")
    emulated: Emulated = "tdx" if emulate == "tdx" else ("snp" if emulate == "snp" else "sgx")
    if emulate is not None and tee != "sim":
        raise ConfigError("--emulate applies to --tee sim only")
    backend = open_backend(
        tee, emulate=emulated, identity=identity, gramine_root=gramine, tsm_root=tsm,
        privlevel=privlevel,
    )  # fmt: skip
    evidence = backend.get_evidence(data)
    if runtime is not None:
        evidence = dataclasses.replace(evidence, runtime_data=runtime)
    _write_output(output, (evidence.to_envelope().to_json() + "\n").encode())
    if evidence.simulated:
        err.print(styled((SIM_WARNING, "bold yellow")))
    summary = {"ok": True, "output": str(output), "report_data": data.hex(), **evidence.summary()}
    if json_output:
        emit_json(summary)
    elif str(output) != "-":
        out.print(
            f"wrote {evidence.tee.value} evidence from {backend.name} to {output}", markup=False
        )


def _attest_local(
    output: Path,
    tee: str,
    target: str | None,
    identity: SimIdentity,
    data: bytes,
    gramine_root: Path,
    json_output: bool,
) -> None:
    from sealpod.tee.gramine import GramineBackend
    from sealpod.tee.local import LocalReportFile, SimLocalAttester
    from sealpod.tee.sim import SimPlatform

    if target is None:
        raise ConfigError("--local needs --target (a bundle, a TARGETINFO file or MRENCLAVE hex)")
    info = _target(target)
    if tee == "sim":
        report = SimLocalAttester(SimPlatform.load(), identity).report(info.to_bytes(), data)
        err.print(styled((SIM_WARNING, "bold yellow")))
    elif tee in ("sgx", "auto"):
        report = GramineBackend(gramine_root).local_report(info.to_bytes(), data)
    else:
        raise ConfigError(f"local reports are SGX: use --tee sgx (Gramine) or sim, not {tee}")
    doc = LocalReportFile(
        source="sim" if tee == "sim" else "gramine",
        target_mr_enclave=info.mr_enclave.hex(),
        report=base64.b64encode(report).decode(),
    )
    _write_output(output, (doc.model_dump_json() + "\n").encode())
    if json_output:
        emit_json({"ok": True, "output": str(output), "target": info.mr_enclave.hex()})
    elif str(output) != "-":
        out.print(f"wrote a local report for {info.mr_enclave.hex()} to {output}", markup=False)


# --- verify-local -------------------------------------------------------------------------------
def verify_local(
    report: Annotated[Path, typer.Argument(help="Local report file from 'attest --local'.")],
    target: Annotated[
        str, typer.Option("--target", help="The verifying enclave: bundle, TARGETINFO, hex.")
    ],
    allow_simulation: Annotated[
        bool, typer.Option("--allow-simulation", help="Required: only the simulator can check.")
    ] = False,
    expect_report_data: Annotated[
        str | None, typer.Option("--expect-report-data", help="Hex, compared zero-padded.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Check a local SGX report's MAC as the target enclave would (simulated platform)."""
    from sealpod.tee.local import LocalReportFile, verify_local_report
    from sealpod.tee.sim import SimPlatform

    if not allow_simulation:
        raise PolicyViolation(
            "local reports can only be checked by the simulated platform; pass --allow-simulation",
            ["simulation_not_allowed"],
        )
    doc = LocalReportFile.parse(
        read_limited(report, "local report", limit=MAX_LOCAL_REPORT_FILE_SIZE, error=ConfigError)
    )
    claims = verify_local_report(SimPlatform.load(), doc.report_bytes, target=_target(target))
    if expect_report_data is not None:
        expected = _hex(expect_report_data, "--expect-report-data").ljust(64, b"\x00")
        if claims.report_data != expected:
            raise PolicyViolation(
                "the report's report data differs from --expect-report-data",
                ["report_data_mismatch"],
            )
    if json_output:
        emit_json({"ok": True, "claims": claims.to_json()})
        return
    err.print(styled((SIM_WARNING, "bold yellow")))
    for key, value in claims.to_json().items():
        out.print(f"{key}: {value}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``tee``, ``sim``, ``attest`` and ``verify-local`` to the root app."""
    tee_app = typer.Typer(name="tee", help="TEE backends on this machine.", no_args_is_help=True)
    command(tee_app, "detect")(detect)
    sim_app = typer.Typer(
        name="sim",
        help="The simulated TEE platform (development only: NO hardware protection).",
        no_args_is_help=True,
    )
    command(sim_app, "init")(sim_init)
    command(sim_app, "show")(sim_show)
    command(sim_app, "set-tcb")(sim_set_tcb)
    command(sim_app, "export")(sim_export)
    app.add_typer(tee_app)
    app.add_typer(sim_app)
    command(app, "attest")(attest)
    command(app, "verify-local")(verify_local)
