"""Constants and small helpers shared by the KMS tests (a plain module, no fixtures)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

MEAS_A = hashlib.sha256(b"workload A").digest()
MEAS_B = hashlib.sha256(b"workload B").digest()
SIGNER = hashlib.sha256(b"author key").digest()
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET_VALUES = {
    "db-password": b"correct horse battery staple 7f3a",
    "api-key": b"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "other": b"not for workload A 91c2",
}


def policy_toml(
    *,
    measurements: list[bytes] | None = None,
    secrets: list[str] | None = None,
    allow_simulation: bool = True,
    ttl: int = 60,
    extra: str = "",
) -> str:
    meas = measurements if measurements is not None else [MEAS_A]
    names = secrets if secrets is not None else ["db-password", "api-key"]
    return (
        f"allow_simulation = {'true' if allow_simulation else 'false'}\n"
        f"measurements = {json.dumps([m.hex() for m in meas])}\n"
        f"{extra}\n"
        "[release]\n"
        f"secrets = {json.dumps(names)}\n"
        f"token_ttl_secs = {ttl}\n"
    )


class FakeClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += timedelta(seconds=secs)
