"""Prometheus metrics of one KMS app (its own registry, so several apps can live in one
process, as in tests). Labels never carry secret names' values, tokens or client data beyond
the route template."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
            "sealpod_kms_sealed", "1 while the KMS is sealed, else 0.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
