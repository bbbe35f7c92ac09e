"""``sealpod kms ...`` run as a user runs it, with hostile or absent inputs and no server.

No KMS is started: the commands meet a port nobody listens on, a ``server.json`` of random
bytes or of the wrong shape, a bundle directory of garbage, secret files that are missing,
directories, FIFOs or too large, an unset environment variable, policies that are garbage,
non-UTF-8 or carry an unknown key, garbage shares and token files, a database file of random
bytes, ``--db`` URLs that mean nothing, and ``kms init`` run twice.

Each case must end with a documented family exit code (1-5, 10-16) — never 70 ("internal
error"), never a hang, never a traceback — its ``--json`` variant must print one JSON document
with an error code, and no secret value or token from the inputs may appear in the output. The
cases run once per module, a few at a time, as real processes: children forked from a fork
server that imported sealpod once, each with its own cwd, environment, argv and stdio, running
the console script's ``main()`` (the setup steps run the installed ``sealpod`` script itself);
each case is then its own test.
"""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_process import SEALPOD_SCRIPT, Outcome, hostile_files, run_script

pytestmark = pytest.mark.timeout(120)

SEALPOD = SEALPOD_SCRIPT
FAMILY_EXIT_CODES = {1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16}
TRACEBACK = "Traceback"
WORKERS = 4
CASE_TIMEOUT_SECS = 40

#: Values planted in the inputs; none may be echoed by any command.
SECRET_VALUE = "hunter2-e2e-SECRET-VALUE-7f3a"
SECRET_TOKEN = "sealpod.abcdef0123456789.SECRETTOKENxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
SECRET_SHARE = "sealpod-share-v1-1-" + "5ec7e7" * 6 + "-zz"
SECRET_ENV = "SEALPOD_E2E_SECRET"
PLANTED = (SECRET_VALUE, SECRET_TOKEN, SECRET_SHARE, "5ec7e7" * 6, "SECRETTOKEN")

#: Homes (``$SEALPOD_HOME``), each set up in ``_homes``.
HOMES = (
    "home-empty",
    "home-serverjson-random",
    "home-serverjson-list",
    "home-serverjson-badurl",
    "home-serverjson-unreachable",
    "home-serverjson-ca-dir",
    "home-db-random",
    "home-db-dir",
    "home-inited",
    "home-shamir",
)


@dataclass(frozen=True, slots=True)
class Case:
    """One command line, run with ``--json`` (and, when ``plain``, also without it)."""

    name: str
    args: tuple[str, ...]
    home: str = "home-empty"
    plain: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: False for commands without ``--json`` (``serve``): only the plain run.
    json: bool = True
    #: Text that the plain run's stderr must quote exactly (markup-looking input).
    verbatim: str = ""


@pytest.fixture(scope="module")
def dead_port() -> Iterator[int]:
    """A loopback port that is bound (so nobody else takes it) but never listens: refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _make_inputs(root: Path) -> dict[str, Path]:
    rng = random.Random(20261126)
    h = root / "hostile"
    files: dict[str, bytes] = {
        "empty": b"",
        "random": rng.randbytes(2000),
        "nonutf8": b"\xff\xfe\xfa\x80\x81[release]\n",
        "bad.toml": b"[[[[release\nsecrets = \n",
        "bad.json": b'{"release": {"secrets": ["a"',
        "unknown-key.toml": b'allow_simulation = true\nmeasurementz = ["00"]\n'
        b'[release]\nsecrets = ["a"]\n',
        "unknown-key.json": b'{"allow_simulation": true, "release": {"secrets": ["a"],'
        b' "colour": "red"}}',
        "value": SECRET_VALUE.encode(),
        "token": (SECRET_TOKEN + "\n").encode(),
        "token-ctrl": (SECRET_TOKEN + "\x01\x7f\r\nX-Evil: 1\n").encode(),
        "token-nonutf8": b"\xff" + SECRET_TOKEN.encode(),
        "token-nonascii": (SECRET_TOKEN + "\u00e9\u2603").encode(),
        "share-garbage": (SECRET_SHARE + "\n").encode(),
        "share-ctrl": b"\x00\x01\x02" + SECRET_SHARE.encode(),
        "no-release.toml": b"allow_simulation = true\n",
        "markup-key.toml": b'"[/x]" = 1\n[release]\nsecrets = ["a"]\n',
    }
    paths = hostile_files(h, files)
    garbage_bundle = root / "garbage-bundle"
    garbage_bundle.mkdir()
    for name in ("manifest.json", "signature.json"):
        (garbage_bundle / name).write_bytes(rng.randbytes(300))
    paths["garbage-bundle"] = garbage_bundle
    return paths


def _homes(work: Path, port: int) -> dict[str, Path]:
    homes: dict[str, Path] = {}
    for name in HOMES:
        home = work / name
        (home / "kms").mkdir(parents=True, mode=0o700)
        homes[name] = home
    kms = {name: home / "kms" for name, home in homes.items()}
    rng = random.Random(5)
    (kms["home-serverjson-random"] / "server.json").write_bytes(rng.randbytes(400))
    (kms["home-serverjson-list"] / "server.json").write_text('[1, 2, {"url": 3}]')
    (kms["home-serverjson-badurl"] / "server.json").write_text(
        json.dumps({"url": ["not", "a", "url"], "ca": 7, "pid": "x"})
    )
    (kms["home-serverjson-unreachable"] / "server.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{port}", "pid": 1})
    )
    (kms["home-serverjson-ca-dir"] / "server.json").write_text(
        json.dumps({"url": f"https://127.0.0.1:{port}", "ca": str(work)})
    )
    (kms["home-db-random"] / "kms.db").write_bytes(rng.randbytes(8192))
    (kms["home-db-dir"] / "kms.db").mkdir()
    return homes


def _cases(p: dict[str, Path], port: int, bundle: Path) -> list[Case]:
    dead = f"http://127.0.0.1:{port}"
    tok = ("--token-file", str(p["token"]))
    cases: list[Case] = []

    def add(name: str, *args: str, home: str = "home-empty", plain: bool = False,
            env: dict[str, str] | None = None, json: bool = True,
            verbatim: str = "") -> None:  # fmt: skip
        cases.append(Case(name, args, home=home, plain=plain or not json or bool(verbatim),
                          env=env or {}, json=json, verbatim=verbatim))  # fmt: skip

    # fetch: no server, a server.json that is garbage, a bundle that is garbage.
    fetch = ("kms", "fetch", "--tee", "sim", "--bundle")
    add("fetch-unreachable", *fetch, str(bundle), "--url", dead, "db", plain=True)
    add("fetch-no-server", *fetch, str(bundle), "db")
    for home in ("serverjson-random", "serverjson-list", "serverjson-badurl",
                 "serverjson-unreachable", "serverjson-ca-dir"):  # fmt: skip
        add(f"fetch-{home}", *fetch, str(bundle), "db", home=f"home-{home}")
    add("fetch-garbage-bundle", *fetch, str(p["garbage-bundle"]), "--url", dead, "db")
    add("fetch-bundle-missing", *fetch, str(p["missing"]), "--url", dead, "db")
    add("fetch-bad-url", *fetch, str(bundle), "--url", "::not a url::", "db")
    add("fetch-ftp-url", *fetch, str(bundle), "--url", "ftp://127.0.0.1/", "db")
    add("fetch-ca-random", *fetch, str(bundle), "--url", dead, "--ca", str(p["random"]), "db")
    add("fetch-emulate-garbage", *fetch, str(bundle), "--url", dead, "--emulate", "zz", "db")
    add("fetch-out-dir-file", *fetch, str(bundle), "--url", dead, "--out-dir", str(p["random"]),
        "db")  # fmt: skip
    # secret put: the value's source is hostile; the server is not there.
    put = ("kms", "secret", "put", "s1", "--url", dead, *tok)
    for kind in ("missing", "dir", "fifo", "oversized"):
        add(f"secret-put-file-{kind}", *put, "--from-file", str(p[kind]), plain=kind == "fifo")
    add("secret-put-env-unset", *put, "--from-env", "SEALPOD_E2E_NOT_SET_ANYWHERE")
    add("secret-put-env-unreachable", *put, "--from-env", SECRET_ENV, plain=True,
        env={SECRET_ENV: SECRET_VALUE})  # fmt: skip
    add("secret-put-file-unreachable", *put, "--from-file", str(p["value"]), plain=True)
    add("secret-put-both-sources", *put, "--from-file", str(p["value"]), "--from-env",
        SECRET_ENV, env={SECRET_ENV: SECRET_VALUE})  # fmt: skip
    add("secret-put-generate-garbage", *put, "--generate", "\u00e9\x01garbage")
    add("secret-rotate-file-dir", "kms", "secret", "rotate", "s1", "--url", dead, *tok,
        "--from-file", str(p["dir"]))  # fmt: skip
    add("secret-get-unreachable", "kms", "secret", "get", "s1", "--url", dead, *tok,
        "--out", str(p["dir"]))  # fmt: skip
    # policy put: the policy is hostile (unknown keys are the server's to refuse; locally the
    # file is read and the unreachable server is the error).
    for kind in ("missing", "dir", "fifo", "empty", "random", "nonutf8", "bad.toml", "bad.json",
                 "unknown-key.toml", "unknown-key.json", "oversized"):  # fmt: skip
        add(f"policy-put-{kind}", "kms", "policy", "put", "p1", str(p[kind]), "--url", dead,
            *tok, plain=kind == "nonutf8")  # fmt: skip
    # Markup-looking names and contents are quoted verbatim, never parsed.
    add("policy-put-no-release", "kms", "policy", "put", "[red]p", str(p["no-release.toml"]),
        "--url", dead, *tok, verbatim="policy '[red]p' has no [release] table")  # fmt: skip
    add("policy-put-markup-key", "kms", "policy", "put", "p1", str(p["markup-key.toml"]),
        "--url", dead, *tok, verbatim="[/x]")  # fmt: skip
    add("policy-test-markup-evidence", "kms", "policy", "test", "p1", "--evidence",
        "[/x] :smile:", "--url", dead, *tok, verbatim="[/x] :smile:")  # fmt: skip
    for kind in ("random", "fifo", "missing"):
        add(f"policy-test-evidence-{kind}", "kms", "policy", "test", "p1", "--evidence",
            str(p[kind]), "--url", dead, *tok)  # fmt: skip
    # unseal: garbage share files.
    for kind in ("share-garbage", "share-ctrl", "random", "empty", "dir", "fifo", "oversized"):
        add(f"unseal-{kind}", "kms", "unseal", "--share-file", str(p[kind]), "--url", dead,
            plain=kind == "share-garbage")  # fmt: skip
    # init: twice, over a corrupt database, with nonsense URLs.
    add("init-twice", "kms", "init", home="home-inited", plain=True)
    add("init-twice-other-key-file", "kms", "init", "--master-key-file", "other.key",
        "--token-file", "other.token", home="home-inited")  # fmt: skip
    add("init-db-random", "kms", "init", home="home-db-random", plain=True)
    add("init-db-dir", "kms", "init", home="home-db-dir")
    for label, url in (("nonsense", "::nonsense::"), ("mysql", "mysql://u@127.0.0.1/x"),
                       ("empty-scheme", "://"), ("sqlite-dir", f"sqlite:///{p['dir']}"),
                       ("sqlite-under-file", f"sqlite:///{p['random']}/kms.db"),
                       ("pg-dead", f"postgresql+psycopg://u@127.0.0.1:{port}/x")):  # fmt: skip
        add(f"init-db-url-{label}", "kms", "init", "--db", url, "--master-key-file", "mk",
            "--token-file", "tok")  # fmt: skip
    add("init-shares-without-threshold", "kms", "init", "--shares", "3")
    add("init-threshold-above-shares", "kms", "init", "--shares", "2", "--threshold", "5",
        "--db", "sqlite:///t.db", "--token-file", "tok")  # fmt: skip
    # serve must refuse a corrupt database rather than start (or crash).
    for home in ("home-db-random", "home-db-dir"):
        add(f"serve-{home.removeprefix('home-')}", "kms", "serve", "--port", "0",
            "--insecure-http", "--no-pcs", "--info-file", "info.json", home=home,
            json=False)  # fmt: skip
    add("serve-db-url-nonsense", "kms", "serve", "--port", "0", "--insecure-http", "--no-pcs",
        "--db", "::nonsense::", "--info-file", "info.json", json=False)  # fmt: skip
    # audit and status: garbage token files, no server, a corrupt database beside.
    for kind in ("random", "token-nonutf8", "token-nonascii", "token-ctrl", "empty", "dir",
                 "fifo", "oversized", "missing"):  # fmt: skip
        add(f"audit-token-{kind}", "kms", "audit", "--url", dead, "--token-file", str(p[kind]),
            plain=kind == "token-ctrl")  # fmt: skip
    add("audit-no-token", "kms", "audit", "--url", dead)
    add("audit-env-token-ctrl", "kms", "audit", "--url", dead,
        env={"SEALPOD_KMS_TOKEN": SECRET_TOKEN + "\r\nX-Evil: 1"})  # fmt: skip
    add("audit-verify-unreachable", "kms", "audit", "--verify", "--url", dead, *tok)
    for home in ("home-db-random", "home-db-dir", "home-empty", "home-serverjson-random"):
        add(f"status-{home.removeprefix('home-')}", "kms", "status", home=home,
            plain=home == "home-db-random")  # fmt: skip
    add("status-unreachable", "kms", "status", "--url", dead)
    add("status-ca-random", "kms", "status", "--url", dead.replace("http", "https"), "--ca",
        str(p["random"]))  # fmt: skip
    # rekey, recovery and key rotation: hostile key and share files, corrupt databases, outputs
    # that cannot be written. Every one must refuse before the key changes (checked below).
    for kind in ("random", "empty", "dir", "fifo", "oversized", "missing", "nonutf8"):
        add(f"rekey-key-file-{kind}", "kms", "rekey", "--master-key-file", str(p[kind]),
            home="home-inited", plain=kind == "random")  # fmt: skip
    for kind in ("share-garbage", "share-ctrl", "random", "empty", "dir", "fifo", "oversized"):
        add(
            f"rekey-share-{kind}",
            "kms",
            "rekey",
            "--share-file",
            str(p[kind]),
            "--share-file",
            str(p[kind]),
            home="home-shamir",
            plain=kind == "share-garbage",
        )
        add(f"recover-share-{kind}", "kms", "recover", "--share-file", str(p[kind]),
            "--share-file", str(p[kind]), "--master-key-file", "new.key", home="home-inited",
            plain=kind == "share-garbage")  # fmt: skip
    for home in ("home-db-random", "home-db-dir", "home-empty"):
        add(f"rekey-{home.removeprefix('home-')}", "kms", "rekey", home=home)
        add(f"recover-{home.removeprefix('home-')}", "kms", "recover", "--master-key-file",
            "new.key", home=home)  # fmt: skip
    add("rekey-new-key-file-dir", "kms", "rekey", "--new-master-key-file", str(p["dir"]),
        home="home-inited")  # fmt: skip
    add("rekey-shares-dir-file", "kms", "rekey", "--shares", "2", "--threshold", "2",
        "--shares-dir", str(p["random"]), home="home-inited")  # fmt: skip
    add("rekey-shares-one", "kms", "rekey", "--shares", "1", "--threshold", "1",
        home="home-inited")  # fmt: skip
    add("recovery-keys-shares-dir-file", "kms", "recovery-keys", "--shares", "2",
        "--threshold", "2", "--shares-dir", str(p["random"]), home="home-inited")  # fmt: skip
    add("recover-into-dir", "kms", "recover", "--master-key-file", str(p["dir"]),
        home="home-inited")  # fmt: skip
    add("recover-under-file", "kms", "recover", "--master-key-file", f"{p['random']}/k",
        home="home-inited")  # fmt: skip
    for kind in ("random", "token-ctrl", "fifo"):
        add(f"rotate-key-token-{kind}", "kms", "rotate-key", "ca", "--url", dead,
            "--token-file", str(p[kind]))  # fmt: skip
    add("rotate-key-unknown", "kms", "rotate-key", "master", "--url", dead, *tok)
    add("user-add-bad-role", "kms", "user", "add", "u1", "--role", "root", "--url", dead, *tok)
    add("user-list-unreachable", "kms", "user", "list", "--url", dead, *tok)
    return cases


#: A fork server: imports sealpod once, then runs each job in a forked child that sets its
#: cwd, environment, argv and stdio and calls the console script's ``main()``, so ~100 real
#: processes cost the interpreter's import time once per worker instead of once each.
FORK_SERVER = r"""
import json, os, sys, time
import sealpod.cli.main, sealpod.kms.admin_client, sealpod.kms.client, sealpod.kms.store
import sealpod.kms.server, sealpod.kms.state, sealpod.build.bundle, sealpod.tee.sim
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, name, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(name, flags, 0o600)
            os.dup2(f, fd)
            os.close(f)
        sys.argv = ["sealpod", *job["args"]]
        code = 0
        try:
            sealpod.cli.main.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + job["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(os.waitstatus_to_exitcode(status), flush=True)
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("timeout", flush=True)
            break
        time.sleep(0.005)
"""


class ForkServer:
    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._proc.stdout is None or self._proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the fork server did not start")

    def run(self, args: tuple[str, ...], *, cwd: Path, env: dict[str, str]) -> Outcome:
        if self._proc.stdin is None or self._proc.stdout is None:
            raise RuntimeError("the fork server has no pipes")
        out, err = cwd / ".stdout", cwd / ".stderr"
        job = {"args": list(args), "cwd": str(cwd), "env": env, "out": str(out),
               "err": str(err), "timeout": CASE_TIMEOUT_SECS}  # fmt: skip
        self._proc.stdin.write(json.dumps(job) + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        stdout = out.read_text(errors="replace")
        stderr = err.read_text(errors="replace")
        if answer == "timeout":
            return Outcome(-1, stdout, f"timed out after {CASE_TIMEOUT_SECS} s (a hang)")
        return Outcome(int(answer), stdout, stderr)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _env(case: Case, home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SEALPOD_KMS_", "SEALPOD_KEY_")) and k != SECRET_ENV
    }
    env["SEALPOD_HOME"] = str(home)
    env.update(case.env)
    return env


def _run(case: Case, *, json_mode: bool, cwd: Path, home: Path) -> Outcome:
    """One case as the installed ``sealpod`` script (used for the setup steps)."""
    args = (*case.args, "--json") if json_mode else case.args
    return run_script(args, cwd=cwd, env=_env(case, home), timeout=CASE_TIMEOUT_SECS)


@dataclass(frozen=True, slots=True)
class World:
    cases: dict[str, Case]
    json: dict[str, Outcome]
    plain: dict[str, Outcome]
    #: ``home-inited``'s master key before and after the cases ran, and the files left there.
    key_before: bytes
    key_after: bytes
    inited_files: frozenset[str]


def _setup(work: Path, homes: dict[str, Path]) -> Path:
    """A good bundle (and a simulated platform) for ``fetch``; an initialised KMS home."""
    for args, home in (
        (("sim", "init"), "home-empty"),
        (("keygen", "-o", "k.pem"), "home-empty"),
        (("init", "pod"), "home-empty"),
        (("build", "--spec", "pod/sealpod.toml", "--key", "k.pem", "-o", "bundle"), "home-empty"),
        (("kms", "init"), "home-inited"),
        (("kms", "recovery-keys", "--shares", "2", "--threshold", "2"), "home-inited"),
        (("kms", "init", "--shares", "3", "--threshold", "2", "--shares-dir", "s"), "home-shamir"),
    ):
        made = _run(Case("setup", args), json_mode=False, cwd=work, home=homes[home])
        assert made.returncode == 0, (args, made.stderr)
    return work / "bundle"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dead_port: int) -> World:
    if not SEALPOD.is_file():
        pytest.skip(f"the sealpod script is not installed next to {sys.executable}")
    work = tmp_path_factory.mktemp("hostile-kms-cli")
    paths = _make_inputs(work)
    homes = _homes(work, dead_port)
    bundle = _setup(work, homes)
    for name, home in homes.items():  # fetch --tee sim needs the simulated platform
        if name != "home-empty" and (homes["home-empty"] / "sim").is_dir():
            shutil.copytree(homes["home-empty"] / "sim", home / "sim", dirs_exist_ok=True)
    cases = {c.name: c for c in _cases(paths, dead_port, bundle)}
    key_file = homes["home-inited"] / "kms" / "master.key"
    key_before = key_file.read_bytes()
    jobs = [(n, True) for n, c in cases.items() if c.json] + [
        (n, False) for n, c in cases.items() if c.plain
    ]

    servers: queue.SimpleQueue[ForkServer] = queue.SimpleQueue()
    started = [ForkServer() for _ in range(WORKERS)]
    for server in started:
        servers.put(server)

    def one(job: tuple[str, bool]) -> Outcome:
        name, json_mode = job
        case = cases[name]
        scratch = work / "runs" / f"{name}{'-json' if json_mode else ''}"
        scratch.mkdir(parents=True)
        args = (*case.args, "--json") if json_mode else case.args
        server = servers.get()
        try:
            return server.run(args, cwd=scratch, env=_env(case, homes[case.home]))
        finally:
            servers.put(server)

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            outcomes = dict(zip(jobs, pool.map(one, jobs), strict=True))
    finally:
        for server in started:
            server.close()
    return World(
        cases=cases,
        json={n: o for (n, j), o in outcomes.items() if j},
        plain={n: o for (n, j), o in outcomes.items() if not j},
        key_before=key_before,
        key_after=key_file.read_bytes(),
        inited_files=frozenset(
            str(f.relative_to(work / "runs")) for f in (work / "runs").rglob("*") if f.is_file()
        ),
    )


def _placeholder_cases() -> list[Case]:
    fake = {
        k: Path("/x") / k
        for k in (
            "empty", "random", "nonutf8", "bad.toml", "bad.json", "unknown-key.toml",
            "unknown-key.json", "value", "token", "token-ctrl", "token-nonutf8", "token-nonascii",
            "share-garbage", "share-ctrl", "missing", "dir", "fifo", "oversized",
            "garbage-bundle", "no-release.toml", "markup-key.toml",
        )
    }  # fmt: skip
    return _cases(fake, 1, Path("/x/bundle"))


CASES = _placeholder_cases()


def _assert_no_planted(outcome: Outcome) -> None:
    for planted in PLANTED:
        assert planted not in outcome.stdout, f"{planted!r} echoed on stdout"
        assert planted not in outcome.stderr, f"{planted!r} echoed on stderr"


@pytest.mark.parametrize("name", [c.name for c in CASES if c.json])
def test_kms_hostile_input_json_names_the_error(world: World, name: str) -> None:
    outcome = world.json[name]
    assert TRACEBACK not in outcome.stderr, outcome.stderr
    assert outcome.returncode in FAMILY_EXIT_CODES, (outcome.returncode, outcome.stderr[-600:])
    doc = json.loads(outcome.stdout)
    assert isinstance(doc, dict), doc
    error = doc["error"]
    assert isinstance(error["code"], str) and error["code"], doc
    assert isinstance(error["message"], str) and error["message"], doc
    assert doc.get("ok") is False, doc
    assert len(error["message"]) < 2000
    _assert_no_planted(outcome)


@pytest.mark.parametrize("name", [c.name for c in CASES if c.plain])
def test_kms_hostile_input_plain_says_why_on_stderr(world: World, name: str) -> None:
    outcome = world.plain[name]
    assert TRACEBACK not in outcome.stderr, outcome.stderr
    assert outcome.returncode in FAMILY_EXIT_CODES, (outcome.returncode, outcome.stderr[-600:])
    assert outcome.stderr.strip(), "a refusal must say why on stderr"
    assert "internal error" not in outcome.stderr
    _assert_no_planted(outcome)
    case = world.cases[name]
    assert case.verbatim in outcome.stderr, f"{case.verbatim!r} not quoted: {outcome.stderr!r}"


def test_kms_init_twice_keeps_the_first_key(world: World) -> None:
    """A second ``kms init`` refuses before touching anything: the first master key stays."""
    assert world.json["init-twice"].returncode == 2
    assert world.json["init-twice-other-key-file"].returncode == 16
    assert world.key_after == world.key_before
    for run in ("init-twice-other-key-file", "init-twice-other-key-file-json"):
        assert f"{run}/other.key" not in world.inited_files, "a second init wrote a key"
        assert f"{run}/other.token" not in world.inited_files, "a second init wrote a token"


def test_refused_rekeys_and_recoveries_keep_the_key(world: World) -> None:
    """No hostile ``rekey``/``recover`` replaced the master key or wrote a recovered one."""
    assert world.key_after == world.key_before
    assert not [f for f in world.inited_files if f.endswith("new.key")]
    for name in world.cases:
        if name.startswith(("rekey-", "recover-")):
            assert world.json[name].returncode != 0, name


def test_every_case_name_is_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def test_kms_init_that_cannot_write_its_secrets_initialises_nothing(tmp_path: Path) -> None:
    """A master key, token or share that cannot be written must stop ``kms init`` before the
    database is initialised: otherwise the KMS exists with a key nobody holds, and a second
    ``init`` is refused."""
    if not SEALPOD.is_file():
        pytest.skip(f"the sealpod script is not installed next to {sys.executable}")
    home = tmp_path / "home"
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"x")
    attempts = (
        ("kms", "init", "--master-key-file", f"{blocker}/mk"),
        ("kms", "init", "--token-file", f"{blocker}/tok"),
        ("kms", "init", "--shares", "3", "--threshold", "2", "--shares-dir", f"{blocker}/s"),
    )
    for args in attempts:
        failed = _run(Case("init-blocked", args), json_mode=True, cwd=tmp_path, home=home)
        assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
        assert json.loads(failed.stdout)["error"]["code"] == "config"
        assert not (home / "kms" / "master.key").exists(), "a key of a failed init was kept"
        assert not (home / "kms" / "admin.token").exists(), "a token of a failed init was kept"
    done = _run(Case("init", ("kms", "init")), json_mode=True, cwd=tmp_path, home=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert (home / "kms" / "master.key").stat().st_mode & 0o077 == 0
    assert (home / "kms" / "admin.token").stat().st_mode & 0o077 == 0


def test_kms_secret_from_stdin_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--from-file -`` reads at most the limit plus one byte and refuses a longer stream."""
    import io

    from sealpod.cli import kms as kms_cli
    from sealpod.errors import ConfigError

    class _Stdin:
        buffer = io.BytesIO(b"v" * (kms_cli.MAX_VALUE_FILE + 10))

    monkeypatch.setattr(sys, "stdin", _Stdin())
    with pytest.raises(ConfigError, match="larger than"):
        kms_cli._read_value(Path("-"), None)
    monkeypatch.setattr(_Stdin, "buffer", io.BytesIO(SECRET_VALUE.encode()))
    assert kms_cli._read_value(Path("-"), None) == SECRET_VALUE.encode()
