"""`sealpod catalog` as a user types it: listing, showing, and the refusals (no rootfs built)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealpod.cli.main import app
from sealpod.spec.model import parse_spec


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_list_names_every_entry_and_json_is_machine_readable() -> None:
    code, out = invoke("catalog", "list", "--json")
    assert code == 0
    names = [e["name"] for e in json.loads(out)]
    assert names == ["redis", "mariadb", "postgresql", "nginx", "mosquitto", "python"]
    code, out = invoke("catalog", "list")
    assert code == 0 and all(name in out for name in names)


def test_show_reports_secrets_volumes_ports_parameters_and_a_valid_spec() -> None:
    code, out = invoke("catalog", "show", "postgresql", "--json", "--set", "port=25432")
    assert code == 0
    info = json.loads(out)
    assert info["ports"] == [{"what": "postgresql", "port": 25432, "address": "127.0.0.1"}]
    assert info["volumes"] == [{"name": "postgresql", "path": "/var/lib/postgresql",
                                "key_secret": "volume.postgresql"}]  # fmt: skip
    assert info["released_secrets"] == ["postgresql-password", "postgresql-tls",
                                        "volume.postgresql"]  # fmt: skip
    assert {p["name"] for p in info["parameters"]} >= {"port", "name", "dns", "memory"}
    parse_spec(tomllib.loads(info["spec"]))
    code, text = invoke("catalog", "show", "postgresql")
    assert code == 0 and "sealpod kms secret put postgresql-password --generate password" in text
    assert "allow_simulation = true" in text and "demo only" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["catalog", "show", "oracle"], "no entry 'oracle'"),
        (["catalog", "show", "redis", "--set", "port=6379"], "machine's own services"),
        (["catalog", "show", "redis", "--set", "bogus=1"], "no parameter 'bogus'"),
        (["catalog", "show", "redis", "--set", "name=[red]x"], "expected 1-32"),
    ],
)
def test_bad_input_is_a_config_error_with_exit_2(args: list[str], needle: str) -> None:
    code, out = invoke(*args)
    assert code == 2, out
    assert needle in out and "Traceback" not in out


def test_bad_input_in_json_mode_is_a_json_error() -> None:
    code, out = invoke("catalog", "show", "redis", "--set", "port=1", "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "config"


def test_build_refuses_a_non_empty_output_directory_before_building(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, text = invoke("catalog", "build", "redis", "-o", str(out),
                        "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert code == 2 and "not an empty directory" in text
    assert (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "cache").exists()


def test_build_from_a_hostile_archive_is_refused_as_an_archive_error(tmp_path: Path) -> None:
    bad = tmp_path / "image.tar"
    bad.write_bytes(b"not a tar at all" * 64)
    code, text = invoke("catalog", "build", "redis", "-o", str(tmp_path / "o"),
                        "--image", str(bad))  # fmt: skip
    assert code == 4, text
    assert "Traceback" not in text
    assert not (tmp_path / "o").exists()  # nothing half-written left behind
