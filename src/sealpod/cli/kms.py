"""``sealpod kms``: initialise, unseal and serve the key broker; manage its secrets, policies,
users and audit log; fetch secrets as an attested workload.

Rendering only: each command parses options, calls :mod:`sealpod.kms` and prints. Secret values
come from files or environment variables (``--from-file``/``--from-env``), never from argv; the
admin token comes from ``$SEALPOD_KMS_TOKEN``, ``--token-file`` or
``$SEALPOD_HOME/kms/admin.token``.
The server is found by ``--url``, ``$SEALPOD_KMS_URL``, or the ``server.json`` that
``sealpod kms serve`` writes next to its database (which also names its TLS certificate).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sealpod._files import read_limited
from sealpod.cli._common import JsonOption, command, emit_json, err, out
from sealpod.errors import ConfigError, KmsError
from sealpod.kms.keys import (
    MASTER_KEY_ENV,
    MasterKey,
    load_master_key_env,
    write_master_key_file,
)
from sealpod.kms.settings import KmsSettings, kms_home

TOKEN_ENV = "SEALPOD_KMS_TOKEN"  # noqa: S105 - an environment variable name
URL_ENV = "SEALPOD_KMS_URL"
CA_ENV = "SEALPOD_KMS_CA"
#: A secret value read from a file; the server enforces its own (smaller) limit.
MAX_VALUE_FILE = 4 * 1024 * 1024

kms_app = typer.Typer(
    name="kms",
    help="The key broker: attested secret release, secrets, policies, users, audit.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
secret_app = typer.Typer(
    help="Secrets: put, get, list, rm, rotate, versions.", no_args_is_help=True
)
policy_app = typer.Typer(help="Release policies: put, list, get, rm, test.", no_args_is_help=True)
user_app = typer.Typer(help="Admin users and roles: add, rm, list.", no_args_is_help=True)
kms_app.add_typer(secret_app, name="secret")
kms_app.add_typer(policy_app, name="policy")
kms_app.add_typer(user_app, name="user")

UrlOption = Annotated[
    str | None, typer.Option("--url", help=f"KMS URL (default: ${URL_ENV} or server.json).")
]
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", help=f"PEM certificate to trust for the KMS (default: ${CA_ENV})."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help=f"Admin token file (default: ${TOKEN_ENV} or kms/admin.token)."
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL (default: SQLite in $SEALPOD_HOME/kms)."),
]


def register(app: typer.Typer) -> None:
    """Add ``sealpod kms`` to the root app."""
    app.add_typer(kms_app, name="kms")


# -- connection helpers --------------------------------------------------------------------------
def _connection(url: str | None, ca: Path | None) -> tuple[str, bool | str]:
    from sealpod.kms.server import read_server_info

    info = read_server_info() or {}
    chosen = url or os.environ.get(URL_ENV) or (str(info["url"]) if info.get("url") else None)
    if not chosen:
        raise ConfigError(
            f"no KMS URL: pass --url, set ${URL_ENV}, or start `sealpod kms serve` on this host"
        )
    ca_path = ca or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV) else None)
    if ca_path is None and info.get("ca") and chosen == info.get("url"):
        ca_path = Path(str(info["ca"]))
    if ca_path is not None and not ca_path.is_file():
        raise ConfigError(f"CA certificate {ca_path} does not exist")
    return chosen, (str(ca_path) if ca_path is not None else True)


def _token(token_file: Path | None) -> str:
    if token_file is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = token_file or (kms_home() / "admin.token")
    if token_file is None and not path.exists():
        raise ConfigError(f"no admin token: set ${TOKEN_ENV} or pass --token-file ({path} absent)")
    token = _read_text(path, "admin token file", 4096)
    if not token:
        raise ConfigError(f"admin token file {path} is empty")
    return token


def _admin(url: str | None, ca: Path | None, token_file: Path | None) -> Any:
    from sealpod.kms.admin_client import AdminClient

    base, verify = _connection(url, ca)
    return AdminClient(base, token=_token(token_file), verify=verify)


def _read_text(path: Path, what: str, limit: int) -> str:
    raw = read_limited(path, what, limit=limit, error=ConfigError)
    try:
        return raw.decode().strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only: an existing file's mode is
    narrowed *before* the secret goes in, not after."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def _read_value(from_file: Path | None, from_env: str | None) -> bytes | None:
    if from_file is not None and from_env is not None:
        raise ConfigError("give only one of --from-file and --from-env")
    if from_file is not None:
        if str(from_file) == "-":
            data = sys.stdin.buffer.read(MAX_VALUE_FILE + 1)
            if len(data) > MAX_VALUE_FILE:
                raise ConfigError(f"secret on stdin is larger than {MAX_VALUE_FILE} bytes")
            return data
        return read_limited(from_file, "secret file", limit=MAX_VALUE_FILE, error=ConfigError)
    if from_env is not None:
        value = os.environ.get(from_env)
        if value is None:
            raise ConfigError(f"environment variable {from_env} is not set")
        return value.encode()
    return None


def _table(columns: list[str], rows: list[list[str]]) -> None:
    table = Table(*columns, show_edge=False, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    out.print(table)


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
    with AdminClient(base, token=None, verify=verify) as client:
        status = client.status()
    if json_output:
        emit_json({"url": base, **status})
        return
    state = "sealed" if status.get("sealed") else "unsealed"
    out.print(
        f"{base}: {state}, initialised={status.get('initialized')}, mode={status.get('mode')}"
    )


@command(kms_app, "serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port.")] = 8443,
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
    nonce_ttl: Annotated[int | None, typer.Option("--nonce-ttl", min=1, max=3600)] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Attestations/s per client.")] = None,
    burst: Annotated[int | None, typer.Option("--burst", min=1)] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log")] = True,
) -> None:
    """Serve the KMS (TLS with a generated certificate unless one is given)."""
    from sealpod.kms.server import ServeOptions, serve
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
        log_level=log_level,
        access_log=access_log,
        info_file=info_file,
    )
    serve(settings, build_verifier(trust_sim=trust_sim, pcs=pcs), options)


# -- fetch (the workload side) ------------------------------------------------------------------
@command(kms_app, "fetch")
def fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Secret names to fetch.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="The sealed bundle being attested.")],
    url: UrlOption = None,
    tee: Annotated[
        str, typer.Option("--tee", help="Evidence backend: sim, gramine, tsm or auto.")
    ] = "auto",
    emulate: Annotated[str, typer.Option("--emulate", help="sim only: sgx, tdx, snp.")] = "sgx",
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
    from sealpod.tee.sim import SimIdentity

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
    if emulate not in ("sgx", "tdx", "snp"):
        raise ConfigError(f"--emulate is {emulate!r}, expected sgx, tdx or snp")
    backend = open_backend(tee, emulate=emulate, identity=identity)  # type: ignore[arg-type]
    evidence_tee = emulate if tee == "sim" else "sgx"
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


# -- secrets ------------------------------------------------------------------------------------
FromFile = Annotated[
    Path | None, typer.Option("--from-file", help="Read the value from FILE ('-': stdin).")
]
FromEnv = Annotated[
    str | None, typer.Option("--from-env", help="Read the value from environment variable VAR.")
]


@command(secret_app, "put")
def secret_put(
    name: str,
    from_file: FromFile = None,
    from_env: FromEnv = None,
    generate: Annotated[
        str | None,
        typer.Option("--generate", help="Generate: bytes:N, password, or tls-cert (with --dns)."),
    ] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="tls-cert: a name.")] = None,
    validity_days: Annotated[int, typer.Option("--validity-days", min=1, max=825)] = 30,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a secret from a file or an environment variable, or have the KMS generate it."""
    value = _read_value(from_file, from_env)
    if (value is None) == (generate is None):
        raise ConfigError("give exactly one of --from-file, --from-env or --generate")
    with _admin(url, ca, token_file) as client:
        info = client.put_secret(
            name, value=value, generate=generate, dns=list(dns or []), validity_days=validity_days
        )
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"secret {name} stored ({info['kind']}, version {info['current_version']})")


@command(secret_app, "rotate")
def secret_rotate(
    name: str,
    from_file: FromFile = None,
    from_env: FromEnv = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a new version: a new value for owner-set secrets, regenerated for generated ones."""
    value = _read_value(from_file, from_env)
    with _admin(url, ca, token_file) as client:
        info = client.rotate_secret(name, value=value)
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"secret {name} is now at version {info['current_version']}")


@command(secret_app, "get")
def secret_get(
    name: str,
    version: Annotated[int | None, typer.Option("--version", min=1)] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the value to FILE (mode 600).")
    ] = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Read a secret's value (admin role only; audited)."""
    with _admin(url, ca, token_file) as client:
        got_version, kind, value = client.get_secret(name, version=version)
    if out_file is not None:
        _write_private(out_file, value)
    if json_output:
        payload: dict[str, object] = {
            "ok": True,
            "name": name,
            "version": got_version,
            "kind": kind,
        }
        if out_file is None:
            payload["value_base64"] = base64.b64encode(value).decode()
        else:
            payload["file"] = str(out_file)
        emit_json(payload)
    elif out_file is None:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    else:
        out.print(f"secret {name} version {got_version} written to {out_file}")


@command(secret_app, "list")
def secret_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List secrets (names, kinds, versions — never values)."""
    with _admin(url, ca, token_file) as client:
        items = client.list_secrets()
    if json_output:
        emit_json(items)
        return
    _table(
        ["name", "kind", "version", "updated"],
        [[i["name"], i["kind"], str(i["current_version"]), i["updated_at"]] for i in items],
    )


@command(secret_app, "versions")
def secret_versions(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the versions of a secret."""
    with _admin(url, ca, token_file) as client:
        items = client.secret_versions(name)
    if json_output:
        emit_json(items)
        return
    _table(
        ["version", "created", "current"],
        [[str(i["version"]), i["created_at"], "*" if i["current"] else ""] for i in items],
    )


@command(secret_app, "rm")
def secret_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a secret and all its versions."""
    with _admin(url, ca, token_file) as client:
        client.remove_secret(name)
    if json_output:
        emit_json({"ok": True, "name": name})
    else:
        out.print(f"secret {name} removed")


# -- policies -----------------------------------------------------------------------------------
@command(policy_app, "put")
def policy_put(
    name: str,
    file: Annotated[Path, typer.Argument(help="Policy TOML (or .json) with a [release] table.")],
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create or replace a release policy."""
    text = _read_text(file, "policy", 256 * 1024)
    fmt = "json" if file.suffix.lower() == ".json" else "toml"
    with _admin(url, ca, token_file) as client:
        info = client.put_policy(name, text, fmt=fmt)
    if json_output:
        emit_json({"ok": True, **info})
    else:
        out.print(f"policy {name} stored; releases: {', '.join(info['secrets'])}")


@command(policy_app, "list")
def policy_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List release policies."""
    with _admin(url, ca, token_file) as client:
        items = client.list_policies()
    if json_output:
        emit_json(items)
        return
    _table(
        ["name", "secrets", "token ttl", "updated"],
        [
            [i["name"], ", ".join(i["secrets"]), f"{i['token_ttl_secs']}s", i["updated_at"]]
            for i in items
        ],
    )


@command(policy_app, "get")
def policy_get(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a release policy."""
    with _admin(url, ca, token_file) as client:
        info = client.get_policy(name)
    if json_output:
        emit_json(info)
    else:
        out.print(json.dumps(info["document"], indent=2, sort_keys=True), markup=False)


@command(policy_app, "rm")
def policy_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a release policy."""
    with _admin(url, ca, token_file) as client:
        client.remove_policy(name)
    if json_output:
        emit_json({"ok": True, "name": name})
    else:
        out.print(f"policy {name} removed")


@command(policy_app, "test")
def policy_test(
    name: str,
    evidence: Annotated[Path, typer.Option("--evidence", help="Evidence file (any encoding).")],
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Dry run: every violation of policy NAME by this evidence (no secret is released)."""
    from sealpod.evidence.envelope import EvidenceEnvelope, load_evidence

    data = read_limited(evidence, "evidence", limit=1024 * 1024, error=ConfigError)
    loaded = load_evidence(data)
    if isinstance(loaded, EvidenceEnvelope):
        envelope = json.loads(loaded.to_json())
    else:
        envelope = {"tee": loaded.tee.value, "evidence": base64.b64encode(loaded.raw).decode()}
    with _admin(url, ca, token_file) as client:
        result = client.test_policy(name, envelope)
    if json_output:
        emit_json(result)
    elif result["matched"]:
        out.print(f"policy {name}: MATCH (the workload would receive its secrets)")
    else:
        out.print(f"policy {name}: NO MATCH")
        for v in result["violations"]:
            detail = ""
            if v.get("expected") is not None or v.get("actual") is not None:
                detail = f" (expected {v.get('expected')}, actual {v.get('actual')})"
            out.print(f"  - {v['code']}: {v['message']}{detail}", markup=False)
    if not result["matched"]:
        raise typer.Exit(13)


# -- users --------------------------------------------------------------------------------------
@command(user_app, "add")
def user_add(
    name: str,
    role: Annotated[str, typer.Option("--role", help="admin, operator or auditor.")],
    out_token: Annotated[
        Path | None, typer.Option("--out-token", help="Write the new token to FILE (mode 600).")
    ] = None,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a user; its token is shown once (or written to --out-token)."""
    if role not in ("admin", "operator", "auditor"):
        raise ConfigError(f"role is {role!r}, expected admin, operator or auditor")
    with _admin(url, ca, token_file) as client:
        token = client.add_user(name, role)
    if out_token is not None:
        _write_private(out_token, (token + "\n").encode())
    if json_output:
        payload: dict[str, object] = {"ok": True, "name": name, "role": role}
        if out_token is None:
            payload["token"] = token
        else:
            payload["token_file"] = str(out_token)
        emit_json(payload)
    elif out_token is not None:
        out.print(f"user {name} ({role}) added; token written to {out_token}")
    else:
        out.print(f"user {name} ({role}) added; token (shown once):")
        out.print(token, markup=False)


@command(user_app, "rm")
def user_rm(
    name: str,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a user (the last admin cannot be removed)."""
    with _admin(url, ca, token_file) as client:
        client.remove_user(name)
    if json_output:
        emit_json({"ok": True, "name": name})
    else:
        out.print(f"user {name} removed")


@command(user_app, "list")
def user_list(
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """List users and roles."""
    with _admin(url, ca, token_file) as client:
        items = client.list_users()
    if json_output:
        emit_json(items)
        return
    _table(["name", "role", "created"], [[i["name"], i["role"], i["created_at"]] for i in items])


# -- audit --------------------------------------------------------------------------------------
@command(kms_app, "audit")
def audit_cmd(
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the hash chain (here and on the server).")
    ] = False,
    after: Annotated[int, typer.Option("--after", min=0, help="Show records after SEQ.")] = 0,
    url: UrlOption = None,
    ca: CaOption = None,
    token_file: TokenFileOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the audit log; with --verify, detect edited, removed or reordered records."""
    with _admin(url, ca, token_file) as client:
        if verify:
            local, server = client.audit_verify()
            ok = local.ok and bool(server.get("ok"))
            if json_output:
                emit_json({"ok": ok, "local": local.to_json(), "server": server})
            else:
                for p in local.problems:
                    err.print(f"  local: {p}", markup=False)
                for p in server.get("problems", []):
                    err.print(f"  server: {p['code']} at seq {p['seq']}: {p['message']}")
                verdict = "intact" if ok else "BROKEN"
                out.print(
                    f"audit chain {verdict}: {local.records} records, last seq {local.last_seq}, "
                    f"head {local.last_hash.hex()[:16]}…, MACs checked by the server: "
                    f"{server.get('macs_checked')}"
                )
            if not ok:
                raise KmsError("the audit chain does not verify (see the problems above)")
            return
        records = list(client.audit_records(after=after))
    if json_output:
        emit_json([r.to_json() for r in records])
        return
    from sealpod.kms.state import iso

    for r in records:
        codes = r.details.get("codes")
        extra = f" codes={','.join(map(str, codes))}" if isinstance(codes, list) else ""
        out.print(
            f"{r.seq:>6} {iso(r.ts_ms)} {r.kind:<15} {r.outcome:<8} actor={r.actor} "
            f"subject={r.subject}{extra}",
            markup=False,
        )
