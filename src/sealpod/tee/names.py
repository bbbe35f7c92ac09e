"""The project's one vocabulary of TEE names (``--tee``, ``--emulate``), importable cheaply.

``--tee auto|sim|sgx|snp|tdx`` means the same on every command; see :mod:`sealpod.tee.select`
for what each opens.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["RENAMED", "EmulatedTee", "TeeName"]


class TeeName(StrEnum):
    """``--tee``: the TEE to use (attest, fetch) or expect (verify)."""

    AUTO = "auto"
    SIM = "sim"
    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"


class EmulatedTee(StrEnum):
    """``--emulate``: the hardware format the simulated TEE imitates."""

    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"


#: Names earlier versions took, and what replaced them (said in the refusal).
RENAMED = {
    "gramine": "--tee sgx (SGX through Gramine's /dev/attestation)",
    "tsm": "--tee tdx or --tee snp (configfs-tsm), or --tee auto",
}
