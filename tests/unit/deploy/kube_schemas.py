"""Validating manifests as the issue asks: ``kubernetes-validate`` (offline JSON schemas of the
Kubernetes API), strict (unknown fields are errors), for 1.30 and the newest version the
installed package bundles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kubernetes_validate

OLDEST = "1.30.0"
NEWEST = str(kubernetes_validate.latest_version())
VERSIONS = (OLDEST, NEWEST)


def validate_all(docs: Iterable[dict[str, Any]]) -> int:
    """Validate every manifest against every version in :data:`VERSIONS`; return how many."""
    count = 0
    for doc in docs:
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        count += 1
    return count
