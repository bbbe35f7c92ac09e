"""``sealpod kms`` init, unseal, status, serve, fetch and audit: running the key broker, and
fetching secrets as an attested workload."""

from __future__ import annotations

import base64
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from sealpod.cli._common import EmulateOption, JsonOption, command, emit_json, err, out, tee_option
from sealpod.cli.kms._shared import (
    CaOption,
    DbOption,
    UrlOption,
    _connection,
    _read_text,
    _write_private,
    kms_app,
)
from sealpod.errors import ConfigError
from sealpod.tee.names import TeeName


class LogLevel(StrEnum):
    """``--log-level``."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


# -- init / unseal / status / serve ---------------------------------------------------------------
@command(kms_app, "init")
def init_cmd(
    db: DbOption = None,
    shares: Annotated[
        int, typer.Option("--shares", min=0, max=255, help="Split the master key in N shares.")
    ] = 0,
    threshold: Annotated[
        int, typer.Option("--threshold", min=0, max=255, help="Shares needed to unseal.")
    ] = 0,
    master_key_file: Annotated[
        Path | None,
        typer.Option("--master-key-file", help="Write (or with --use-existing, read) the key."),
    ] = None,
    shares_dir: Annotated[
        Path | None,
        typer.Option("--shares-dir", help="Write each share to DIR/share-N.txt (else stdout)."),
    ] = None,
    admin: Annotated[str, typer.Option("--admin", help="Name of the first admin user.")] = "root",
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Where to write the admin token.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create the KMS database, its master key, signing key, CA and first admin.

    Without --shares the master key goes to a 0600 file (default $SEALPOD_HOME/kms/master.key)
    or, if set, is taken from $SEALPOD_KMS_MASTER_KEY; `serve` then unseals by itself. With
    --shares N --threshold K the key is split and not kept: `serve` starts sealed until K
    shares are given to `sealpod kms unseal`.
    """
    from sealpod.kms.keys import (
        MASTER_KEY_ENV,
        MasterKey,
        load_master_key_env,
        write_master_key_file,
    )
    from sealpod.kms.settings import KmsSettings, kms_home
    from sealpod.kms.state import initialize
    from sealpod.kms.store import Store

    if (shares == 0) != (threshold == 0):
        raise ConfigError("give both --shares and --threshold, or neither")
    settings = KmsSettings(db_url=db) if db else KmsSettings()
    home = kms_home()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    env_key = load_master_key_env()
    master = env_key if (env_key is not None and not shares) else MasterKey.generate()
    key_path: Path | None = None
    if not shares and env_key is None:
        key_path = master_key_file or (home / "master.key")
        if key_path.exists():
            raise ConfigError(f"master key file {key_path} already exists; refusing to replace it")
    token_path = token_file or (home / "admin.token")
    # Everything the one-time secrets go to is created (empty, 0600) before the database is
    # initialised: a key, token or share that cannot be written afterwards is lost for good.
    if key_path is not None:
        write_master_key_file(key_path, master)
    created: list[Path] = [key_path] if key_path is not None else []
    try:
        if not token_path.exists():  # an existing one is only replaced on success, as before
            _write_private(token_path, b"")
            created.append(token_path)
        if shares and shares_dir is not None:
            try:
                shares_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cannot create {shares_dir}: {exc.strerror}") from exc
            for index in range(1, shares + 1):
                share_path = shares_dir / f"share-{index}.txt"
                if share_path.exists():
                    raise ConfigError(f"share file {share_path} already exists")
                _write_private(share_path, b"")
                created.append(share_path)
        store = Store.open(
            settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous
        )
        try:
            result = initialize(store, master, shares=shares, threshold=threshold, admin_name=admin)
        finally:
            store.close()
    except BaseException:
        for made in created:
            made.unlink(missing_ok=True)
        raise
    _write_private(token_path, (result.admin_token + "\n").encode())
    share_texts = [s.to_text() for s in result.shares]
    share_files: list[str] = []
    if share_texts and shares_dir is not None:
        for share in result.shares:
            path = shares_dir / f"share-{share.index}.txt"
            _write_private(path, (share.to_text() + "\n").encode())
            share_files.append(str(path))
    summary: dict[str, object] = {
        "ok": True,
        "key_id": result.key_id,
        "database": settings.resolved_db_url(),
        "mode": "shamir" if share_texts else "key",
        "master_key": str(key_path) if key_path else (f"${MASTER_KEY_ENV}" if not shares else None),
        "admin": admin,
        "admin_token_file": str(token_path),
        "threshold": threshold,
        "share_files": share_files,
    }
    if share_texts and shares_dir is None:
        summary["shares"] = share_texts  # the only time they are shown: hand them out now
    if json_output:
        emit_json(summary)
        return
    out.print(f"KMS initialised (key id {result.key_id}) in {summary['database']}")
    out.print(f"admin '{admin}' token written to {token_path} (mode 600)")
    if key_path:
        out.print(f"master key written to {key_path} (mode 600): keep it safe and backed up")
    if share_texts:
        out.print(f"master key split into {shares} shares, {threshold} needed to unseal:")
        if share_files:
            for share_file in share_files:
                out.print(f"  {share_file}")
        else:
            for text in share_texts:
                out.print(f"  {text}")
        out.print("hand each share to a different custodian; the key itself was not kept")


@command(kms_app, "unseal")
def unseal_cmd(
    url: UrlOption = None,
    ca: CaOption = None,
    share_file: Annotated[
        list[Path] | None,
        typer.Option("--share-file", help="File holding one share (repeatable; else stdin)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Submit Shamir shares to a sealed server (from files, stdin, or a hidden prompt)."""
    from sealpod.kms.admin_client import AdminClient

    texts: list[str] = []
    for path in share_file or []:
        texts.append(_read_text(path, "share file", 4096))
    if not texts:
        if sys.stdin.isatty():
            texts.append(str(typer.prompt("share", hide_input=True)))
        else:
            texts.extend(line.strip() for line in sys.stdin if line.strip())
    if not texts:
        raise ConfigError("no share given")
    base, verify = _connection(url, ca)
    status: dict[str, Any] = {}
    with AdminClient(base, token=None, verify=verify) as client:
        for text in texts:
            status = client.unseal(text)
    if json_output:
        emit_json(status)
    elif status.get("sealed"):
        out.print(f"sealed: {status.get('progress')}/{status.get('threshold')} shares received")
    else:
        out.print(f"unsealed (key id {status.get('key_id')})")


@command(kms_app, "status")
def status_cmd(url: UrlOption = None, ca: CaOption = None, json_output: JsonOption = False) -> None:
    """Show whether the server is initialised and sealed."""
    from sealpod.kms.admin_client import AdminClient

    base, verify = _connection(url, ca)
    from sealpod.kms.identity import identity_of_certificate, peer_certificate

    with AdminClient(base, token=None, verify=verify) as client:
        status = client.status()
    identity = identity_of_certificate(peer_certificate(base)) if base.startswith("https") else None
    if json_output:
        emit_json({"url": base, "identity": identity, **status})
        return
    state = "sealed" if status.get("sealed") else "unsealed"
    out.print(
        f"{base}: {state}, initialised={status.get('initialized')}, mode={status.get('mode')}",
        markup=False,
    )
    if identity is not None:
        out.print(f"identity: {identity}  (pin it in a pod spec's [kms] identity)", markup=False)


@command(kms_app, "serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, envvar="SEALPOD_KMS_PORT", help="0: any free port."
        ),
    ] = 8443,
    db: DbOption = None,
    master_key_file: Annotated[
        Path | None, typer.Option("--master-key-file", help="Unseal at start with this key file.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    insecure_http: Annotated[
        bool, typer.Option("--insecure-http", help="Serve plain HTTP (behind a TLS proxy only).")
    ] = False,
    dns: Annotated[
        list[str] | None, typer.Option("--dns", help="Extra name for the generated certificate.")
    ] = None,
    trust_sim: Annotated[
        bool,
        typer.Option(
            "--trust-sim/--no-trust-sim",
            help="Trust this host's SIMULATED platform (evidence with NO hardware protection; "
            "policies must still set allow_simulation).",
        ),
    ] = False,
    pcs: Annotated[
        bool,
        typer.Option(
            "--pcs/--no-pcs", help="Fetch DCAP collateral for hardware quotes from Intel PCS."
        ),
    ] = True,
    info_file: Annotated[
        Path | None, typer.Option("--info-file", help="Where to write server.json.")
    ] = None,
    nonce_ttl: Annotated[
        int | None,
        typer.Option("--nonce-ttl", min=1, max=3600, help="Seconds a challenge nonce stays valid."),
    ] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Attestations/s per client.")] = None,
    burst: Annotated[
        int | None,
        typer.Option("--burst", min=1, help="Attestations a client may send at once (bucket)."),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="Least severe log record written.")
    ] = LogLevel.INFO,
    access_log: Annotated[
        bool,
        typer.Option("--access-log/--no-access-log", help="Log one line per HTTP request."),
    ] = True,
    log_format: Annotated[
        Literal["logfmt", "json"],
        typer.Option("--log-format", help="One format for every log line (uvicorn's included)."),
    ] = "logfmt",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Processes serving one socket (one per core); > 1 needs the master key at "
            "start. Metrics and rate limits cover all workers together.",
        ),
    ] = 1,
) -> None:
    """Serve the KMS (TLS with a generated certificate unless one is given)."""
    from sealpod.kms.keys import MASTER_KEY_ENV
    from sealpod.kms.logformat import LogFormat
    from sealpod.kms.server import ServeOptions, serve
    from sealpod.kms.settings import KmsSettings, kms_home
    from sealpod.kms.verifier import build_verifier

    overrides: dict[str, Any] = {}
    if db:
        overrides["db_url"] = db
    key_file = master_key_file
    if key_file is None and not os.environ.get(MASTER_KEY_ENV):
        default = kms_home() / "master.key"
        key_file = default if default.is_file() else None
    if key_file is not None:
        overrides["master_key_file"] = key_file
        staged = key_file.with_name(key_file.name + ".new")
        if staged.exists():
            err.print(
                f"warning: {staged} exists: a `sealpod kms rekey` was interrupted; if this key "
                "is refused, run `sealpod kms rekey` again to finish it",
                markup=False,
            )
    if nonce_ttl is not None:
        overrides["nonce_ttl_secs"] = nonce_ttl
    if rate is not None:
        overrides["attest_rate_per_sec"] = rate
    if burst is not None:
        overrides["attest_burst"] = burst
    settings = KmsSettings(**overrides)
    options = ServeOptions(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure_http=insecure_http,
        dns=tuple(dns or ()),
        log_level=log_level.value,
        log_format=LogFormat(log_format),
        access_log=access_log,
        info_file=info_file,
        workers=workers,
    )
    serve(settings, build_verifier(trust_sim=trust_sim, pcs=pcs), options)


# -- fetch (the workload side) ------------------------------------------------------------------
@command(kms_app, "fetch")
def fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Secret names to fetch.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="The sealed bundle being attested.")],
    url: UrlOption = None,
    tee: Annotated[
        TeeName, tee_option("The TEE that attests (auto: hardware only, never the simulator).")
    ] = TeeName.AUTO,
    emulate: EmulateOption = None,
    ca: CaOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Write each secret to DIR/NAME (mode 600).")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Attest BUNDLE's workload to the KMS and fetch secrets, as `sealpod run` would."""
    from sealpod.build.bundle import load_bundle
    from sealpod.kms.client import KmsClient
    from sealpod.tee.select import open_backend
    from sealpod.tee.sim import Emulated, SimIdentity

    loaded = load_bundle(bundle)
    identity = None
    if tee == "sim":
        identity = SimIdentity(
            measurement=loaded.measurement,
            signer=loaded.signer_id,
            product_id=loaded.manifest.identity.product_id,
            svn=loaded.manifest.identity.svn,
            debug=loaded.manifest.tee.debug,
        )
    emulated: Emulated = "tdx" if emulate == "tdx" else ("snp" if emulate == "snp" else "sgx")
    backend = open_backend(tee, emulate=emulated, identity=identity)
    evidence_tee = emulated if tee == "sim" else (tee if tee in ("tdx", "snp") else "sgx")
    base, verify = _connection(url, ca)
    with KmsClient(base, verify=verify) as client:
        got = client.fetch_secrets(backend, loaded.measurement, names, tee=evidence_tee)
    report: dict[str, dict[str, object]] = {}
    for name, secret in got.items():
        entry: dict[str, object] = {"version": secret.version, "content_type": secret.content_type}
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_private(out_dir / name, secret.value)
            entry["file"] = str(out_dir / name)
        else:
            try:
                entry["value"] = secret.value.decode()
            except UnicodeDecodeError:
                entry["value_base64"] = base64.b64encode(secret.value).decode()
        report[name] = entry
    if json_output:
        emit_json({"ok": True, "measurement": loaded.measurement.hex(), "secrets": report})
        return
    for name, entry in report.items():
        shown = entry.get("file") or entry.get("value") or f"base64:{entry.get('value_base64')}"
        out.print(f"{name} (v{entry['version']}): {shown}", markup=False)
