"""End to end, as a user runs it: the `sealpod` CLI against a real `sealpod kms serve` process
on a free 127.0.0.1 port, over TLS with the certificate the server generated, attesting a real
sealed bundle with simulated evidence. Finally every line the servers logged is searched for
the secret values, the admin token and the shares: none may appear."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sealpod.build.bundle import build_bundle, load_bundle
from sealpod.build.keys import AuthorPrivateKey, generate_key
from sealpod.cli.main import app
from sealpod.spec.load import image_source, load_spec
from sealpod.spec.template import write_example

SEALPOD = Path(sys.executable).with_name("sealpod")
FILE_SECRET = "file-secret 3b9e1c7d value"
ENV_SECRET = "env-secret 52aa90f1 value"


def cli(*args: str, env: dict[str, str] | None = None, code: int = 0) -> str:
    """Run a `sealpod` command in-process (typer's runner): the admin commands are plain HTTP
    clients, so this saves an interpreter start per command; the server, `kms init`,
    `kms fetch`, `kms unseal` and `kms audit --verify` still run as real processes."""
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, f"sealpod {' '.join(args)}: {result.output}"
    return result.output


def sp(
    *args: str, env: dict[str, str] | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(SEALPOD), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if ok:
        assert proc.returncode == 0, f"sealpod {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    ca: str | None
    log: Path


@dataclass
class Logs:
    files: list[Path] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.files if p.exists())


def start_server(home: Path, log: Path, *args: str) -> Server:
    info = home / "kms" / "server.json"
    info.unlink(missing_ok=True)
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            [str(SEALPOD), "kms", "serve", "--port", "0", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited:\n" + log.read_text())
        if info.is_file():
            data = json.loads(info.read_text())
            if data.get("pid") == proc.pid:
                ca = data.get("ca")
                verify = ssl.create_default_context(cafile=ca) if ca else True
                try:
                    httpx.get(f"{data['url']}/healthz", verify=verify, timeout=2)
                    return Server(proc, str(data["url"]), ca, log)
                except httpx.HTTPError:
                    pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start:\n" + log.read_text())


def stop_server(server: Server) -> None:
    if server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=60)
        assert code == 0, f"server exited {code}:\n{server.log.read_text()}"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def logs() -> Logs:
    return Logs()


def build_sample(work: Path, key: AuthorPrivateKey, out: str) -> Path:
    spec_path = work / "sealpod.toml"
    spec = load_spec(spec_path)
    bundle = build_bundle(
        spec,
        image=image_source(spec, spec_path),
        key=key,
        out=work / out,
        signed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    return bundle.path


@pytest.fixture
def bundles(tmp_path: Path) -> tuple[Path, Path]:
    """The sample bundle (as `sealpod init` + `sealpod build` make it), and a 'tampered'
    rebuild with one file changed by the host. Built in-process: bundles are not under test."""
    work = tmp_path / "app"
    write_example(work)
    key = generate_key()
    bundle = build_sample(work, key, "bundle")
    conf = next(p for p in (work / "rootfs").rglob("*.conf"))
    conf.write_text(conf.read_text() + "\n# changed by the host\n")
    return bundle, build_sample(work, key, "tampered")


@pytest.fixture
def server(_isolated_home: Path, tmp_path: Path, logs: Logs) -> Iterator[Server]:
    sp("kms", "init")
    log = tmp_path / "serve.log"
    logs.files.append(log)
    srv = start_server(_isolated_home, log, "--trust-sim", "--no-pcs")
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.mark.slow
def test_cli_against_a_real_server(
    server: Server, bundles: tuple[Path, Path], tmp_path: Path, logs: Logs, _isolated_home: Path
) -> None:
    bundle, tampered = bundles
    assert server.url.startswith("https://127.0.0.1:") and server.ca
    measurement = load_bundle(bundle).measurement.hex()

    secret_file = tmp_path / "db.txt"
    secret_file.write_text(FILE_SECRET)
    cli("kms", "secret", "put", "db-password", "--from-file", str(secret_file))
    cli("kms", "secret", "put", "api-key", "--from-env", "API_KEY", env={"API_KEY": ENV_SECRET})
    cli("kms", "secret", "put", "volume-key", "--generate", "bytes:32")
    cli("kms", "secret", "put", "tls-key", "--generate", "tls-cert", "--dns", "app.internal")
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'allow_simulation = true\nmeasurements = ["{measurement}"]\n'
        '[release]\nsecrets = ["db-password", "api-key", "volume-key", "tls-key"]\n'
    )
    cli("kms", "policy", "put", "app", str(policy))
    assert "db-password" in cli("kms", "secret", "list")
    shown = cli("kms", "secret", "get", "tls-key")  # not its stored parameters as raw JSON
    assert "issued at each release" in shown and "app.internal" in shown
    assert '"generate"' not in shown

    # The workload side, as a real process: attest the bundle with simulated evidence.
    fetched = sp("kms", "fetch", "--bundle", str(bundle), "--tee", "sim", "--json",
                 "db-password", "api-key", "volume-key", "tls-key")  # fmt: skip
    got = json.loads(fetched.stdout)["secrets"]
    assert got["db-password"]["value"] == FILE_SECRET
    assert got["api-key"]["value"] == ENV_SECRET
    tls = json.loads(got["tls-key"]["value"])
    assert "BEGIN CERTIFICATE" in tls["cert"] and "BEGIN PRIVATE KEY" in tls["key"]
    generated = [
        got["volume-key"].get("value") or got["volume-key"]["value_base64"],
        tls["key"].splitlines()[1],
    ]

    refused = sp("kms", "fetch", "--bundle", str(tampered), "--tee", "sim", "--json",
                 "db-password", ok=False)  # fmt: skip
    assert refused.returncode == 16
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "kms.refused"
    assert any("measurement_not_allowed" in v for v in error["violations"])
    assert FILE_SECRET not in refused.stdout + refused.stderr

    assert cli("kms", "secret", "get", "db-password") == FILE_SECRET

    # A new token-signing key on the running server: the JWKS lists both, fetching still works.
    rotated = json.loads(cli("kms", "rotate-key", "token-signing", "--json"))
    verify = ssl.create_default_context(cafile=server.ca) if server.ca else True
    jwks = httpx.get(f"{server.url}/v1/jwks", verify=verify).json()["keys"]
    assert [k["kid"] for k in jwks] == [rotated["id"], rotated["previous_id"]]
    again = sp("kms", "fetch", "--bundle", str(bundle), "--tee", "sim", "--json", "db-password")
    assert json.loads(again.stdout)["secrets"]["db-password"]["value"] == FILE_SECRET
    assert "kms.conflict" in cli("kms", "rotate-key", "token-signing", "--json", code=16)
    assert "expected token-signing or ca" in cli("kms", "rotate-key", "master", code=2)

    token_file = tmp_path / "auditor.token"
    cli("kms", "user", "add", "alice", "--role", "auditor", "--out-token", str(token_file))
    audit = sp("kms", "audit", "--verify", "--json", "--token-file", str(token_file))
    report = json.loads(audit.stdout)
    assert report["ok"] is True and report["server"]["macs_checked"] is True
    denied = cli("kms", "secret", "list", "--token-file", str(token_file), code=16)
    assert "kms.forbidden" in denied
    records = json.loads(cli("kms", "audit", "--json"))
    kinds = [(r["kind"], r["outcome"]) for r in records]
    assert ("attest", "ok") in kinds and ("attest", "refused") in kinds
    assert ("secret.release", "ok") in kinds and ("user.add", "ok") in kinds
    assert ("key.rotate", "ok") in kinds

    stop_server(server)  # the fixture's stop is then a no-op on an exited process
    server_log = logs.text()
    assert "event=start" in server_log and "attest refused" in server_log
    admin_token = (_isolated_home / "kms" / "admin.token").read_text().strip()
    for needle in [FILE_SECRET, ENV_SECRET, admin_token, token_file.read_text().strip(),
                   *generated]:  # fmt: skip
        assert needle not in server_log


@pytest.mark.slow
def test_shamir_init_serve_sealed_unseal(_isolated_home: Path, tmp_path: Path) -> None:
    shares_dir = tmp_path / "shares"
    args = ["kms", "init", "--shares", "3", "--threshold", "2", "--shares-dir", str(shares_dir)]
    init = json.loads(sp(*args, "--json").stdout)
    assert init["mode"] == "shamir" and len(init["share_files"]) == 3
    assert "shares" not in init  # written to files, not printed
    assert not (_isolated_home / "kms" / "master.key").exists()
    log = tmp_path / "serve.log"
    srv = start_server(_isolated_home, log, "--no-pcs")
    try:
        status = json.loads(cli("kms", "status", "--json"))
        assert status["sealed"] is True and status["threshold"] == 2
        assert "503" in cli("kms", "secret", "list", code=16)
        sp("kms", "unseal", "--share-file", init["share_files"][2],
           "--share-file", init["share_files"][0])  # fmt: skip
        assert json.loads(cli("kms", "status", "--json"))["sealed"] is False
        assert cli("kms", "secret", "list", "--json").strip() == "[]"
    finally:
        stop_server(srv)
    shares = [Path(p).read_text().strip() for p in init["share_files"]]
    text = log.read_text()
    assert all(share not in text for share in shares)
