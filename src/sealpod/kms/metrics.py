"""Prometheus metrics of one KMS app (its own registry, so several apps can live in one
process, as in tests). Labels never carry secret names' values, tokens or client data beyond
the route template.

Under ``sealpod kms serve --workers N`` a scrape reaches whichever worker accepts it, so the
supervisor turns on prometheus_client's multiprocess mode before it forks (:func:`share_across`):
each worker's values live in files under one directory and every worker's ``/metrics`` shows
the sum over all of them (the ``sealed`` gauge: 1 if any live worker is sealed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def shared_dir() -> str | None:
    """The multiprocess directory when values are being written there, else None."""
    path = os.environ.get(_MULTIPROC_ENV)
    return path if path and values.ValueClass is not values.MutexValue else None


@contextmanager
def share_across(processes: str = "workers") -> Iterator[str]:
    """Multiprocess mode for metrics created from here on (in this process and its forks),
    in a fresh private directory that is removed afterwards."""
    previous = os.environ.get(_MULTIPROC_ENV), values.ValueClass
    path = tempfile.mkdtemp(prefix=f"sealpod-metrics-{processes}-")
    os.environ[_MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        yield path
    finally:
        values.ValueClass = previous[1]
        if previous[0] is None:
            os.environ.pop(_MULTIPROC_ENV, None)
        else:
            os.environ[_MULTIPROC_ENV] = previous[0]
        shutil.rmtree(path, ignore_errors=True)


def process_exited(pid: int) -> None:
    """Drop a dead worker's live-only values (its counters stay in the sums)."""
    path = shared_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class KmsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "sealpod_kms_request_seconds",
            "HTTP request latency by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.attestations = Counter(
            "sealpod_kms_attestations_total",
            "Attestation attempts by outcome (accepted, refused, malformed, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.releases = Counter(
            "sealpod_kms_releases_total",
            "Secret fetches by outcome (ok, refused, unauthenticated).",
            ["outcome"],
            registry=self.registry,
        )
        self.admin = Counter(
            "sealpod_kms_admin_operations_total",
            "Admin API operations by operation and outcome.",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "sealpod_kms_rate_limited_total",
            "Requests refused with 429 by the per-client rate limiter.",
            registry=self.registry,
        )
        self.sealed = Gauge(
            "sealpod_kms_sealed",
            "1 while the KMS (any live worker) is sealed, else 0.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def render(self) -> bytes:
        path = shared_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
