"""Fake TEE interfaces backed by the simulated platform, and a fast way to get a platform.

* :func:`sim_tsm_producer` — the "kernel" of :class:`~sealpod.testing.fake_tsm.FakeTsm`: TDX
  quotes for ``tdx_guest``, SNP reports plus a GHCB certificate table (VCEK, ASK, ARK) for
  ``sev_guest``;
* :func:`sim_gramine` — a :class:`~sealpod.testing.fake_gramine.FakeGramine` whose quotes and
  local reports come from the simulated SGX platform;
* :func:`clone_platform` — copy an initialised platform into another sealpod home (making one
  costs two RSA-4096 key generations; test suites make it once and clone it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sealpod.tee.local import SimLocalAttester
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.tee.sim_platform import state_dir_for
from sealpod.tee.snp_certs import build_cert_table
from sealpod.testing.fake_gramine import FakeGramine
from sealpod.testing.fake_tsm import Producer


def sim_tsm_producer(platform: SimPlatform, identity: SimIdentity, provider: str) -> Producer:
    """``producer(inblob, privlevel) -> (outblob, auxblob)`` for a fake configfs-tsm."""
    if provider == "tdx_guest":

        def tdx(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
            return platform.tdx_quote(identity, inblob), b""

        return tdx
    if provider == "sev_guest":
        table = build_cert_table(
            {
                "vcek": platform.vcek_der(),
                "ask": platform.cert_der("ask"),
                "ark": platform.cert_der("ark"),
            }
        )

        def snp(inblob: bytes, privlevel: int) -> tuple[bytes, bytes]:
            return platform.snp_report(identity, inblob, vmpl=privlevel), table

        return snp
    raise ValueError(f"no simulated producer for provider {provider!r}")


def sim_gramine(
    platform: SimPlatform, identity: SimIdentity, root: Path, *, attestation_type: str = "dcap"
) -> FakeGramine:
    """A fake ``/dev/attestation`` at ``root`` for an enclave with ``identity``."""
    local = SimLocalAttester(platform, identity)
    return FakeGramine(
        root,
        quote=lambda report_data: platform.sgx_quote(identity, report_data),
        report=local.report,
        my_target_info=local.my_target_info(),
        attestation_type=attestation_type,
    )


def clone_platform(source_home: Path, target_home: Path) -> SimPlatform:
    """Copy the simulated platform of ``source_home`` into ``target_home`` (modes kept)."""
    target = state_dir_for(target_home)
    if target.exists():
        shutil.rmtree(target)
    target_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copytree(state_dir_for(source_home), target)
    return SimPlatform.load(target_home)
