"""Shared vocabulary of the Kubernetes manifests sealpod writes (pure: no I/O).

Manifests are plain dicts in the shape of the Kubernetes API (``apiVersion``, ``kind``,
``metadata``, ``spec``), so tests validate them against the API's published schemas
(``kubernetes-validate --strict``) and :func:`dump_yaml` prints them. Every name and image
reference a user gives is checked here, with a :class:`ConfigError` saying what was expected,
before it reaches a manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from sealpod import __version__
from sealpod.errors import ConfigError

Manifest = dict[str, Any]

#: RFC 1123 label, as Kubernetes requires for Service, Deployment and namespace names.
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: An image reference: [registry[:port]/]path[:tag][@sha256:hex] (the distribution grammar,
#: lower-case path components); no whitespace or shell characters can pass.
_IMAGE_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[0-9a-f]{64})?"
)
_QUANTITY_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:m|Ki|Mi|Gi|Ti|k|M|G|T)?")
_URL_RE = re.compile(r"https?://[^\s/?#@]+(/[^\s]*)?")
_HEX256_RE = re.compile(r"[0-9a-f]{64}")

MANAGED_BY = {"app.kubernetes.io/managed-by": "sealpod"}


def check_name(value: str, what: str) -> str:
    """``value`` if it is a valid Kubernetes object name (an RFC 1123 label).

    Raises:
        ConfigError: naming ``what`` and the rule.
    """
    if not _DNS_LABEL_RE.fullmatch(value):
        raise ConfigError(
            f"{what} is {value[:80]!r}, expected 1-63 lower-case letters, digits or '-',"
            " starting and ending with a letter or digit"
        )
    return value


def check_image(value: str) -> str:
    """``value`` if it is an image reference such as ``registry.example/app:1.2@sha256:...``.

    Raises:
        ConfigError: not an image reference.
    """
    if len(value) > 512 or not _IMAGE_RE.fullmatch(value):
        raise ConfigError(
            f"image is {value[:80]!r}, expected a reference such as"
            " registry.example/app:1.0 or registry.example/app@sha256:<64 hex>"
        )
    return value


def check_quantity(value: str, what: str) -> str:
    """``value`` if it is a Kubernetes resource quantity (``250m``, ``512Mi``, ``10Gi``).

    Raises:
        ConfigError: not a quantity.
    """
    if not _QUANTITY_RE.fullmatch(value):
        raise ConfigError(f"{what} is {value[:40]!r}, expected a quantity such as 512Mi or 250m")
    return value


def check_url(value: str, what: str) -> str:
    """``value`` if it is an ``http(s)://`` URL without credentials or spaces.

    Raises:
        ConfigError: anything else.
    """
    if not _URL_RE.fullmatch(value):
        raise ConfigError(f"{what} is {value[:80]!r}, expected an https:// URL")
    return value


def check_fingerprint(value: str, what: str) -> str:
    """``value`` in lower case if it is 64 hex digits (a SHA-256 fingerprint).

    Raises:
        ConfigError: anything else.
    """
    lowered = value.lower()
    if not _HEX256_RE.fullmatch(lowered):
        raise ConfigError(f"{what} is {value[:80]!r}, expected 64 hex digits (SHA-256)")
    return lowered


def mebibytes(size_bytes: int) -> str:
    """A quantity in ``Mi`` for ``size_bytes``, rounded up."""
    return f"{max(1, -(-size_bytes // 2**20))}Mi"


def labels(name: str, component: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels of every object sealpod writes."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "sealpod",
        "app.kubernetes.io/version": __version__,
        **MANAGED_BY,
    }


def selector(name: str, component: str) -> dict[str, str]:
    """The labels a workload selects its pods by (a subset that never changes on upgrade)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}


def metadata(
    name: str,
    namespace: str | None,
    object_labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``metadata`` with the namespace only when one is given (Kustomize sets it otherwise)."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = dict(object_labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


class _Dumper(yaml.SafeDumper):
    """Never writes anchors and aliases: each manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(docs: Iterable[Manifest]) -> str:
    """The manifests as one multi-document YAML stream, in the order given.

    Keys keep their insertion order (``apiVersion``, ``kind``, ``metadata`` first), so the
    output reads like hand-written manifests and is byte-for-byte stable.
    """
    parts = [
        yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
        for doc in docs
    ]
    return "".join(f"---\n{part}" for part in parts)
