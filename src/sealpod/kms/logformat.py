"""The KMS's one log format: logfmt lines by default, JSON lines with ``--log-format json``.

Every record, sealpod's and uvicorn's (its server and access logs included), goes through the
same handler, so a log shipper parses one format. A message already written as ``key=value``
pairs (``event=start url=... workers=2``) becomes fields; any other message is the ``msg``
field. uvicorn's access lines become ``client``, ``method``, ``path``, ``http`` and ``status``
fields. Nothing here adds data to a record: what reaches the log is what the code logged (never
a secret value; tests/service/test_kms_ops.py checks).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["LogFormat", "configure_logging", "record_fields"]

#: The loggers whose records the KMS writes.
LOGGERS = ("sealpod", "uvicorn", "uvicorn.error", "uvicorn.access")


class LogFormat(StrEnum):
    """``--log-format``."""

    LOGFMT = "logfmt"
    JSON = "json"


def _pairs(message: str) -> dict[str, str] | None:
    """``message`` as key=value fields, or None when it is prose."""
    try:
        tokens = shlex.split(message)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key.isidentifier():
            return None
        fields[key] = value
    return fields or None


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields of one record, in a stable order: ts, level, logger, then the message's.

    Raises:
        Nothing: a record whose message cannot be formatted keeps its raw template.
    """
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, http, status = record.args
        fields |= {"client": client, "method": method, "path": path, "http": http,
                   "status": status}  # fmt: skip
        return fields
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = str(record.msg)
    pairs = _pairs(message)
    if pairs is None:
        fields["msg"] = message
    else:
        fields |= {k: v for k, v in pairs.items() if k not in fields}
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc_type"] = record.exc_info[0].__name__  # the type only: no traceback text
    return fields


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-._:/@+[]{}," for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class _Formatter(logging.Formatter):
    def __init__(self, fmt: LogFormat) -> None:
        super().__init__()
        self.fmt = fmt

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        if self.fmt is LogFormat.JSON:
            return json.dumps(fields, ensure_ascii=False, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def configure_logging(level: str, fmt: LogFormat = LogFormat.LOGFMT) -> None:
    """Send sealpod's and uvicorn's records to stderr in ``fmt`` at ``level`` and above.

    Raises:
        ValueError: an unknown level name.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler] if name in ("sealpod", "uvicorn") else []
        logger.setLevel(level.upper())
        logger.propagate = name not in ("sealpod", "uvicorn")  # children reach the handler once
