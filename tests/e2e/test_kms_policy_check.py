"""``sealpod kms policy check FILE [--evidence EV]``: offline, before any `policy put`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_process import quick_start, sealpod

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("policy-check")
    env = {"SEALPOD_HOME": str(work / "home")}
    assert sealpod("sim", "init", cwd=work, env=env).returncode == 0
    quick_start(work, pod="pod", bundle="bundle")
    made = sealpod("attest", "--tee", "sim", "--bundle", "bundle", "--report-data", "00", "-o",
                   "ev.json", cwd=work, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return work, env


def _policy(work: Path, name: str, text: str) -> Path:
    path = work / name
    path.write_text(text)
    return path


def _measurement(work: Path, env: dict[str, str]) -> str:
    got = sealpod("inspect", "bundle", "--json", cwd=work, env=env)
    return str(json.loads(got.stdout)["measurement"])


def test_a_valid_policy_and_matching_evidence(work: tuple[Path, dict[str, str]]) -> None:
    root, env = work
    m = _measurement(root, env)
    p = _policy(root, "ok.toml", f'allow_simulation = true\nmeasurements = ["{m}"]\n'
                '[release]\nsecrets = ["db-password"]\n')  # fmt: skip
    got = sealpod("kms", "policy", "check", p, cwd=root, env=env)
    assert got.returncode == 0 and "valid; releases db-password" in got.stdout
    got = sealpod("kms", "policy", "check", p, "--evidence", "ev.json", "--json", cwd=root, env=env)
    doc = json.loads(got.stdout)
    assert got.returncode == 0 and doc["matched"] and doc["would_release"] == ["db-password"]


def test_evidence_that_would_get_nothing_says_why(work: tuple[Path, dict[str, str]]) -> None:
    root, env = work
    p = _policy(root, "other.toml", f'measurements = ["{"ab" * 32}"]\n'
                '[release]\nsecrets = ["db-password"]\n')  # fmt: skip
    got = sealpod("kms", "policy", "check", p, "--evidence", "ev.json", cwd=root, env=env)
    assert got.returncode == 13
    assert "would receive nothing" in got.stdout
    assert "simulation_not_allowed" in got.stdout and "measurement" in got.stdout


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('measurementz = ["00"]\n[release]\nsecrets = ["a"]\n', "did you mean 'measurements'?"),
        ('[relase]\nsecrets = ["a"]\n', "[relase] looks like a typo of [release]"),
        ("allow_simulation = true\n", "has no [release] table"),
    ],
)
def test_a_bad_policy_names_the_problem_offline(
    work: tuple[Path, dict[str, str]], text: str, says: str
) -> None:
    root, env = work
    p = _policy(root, "bad.toml", text)
    got = sealpod("kms", "policy", "check", p, cwd=root, env=env)  # no KMS is asked
    assert got.returncode == 13 and says in got.stderr, got.stderr
