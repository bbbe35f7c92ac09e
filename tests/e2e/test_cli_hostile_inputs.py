"""Every finished command, run as a user runs it, with hostile or absent inputs.

Missing files, directories where files belong, empty files, random bytes, truncated JSON and
TOML, non-UTF-8 bytes, huge hex, oversized files, a FIFO nobody writes to (the tests run as
root, so "unreadable" is a FIFO or a directory, not chmod 000), a bundle with manifest.json
replaced by garbage or signature.json gone, and a simulated platform with corrupt state.

Arguments and file contents that look like rich markup (``[/x]``, ``[red]b``, ``:smile:``) must
come back verbatim in the message: text is never parsed as markup (a case's ``verbatim``).

Each case must end with a documented family exit code (1-5, 10-16) — never 70 ("internal
error"), never a hang, never a Python traceback — and the ``--json`` variant must print one
parseable JSON document carrying an error code. The cases run as real processes of the
installed ``sealpod`` script, a few at a time, once per module; each case is then its own test.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_process import SEALPOD_SCRIPT, Outcome, hostile_files, run_script

from sealpod.tee.sim import SimPlatform

# The first test pays for the module's one setup, which runs every case (each one bounded by
# CASE_TIMEOUT_SECS): 300 s leaves room for the whole matrix on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(300)

SEALPOD = SEALPOD_SCRIPT
FAMILY_EXIT_CODES = {1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16}
TRACEBACK = "Traceback"
HEX64 = "ab" * 32
HUGE_HEX_ARG = "ab" * 50_000  # 100 kB: under Linux's 128 KiB limit for one argument
WORKERS = 4
CASE_TIMEOUT_SECS = 40


@dataclass(frozen=True, slots=True)
class Case:
    """One command line, always run with ``--json`` and, when ``plain``, also without it;
    ``expect_ok`` marks the few hostile inputs a command is right to shrug off (exit 0)."""

    name: str
    args: tuple[str, ...]
    home: str = "home-empty"
    plain: bool = False
    expect_ok: bool = False
    #: Text that the plain run's stderr must quote exactly (markup-looking input).
    verbatim: str = ""


#: Arguments that rich would take for markup or emoji codes if it parsed them.
MARKUP_ARGS = ("[/x]", "[red]b", "[bold]ev[/bold] :smile:", "[link=x]y[/link]")


# --- the hostile files ---------------------------------------------------------------------------
def _make_inputs(root: Path) -> dict[str, Path]:
    rng = random.Random(20261126)
    h = root / "hostile"
    files: dict[str, bytes] = {
        "empty": b"",
        "random": rng.randbytes(2000),
        "trunc.json": b'{"tee": "sgx", "evidence": "AAAA',
        "bad.toml": b"[[[[image\nsource = \n",
        "nonutf8": b"\xff\xfe\xfa\x80\x81{}",
        "hugehex": b"ab" * 3_000_000,  # 6 MB of valid hex, under the 16 MiB read limit
        "markup.toml": b'"[/x]" = 1\n"[red]k :smile:" = 2\n',
    }
    paths = hostile_files(h, files)
    return paths


HOSTILE = ("missing", "dir", "empty", "random", "trunc.json", "bad.toml", "nonutf8", "fifo",
           "markup.toml")  # fmt: skip
HUGE = ("hugehex", "oversized")


def _bundle_variants(work: Path, good: Path) -> dict[str, Path]:
    """Copies of a good bundle, each broken in one way."""

    def garbage(p: Path) -> None:
        p.write_bytes(random.Random(7).randbytes(500))

    def fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p)

    def directory(p: Path) -> None:
        p.unlink()
        p.mkdir()

    breakers: dict[str, tuple[str, Callable[[Path], object]]] = {
        "manifest-garbage": ("manifest.json", garbage),
        "manifest-empty": ("manifest.json", lambda p: p.write_bytes(b"")),
        "manifest-nonutf8": ("manifest.json", lambda p: p.write_bytes(b"\xff\xfe{")),
        "manifest-truncated": ("manifest.json", lambda p: p.write_bytes(p.read_bytes()[:40])),
        "manifest-fifo": ("manifest.json", fifo),
        "manifest-dir": ("manifest.json", directory),
        "signature-missing": ("signature.json", Path.unlink),
        "signature-truncated": ("signature.json", lambda p: p.write_bytes(p.read_bytes()[:60])),
        "signature-fifo": ("signature.json", fifo),
        "signature-dir": ("signature.json", directory),
    }
    out: dict[str, Path] = {}
    for name, (target, breaker) in breakers.items():
        dest = work / "bundles" / name
        shutil.copytree(good, dest)
        breaker(dest / target)
        out[name] = dest
    return out


def _sim_homes(work: Path, template: Path) -> dict[str, Path]:
    """SEALPOD_HOMEs: empty, a good platform, and platforms with one corrupt state file each
    (named ``home-<dir>-<file>-<how>``, see ``CORRUPT_HOMES``)."""
    homes: dict[str, Path] = {}
    for name in ("home-empty", "home-good", *CORRUPT_HOMES):
        home = work / name
        home.mkdir(mode=0o700)
        homes[name] = home
        if name == "home-empty":
            continue
        shutil.copytree(template / "sim", home / "sim")
        if name == "home-good":
            continue
        stem, how = name.removeprefix("home-").rsplit("-", 1)
        folder, _, file = stem.partition("-") if stem.startswith(("keys-", "certs-")) else (
            "", "", stem)  # fmt: skip
        target = home / "sim" / folder / file
        if how == "random":
            target.write_bytes(random.Random(3).randbytes(300))
            continue
        target.unlink()
        if how == "dir":
            target.mkdir(mode=0o700)
        elif how == "fifo":
            os.mkfifo(target, 0o600)
    return homes


# --- the cases -----------------------------------------------------------------------------------
BUNDLE_VARIANTS = (
    "manifest-garbage", "manifest-empty", "manifest-nonutf8", "manifest-truncated",
    "manifest-fifo", "manifest-dir", "signature-missing", "signature-truncated",
    "signature-fifo", "signature-dir",
)  # fmt: skip
CORRUPT_HOMES = {  # home -> the command that reads the corrupt file
    "home-platform.json-random": ("sim", "show"),
    "home-platform.json-dir": ("sim", "show"),
    "home-platform.json-fifo": ("sim", "show"),
    "home-certs-ark.pem-random": ("sim", "export", "exported"),
    "home-keys-ak-sgx.pem-random": ("attest", "-o", "e", "--tee", "sim", "--report-data", "00"),
    "home-keys-vcek.pem-dir": ("attest", "-o", "e", "--tee", "sim", "--emulate", "snp",
                               "--report-data", "00"),
    "home-keys-vcek.pem-fifo": ("attest", "-o", "e", "--tee", "sim", "--emulate", "snp",
                                "--report-data", "00"),
    "home-keys-report-secret.bin-dir": ("attest", "-o", "l", "--tee", "sim", "--local",
                                        "--target", HEX64, "--report-data", "00"),
    "home-keys-report-secret.bin-missing": ("attest", "-o", "l", "--tee", "sim", "--local",
                                            "--target", HEX64, "--report-data", "00"),
}  # fmt: skip


def _cases(p: dict[str, Path], bundles: dict[str, Path], good_bundle: Path) -> list[Case]:
    """The matrix: every input slot of every command meets the hostile kinds its reader could
    mishandle (each slot's reader is shared, so not every kind needs every slot)."""
    spec = str(good_bundle.parent / "pod" / "sealpod.toml")
    key = str(good_bundle.parent / "k.pem")
    bundle = str(good_bundle)
    rnd = str(p["random"])
    cases: list[Case] = []

    def add(name: str, *args: str, home: str = "home-empty", plain: bool = False,
            expect_ok: bool = False, verbatim: str = "") -> None:  # fmt: skip
        cases.append(Case(name, args, home=home, plain=plain or bool(verbatim),
                          expect_ok=expect_ok, verbatim=verbatim))  # fmt: skip

    for kind in ("missing", "dir", "bad.toml", "nonutf8", "fifo", "oversized"):
        add(f"build-spec-{kind}", "build", "--spec", str(p[kind]), "--key", key, "-o", "o",
            plain=kind == "fifo")  # fmt: skip
    for kind in ("dir", "fifo"):
        add(f"build-key-{kind}", "build", "--spec", spec, "--key", str(p[kind]), "-o", "o")
    add("inspect-missing", "inspect", str(p["missing"]))
    add("verify-bundle-dir", "verify-bundle", str(p["dir"]))
    for i, (name, path) in enumerate(bundles.items()):
        add(f"{('inspect', 'verify-bundle')[i % 2]}-{name}",
            ("inspect", "verify-bundle")[i % 2], str(path), plain=i == 1)  # fmt: skip
    add("attest-bundle-manifest-garbage", "attest", "-o", "e", "--tee", "sim", "--bundle",
        str(bundles["manifest-garbage"]), "--report-data", "00", home="home-good")  # fmt: skip
    for kind in ("missing", "dir", "random", "nonutf8", "fifo", "hugehex", "oversized"):
        add(f"verify-evidence-{kind}", "verify", str(p[kind]), plain=kind == "fifo")
    for kind in ("bad.toml", "nonutf8"):
        add(f"verify-policy-{kind}", "verify", rnd, "--policy", str(p[kind]))
    for kind in ("trunc.json",):
        add(f"verify-collateral-{kind}", "verify", rnd, "--collateral", str(p[kind]))
    add("verify-snp-certs-random", "verify", rnd, "--vcek", rnd, "--cert-chain", rnd)
    for kind in ("trunc.json", "fifo", "dir"):
        add(f"verify-local-report-{kind}", "verify-local", str(p[kind]), "--target", HEX64,
            "--allow-simulation", home="home-good")  # fmt: skip
    for kind in ("random", "fifo"):  # random: 2000 bytes, over OpenSSL's 1023
        add(f"keygen-passphrase-{kind}", "keygen", "-o", "k.pem", "--passphrase-file",
            str(p[kind]), plain=kind == "random")  # fmt: skip
    for kind in ("random",):
        add(f"attest-public-key-{kind}", "attest", "-o", "e", "--tee", "sim", "--bundle",
            bundle, "--nonce", HEX64, "--public-key", str(p[kind]), home="home-good")  # fmt: skip
    for kind in ("fifo",):
        add(f"attest-local-target-{kind}", "attest", "-o", "l", "--tee", "sim", "--local",
            "--target", str(p[kind]), "--report-data", "00", home="home-good")  # fmt: skip
    # Hostile arguments rather than files.
    add("verify-bundle-huge-signer", "verify-bundle", bundle, "--signer", HUGE_HEX_ARG)
    add("attest-huge-report-data", "attest", "-o", "e", "--tee", "sim", "--report-data",
        HUGE_HEX_ARG, home="home-good")  # fmt: skip
    add("attest-huge-local-target", "attest", "-o", "l", "--tee", "sim", "--local", "--target",
        HUGE_HEX_ARG, "--report-data", "00", home="home-good", plain=True)  # fmt: skip
    add("verify-local-huge-target", "verify-local", rnd, "--target", HUGE_HEX_ARG,
        "--allow-simulation", home="home-good")  # fmt: skip
    add("verify-huge-at", "verify", rnd, "--at", HUGE_HEX_ARG)
    add("attest-renamed-tee", "attest", "-o", "e", "--tee", "gramine", "--report-data", "00",
        plain=True)  # fmt: skip
    add("attest-emulate-markup", "attest", "-o", "e", "--tee", "sim", "--emulate", "[/x]",
        "--report-data", "00", verbatim="[/x]")  # fmt: skip
    add("attest-nonhex-nonce", "attest", "-o", "e", "--tee", "sim", "--bundle", bundle,
        "--nonce", "zz\u00e9", home="home-good")  # fmt: skip
    # Markup-looking arguments and file contents: quoted verbatim, never parsed.
    markup_commands = (("inspect",), ("verify-bundle",), ("verify",), ("keygen", "-o"))
    for i, arg in enumerate(MARKUP_ARGS):  # each argument meets another command's reader
        cmd = markup_commands[i % len(markup_commands)]
        add(f"{cmd[0]}-markup-{i}", *cmd, f"{arg}/out", verbatim=arg)
    add("build-spec-markup-keys", "build", "--spec", str(p["markup.toml"]), "--key", key, "-o",
        "o", verbatim="[red]k :smile:")  # fmt: skip
    add("verify-policy-markup-keys", "verify", rnd, "--policy", str(p["markup.toml"]),
        verbatim="[/x]")  # fmt: skip
    add("volume-info-markup", "volume", "info", str(p["missing"]), "--key-file", "[/x] :smile:",
        verbatim="[/x] :smile:")  # fmt: skip
    # Outputs that cannot be written.
    add("keygen-output-dir", "keygen", "-o", str(p["dir"]))
    add("keygen-output-under-file", "keygen", "-o", f"{rnd}/k.pem")
    add("init-over-file", "init", rnd)
    add("build-output-under-file", "build", "--spec", spec, "--key", key, "-o", f"{rnd}/b")
    add("attest-output-dir", "attest", "-o", str(p["dir"]), "--tee", "sim", "--report-data",
        "00", home="home-good")  # fmt: skip
    add("sim-export-to-file", "sim", "export", rnd, home="home-good")
    # The simulated platform: absent, misused, or with one corrupt state file.
    add("sim-show-absent", "sim", "show", plain=True)
    add("sim-set-tcb-garbage", "sim", "set-tcb", "\u00e9\x01Garbage", home="home-good")
    add("sim-init-both-flags", "sim", "init", "--force", "--exist-ok")
    for home, args in CORRUPT_HOMES.items():
        add(f"{args[0]}-{home.removeprefix('home-')}", *args, home=home,
            plain=home.endswith("vcek.pem-dir"))  # fmt: skip
    # tee detect shrugs off hostile roots: it reports the backends as unavailable.
    for kind in ("fifo",):
        add(f"tee-detect-{kind}", "tee", "detect", "--gramine-root", str(p[kind]),
            "--tsm-root", str(p[kind]), expect_ok=True)  # fmt: skip
    # SGX/Gramine and RA-TLS (issue 15).
    for kind in ("missing", "dir", "random", "nonutf8", "fifo", "oversized"):
        add(f"ratls-inspect-{kind}", "ratls", "inspect", str(p[kind]), plain=kind == "random")
    for kind in ("missing", "dir", "random", "fifo", "oversized"):
        add(f"gramine-sigstruct-{kind}", "gramine", "sigstruct", str(p[kind]))
    for kind in ("bad.toml", "nonutf8", "fifo", "random"):
        add(f"gramine-check-{kind}", "gramine", "check", str(p[kind]), plain=kind == "bad.toml")
    add("gramine-manifest-garbage", "gramine", "manifest", str(bundles["manifest-garbage"]),
        "-o", "g")  # fmt: skip
    add("gramine-manifest-huge-signer", "gramine", "manifest", bundle, "--signer", HUGE_HEX_ARG)
    add("gramine-sign-key-fifo", "gramine", "sign", str(p["dir"]), "--key", str(p["fifo"]))
    add("ratls-cert-no-platform", "ratls", "cert", "--tee", "sim", "-o", "t", plain=True)
    add("ratls-cert-output-under-file", "ratls", "cert", "--tee", "sim", "-o", f"{rnd}/t",
        home="home-good")  # fmt: skip
    add("ratls-verify-huge-address", "ratls", "verify", HUGE_HEX_ARG)
    add("ratls-verify-policy-bad", "ratls", "verify", "127.0.0.1:1", "--policy",
        str(p["bad.toml"]))  # fmt: skip
    return cases


# --- running -------------------------------------------------------------------------------------
def _run(args: tuple[str, ...], *, cwd: Path, home: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if k != "SEALPOD_KEY_PASSPHRASE"}
    env["SEALPOD_HOME"] = str(home)
    return run_script(args, cwd=cwd, env=env, timeout=CASE_TIMEOUT_SECS)


@dataclass(frozen=True, slots=True)
class World:
    cases: dict[str, Case]
    json: dict[str, Outcome]
    plain: dict[str, Outcome]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    if not SEALPOD.is_file():
        pytest.skip(f"the sealpod script is not installed next to {sys.executable}")
    work = tmp_path_factory.mktemp("hostile-cli")
    paths = _make_inputs(work)
    template = work / "template"
    SimPlatform.init(template)
    homes = _sim_homes(work, template)
    setup = (
        ("keygen", "-o", "k.pem"),
        ("init", "pod"),
        ("build", "--spec", "pod/sealpod.toml", "--key", "k.pem", "-o", "bundle"),
    )
    for args in setup:
        made = _run(args, cwd=work, home=homes["home-empty"])
        assert made.returncode == 0, (args, made.stderr)
    good_bundle = work / "bundle"
    cases = {c.name: c for c in _cases(paths, _bundle_variants(work, good_bundle), good_bundle)}
    jobs = [(n, True) for n in cases] + [(n, False) for n, c in cases.items() if c.plain]

    def one(job: tuple[str, bool]) -> Outcome:
        name, json_mode = job
        case = cases[name]
        scratch = work / "runs" / f"{name}{'-json' if json_mode else ''}"  # outputs never collide
        scratch.mkdir(parents=True)
        args = (*case.args, "--json") if json_mode else case.args
        return _run(args, cwd=scratch, home=homes[case.home])

    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = dict(zip(jobs, pool.map(one, jobs), strict=True))
    return World(
        cases=cases,
        json={n: o for (n, j), o in outcomes.items() if j},
        plain={n: o for (n, j), o in outcomes.items() if not j},
    )


def _placeholder_cases() -> list[Case]:
    """The cases built on placeholder paths: their names and flags, known at collection."""
    fake = {k: Path("/x") / k for k in (*HOSTILE, *HUGE)}
    return _cases(fake, dict.fromkeys(BUNDLE_VARIANTS, Path("/x")), Path("/x/bundle"))


CASES = _placeholder_cases()


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_hostile_input_json_names_the_error(world: World, name: str) -> None:
    case = world.cases[name]
    outcome = world.json[name]
    assert TRACEBACK not in outcome.stderr, outcome.stderr
    if case.expect_ok:
        assert outcome.returncode == 0, outcome.stderr
        doc = json.loads(outcome.stdout)
        assert doc["ok"] is True
        assert all(b["available"] is False for b in doc["backends"] if b["name"] != "sim")
        return
    assert outcome.returncode in FAMILY_EXIT_CODES, (outcome.returncode, outcome.stderr[-600:])
    doc = json.loads(outcome.stdout)
    assert isinstance(doc, dict), doc
    error = doc["error"]
    assert isinstance(error["code"], str) and error["code"], doc
    assert isinstance(error["message"], str) and error["message"], doc
    assert doc.get("ok", doc.get("verified")) is False, doc
    assert len(error["message"]) < 2000, "a hostile argument must not be echoed whole"


@pytest.mark.parametrize("name", [c.name for c in CASES if c.plain])
def test_hostile_input_plain_says_why_on_stderr(world: World, name: str) -> None:
    outcome = world.plain[name]
    assert TRACEBACK not in outcome.stderr, outcome.stderr
    assert outcome.returncode in FAMILY_EXIT_CODES, (outcome.returncode, outcome.stderr[-600:])
    assert outcome.stderr.strip(), "a refusal must say why on stderr"
    assert "internal error" not in outcome.stderr
    case = world.cases[name]
    assert case.verbatim in outcome.stderr, f"{case.verbatim!r} not quoted: {outcome.stderr!r}"


def test_every_case_name_is_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert set(CORRUPT_HOMES) <= {c.home for c in CASES}
