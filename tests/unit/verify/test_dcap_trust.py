"""Trust anchors: pinned fingerprints, simulated roots kept apart from vendor roots."""

from __future__ import annotations

import hashlib

import pytest

from sealpod.errors import ConfigError
from sealpod.verify.trust import (
    AMD_ARK_GENOA_SHA256,
    AMD_ARK_MILAN_SHA256,
    AMD_ARK_TURIN_SHA256,
    DEFAULT_TRUST,
    INTEL_SGX_ROOT_CA_SHA256,
    TrustAnchors,
    fingerprint,
)


def test_default_trust_pins_intel_root_and_three_amd_arks() -> None:
    assert DEFAULT_TRUST.intel_roots == {INTEL_SGX_ROOT_CA_SHA256}
    assert DEFAULT_TRUST.amd_arks == {
        AMD_ARK_MILAN_SHA256,
        AMD_ARK_GENOA_SHA256,
        AMD_ARK_TURIN_SHA256,
    }
    assert DEFAULT_TRUST.sim_roots == frozenset()
    assert INTEL_SGX_ROOT_CA_SHA256.hex().startswith("44a0196b2b99f889")


def test_fingerprint_is_sha256_of_der() -> None:
    assert fingerprint(b"abc") == hashlib.sha256(b"abc").digest()


def test_with_sim_roots_adds_and_classifies() -> None:
    sim = hashlib.sha256(b"sim root").digest()
    trust = DEFAULT_TRUST.with_sim_roots(sim)
    assert trust.is_sim_root(sim)
    assert not trust.is_intel_root(sim)
    assert trust.is_intel_root(INTEL_SGX_ROOT_CA_SHA256)
    assert trust.is_amd_ark(AMD_ARK_TURIN_SHA256)
    assert DEFAULT_TRUST.sim_roots == frozenset()  # the original is unchanged


def test_sim_root_may_not_be_a_vendor_root() -> None:
    with pytest.raises(ConfigError, match="simulated root may not also be a vendor root"):
        TrustAnchors(
            intel_roots=frozenset({INTEL_SGX_ROOT_CA_SHA256}),
            amd_arks=frozenset(),
            sim_roots=frozenset({INTEL_SGX_ROOT_CA_SHA256}),
        )


def test_fingerprint_must_be_32_bytes() -> None:
    with pytest.raises(ConfigError, match="32-byte SHA-256"):
        TrustAnchors(intel_roots=frozenset({b"short"}), amd_arks=frozenset())
