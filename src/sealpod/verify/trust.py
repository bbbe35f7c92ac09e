"""Trust anchors: the vendor root certificates that evidence must chain to, pinned by fingerprint.

A root is identified by the SHA-256 of its certificate's DER encoding. The certificates
themselves arrive with the evidence and its collateral (every Intel PCK chain and TCB signing
chain ends with the root; AMD's ASK/ARK chain ends with the ARK); the verifier recomputes the
fingerprint of the root it was given and looks it up here. So no certificate is committed to the
repository, and a root is trusted only if its exact bytes are the ones pinned below.

Simulated platforms (``sealpod.tee.sim``) make their own root; its fingerprint goes in
``sim_roots``. Evidence that chains to a simulated root verifies, but its claims say
``tee = SIM`` so that policy can refuse it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sealpod.errors import ConfigError

FINGERPRINT_SIZE = 32

# Intel SGX Root CA (CN=Intel SGX Root CA, serial 22650cd6..., valid 2018-05-21 .. 2049-12-31).
# It signs the PCK Platform/Processor CAs, the TCB Signing certificate and the root CA CRL.
INTEL_SGX_ROOT_CA_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
# AMD SEV-SNP root keys (ARK), one per product line; each signs its ASK (VCEK issuer) and ASVK
# (VLEK issuer). Fingerprints of the ARK certificates served by AMD KDS
# (https://kdsintf.amd.com/vcek/v1/{Milan,Genoa,Turin}/cert_chain).
AMD_ARK_MILAN_SHA256 = bytes.fromhex(
    "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
)
AMD_ARK_GENOA_SHA256 = bytes.fromhex(
    "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
)
AMD_ARK_TURIN_SHA256 = bytes.fromhex(
    "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
)


def fingerprint(der: bytes) -> bytes:
    """SHA-256 of a certificate's DER encoding: the key of every trust decision here."""
    return hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustAnchors:
    """Root fingerprints a verifier accepts.

    ``intel_roots`` anchor SGX/TDX DCAP quotes, ``amd_arks`` anchor SEV-SNP reports and
    ``sim_roots`` anchor simulated evidence of either kind (claims then say ``tee = SIM``).
    A fingerprint may not be both a vendor root and a simulated one.
    """

    intel_roots: frozenset[bytes]
    amd_arks: frozenset[bytes]
    sim_roots: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        for name in ("intel_roots", "amd_arks", "sim_roots"):
            for fp in getattr(self, name):
                if not isinstance(fp, bytes) or len(fp) != FINGERPRINT_SIZE:
                    raise ConfigError(
                        f"trust anchors: {name} entry is not a {FINGERPRINT_SIZE}-byte SHA-256 "
                        "fingerprint"
                    )
        overlap = self.sim_roots & (self.intel_roots | self.amd_arks)
        if overlap:
            raise ConfigError(
                "trust anchors: a simulated root may not also be a vendor root: "
                + ", ".join(sorted(fp.hex() for fp in overlap))
            )

    def with_sim_roots(self, *roots: bytes) -> TrustAnchors:
        """A copy that also trusts the given simulated root fingerprints."""
        return TrustAnchors(
            intel_roots=self.intel_roots,
            amd_arks=self.amd_arks,
            sim_roots=self.sim_roots | frozenset(roots),
        )

    def is_intel_root(self, fp: bytes) -> bool:
        return fp in self.intel_roots

    def is_amd_ark(self, fp: bytes) -> bool:
        return fp in self.amd_arks

    def is_sim_root(self, fp: bytes) -> bool:
        return fp in self.sim_roots


DEFAULT_TRUST = TrustAnchors(
    intel_roots=frozenset({INTEL_SGX_ROOT_CA_SHA256}),
    amd_arks=frozenset({AMD_ARK_MILAN_SHA256, AMD_ARK_GENOA_SHA256, AMD_ARK_TURIN_SHA256}),
)
"""Production anchors: Intel's SGX Root CA and AMD's Milan, Genoa and Turin ARKs."""
