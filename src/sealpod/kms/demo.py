"""A narrated end-to-end demo of attested secret release (``python -m sealpod.kms.demo``;
``make demo`` runs it).

In a fresh temporary ``SEALPOD_HOME`` it builds the sample bundle, starts an embedded KMS
(SQLite) that trusts the *simulated* platform, stores a secret and a release policy, attests the
bundle in simulation and receives the secret, then shows a tampered bundle refused with its
violation code and the audit chain verified. Every step is a real ``sealpod`` command, printed
before it runs. NO hardware protection is involved: this is the simulator.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

SEALPOD = [sys.executable, "-m", "sealpod.cli.main"]


def _say(text: str) -> None:
    print(f"\n# {text}", flush=True)


def _run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    print("$ sealpod " + " ".join(shlex.quote(a) for a in args), flush=True)
    proc = subprocess.run([*SEALPOD, *args], env=env, text=True, capture_output=True)  # noqa: S603
    for line in (proc.stdout + proc.stderr).rstrip().splitlines():
        print(f"  {line}", flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode})")
    return proc


def _build(work: Path, out: str) -> Path:
    from sealpod.build.bundle import build_bundle
    from sealpod.build.keys import load_private_key
    from sealpod.spec.load import image_source, load_spec

    spec_path = work / "sealpod.toml"
    spec = load_spec(spec_path)
    key = load_private_key(work / "author.pem")
    bundle = build_bundle(
        spec,
        image=image_source(spec, spec_path),
        key=key,
        out=work / out,
        signed_at=datetime.now(UTC),
    )
    return bundle.path


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sealpod-demo-") as tmp:
        home, work = Path(tmp) / "home", Path(tmp) / "app"
        env = {**os.environ, "SEALPOD_HOME": str(home)}
        os.environ["SEALPOD_HOME"] = str(home)
        _say("a sample workload, signed by its author")
        _run("init", str(work), env=env)
        _run("keygen", "-o", str(work / "author.pem"), env=env)
        _run("build", "--spec", str(work / "sealpod.toml"), "--key", str(work / "author.pem"),
             "-o", str(work / "bundle"), env=env)  # fmt: skip
        measurement = json.loads(_run("inspect", str(work / "bundle"), "--json", env=env).stdout)[
            "measurement"
        ]

        _say("the owner's key broker: embedded SQLite, trusting the SIMULATED platform")
        _run("sim", "init", "--exist-ok", env=env, check=False)
        _run("kms", "init", env=env)
        log = (Path(tmp) / "kms.log").open("wb")
        server = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [*SEALPOD, "kms", "serve", "--port", "0", "--trust-sim", "--no-pcs"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            info = home / "kms" / "server.json"
            deadline = time.monotonic() + 60
            while not info.is_file() and time.monotonic() < deadline and server.poll() is None:
                time.sleep(0.1)
            print(f"$ sealpod kms serve --trust-sim &   # {json.loads(info.read_text())['url']}")
            secret = Path(tmp) / "db-password.txt"
            secret.write_text("correct horse battery staple")
            _run("kms", "secret", "put", "db-password", "--from-file", str(secret), env=env)
            policy = Path(tmp) / "policy.toml"
            policy.write_text(
                "allow_simulation = true   # the simulator: NO hardware protection\n"
                f'measurements = ["{measurement}"]\n\n[release]\nsecrets = ["db-password"]\n'
            )
            _run("kms", "policy", "put", "app", str(policy), env=env)

            _say("the workload attests (simulated SGX quote) and receives its secret")
            _run("kms", "fetch", "--bundle", str(work / "bundle"), "--tee", "sim", "db-password",
                 env=env)  # fmt: skip

            _say("the host changes one file of the image: the KMS refuses")
            conf = next((work / "rootfs").rglob("*.conf"))
            conf.write_text(conf.read_text() + "\n# changed by the host\n")
            tampered = _build(work, "tampered")
            print(f"(rebuilt as {tampered.name}: a different measurement)")
            refused = _run("kms", "fetch", "--bundle", str(tampered), "--tee", "sim",
                           "db-password", env=env, check=False)  # fmt: skip
            if refused.returncode == 0:
                raise SystemExit("the tampered bundle was NOT refused")

            _say("every attempt is in the hash-chained audit log")
            _run("kms", "audit", env=env)
            _run("kms", "audit", "--verify", env=env)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            log.close()
        print("\ndemo complete")


if __name__ == "__main__":
    main()
