"""Sealpod: confidential compute containers.

Build a container image into a measured, signed bundle; prove by remote attestation that exactly
that bundle runs in a genuine TEE; release secrets only to it; keep its volumes encrypted.
"""

__version__ = "0.1.0"
