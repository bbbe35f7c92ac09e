"""The KMS writes one log format, uvicorn's records included (issue 16, item 6)."""

from __future__ import annotations

import json
import logging

import pytest

from sealpod.kms.logformat import LogFormat, configure_logging


@pytest.fixture(autouse=True)
def _restore_loggers() -> object:
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate,
                 logging.getLogger(n).level)
             for n in ("sealpod", "uvicorn", "uvicorn.error", "uvicorn.access")}  # fmt: skip
    yield None
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate = handlers, propagate
        logger.setLevel(level)


def _emit() -> None:
    logging.getLogger("sealpod.kms").info("event=start url=%s workers=%d", "https://x:1", 2)
    logging.getLogger("sealpod.kms.app").error("internal error: %s", "KeyError")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200
    )


def test_logfmt_by_default_for_sealpod_and_uvicorn(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    _emit()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("ts=") and " level=" in line for line in lines)
    assert "logger=sealpod.kms event=start url=https://x:1 workers=2" in lines[0]
    assert 'msg="internal error: KeyError"' in lines[1]
    assert 'logger=uvicorn.error msg="Started server process [42]"' in lines[2]
    assert "method=GET path=/healthz http=1.1 status=200" in lines[3]


def test_json_lines_with_the_same_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", LogFormat.JSON)
    _emit()
    docs = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert [d["logger"] for d in docs] == [
        "sealpod.kms", "sealpod.kms.app", "uvicorn.error", "uvicorn.access"
    ]  # fmt: skip
    assert docs[0]["event"] == "start" and docs[0]["workers"] == "2"
    assert docs[3]["status"] == 200 and docs[3]["path"] == "/healthz"
    assert all(d["level"] in ("info", "error") and d["ts"].endswith("+00:00") for d in docs)
