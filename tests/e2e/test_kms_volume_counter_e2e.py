"""A volume whose version counter is held by a real `sealpod kms serve`, as a runtime uses it:
the key put with `sealpod kms secret put volume.NAME --generate bytes:32` (or generated at the
first release), the counter moved by every commit through the workload's attested session, and
an older copy of the volume directory put back by the host refused with RollbackDetected
(exit 15) — after a restart too, with a new attestation.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from test_kms_e2e import Logs, cli, sp, start_server, stop_server

from sealpod.errors import RollbackDetected
from sealpod.kms.client import KmsClient
from sealpod.kms.freshness import KmsVolumeFreshness
from sealpod.tee.sim import SimBackend, SimIdentity, SimPlatform
from sealpod.volume import MemoryFreshness, create_volume, open_volume

IDENTITY = SimIdentity(
    measurement=hashlib.sha256(b"volume counter test").digest(),
    signer=hashlib.sha256(b"volume counter author").digest(),
    product_id=1,
    svn=1,
)


@pytest.mark.slow
def test_a_restored_volume_copy_is_refused_by_the_kms_counter(
    _isolated_home: Path, tmp_path: Path
) -> None:
    logs = Logs()
    sp("kms", "init")
    log = tmp_path / "serve.log"
    logs.files.append(log)
    srv = start_server(_isolated_home, log, "--trust-sim", "--no-pcs")
    try:
        # The CLI takes the dotted name of a volume key.
        out = cli("kms", "secret", "put", "volume.data", "--generate", "bytes:32")
        assert "volume.data" in out
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'allow_simulation = true\nmeasurements = ["{IDENTITY.measurement.hex()}"]\n'
            '[release]\nsecrets = ["volume.data", "volume.logs"]\n'
            "generate_volume_keys = true\n"
        )
        cli("kms", "policy", "put", "vols", str(policy))
        backend = SimBackend(SimPlatform.load(_isolated_home), IDENTITY, "sgx")
        names = ["volume.data", "volume.logs"]
        vdir = tmp_path / "volumes" / "data"

        with KmsClient(srv.url, verify=srv.ca or True) as kms:
            session, keys = kms.attest_and_fetch(backend, IDENTITY.measurement, names)
            assert len(keys["volume.logs"].value) == 32  # generated at this first release
            key = keys["volume.data"].value
            store = KmsVolumeFreshness(kms, session, "data")
            volume_id = create_volume(vdir, key, counter=store)
            with open_volume(vdir, key, counter=store) as vol:
                vol.write_file("state.txt", b"first")
                vol.sync()
            shutil.copytree(vdir, tmp_path / "old-copy")
            with open_volume(vdir, key, counter=store) as vol:
                vol.write_file("state.txt", b"second")
                vol.sync()
            held = kms.volume_counter(session, "data")
            assert held.volume_id == volume_id and held.counter > 0

        # A restart: a new attestation; the host puts the old copy back.
        shutil.rmtree(vdir)
        shutil.copytree(tmp_path / "old-copy", vdir)
        with KmsClient(srv.url, verify=srv.ca or True) as kms:
            session, keys = kms.attest_and_fetch(backend, IDENTITY.measurement, names)
            assert keys["volume.data"].value == key
            store = KmsVolumeFreshness(kms, session, "data")
            with pytest.raises(RollbackDetected) as caught:
                open_volume(vdir, key, counter=store)
            assert caught.value.exit_code == 15
            # A fresh volume in its place is refused too: the KMS knows another volume id.
            shutil.rmtree(vdir)
            create_volume(vdir, key, counter=MemoryFreshness())
            with pytest.raises(RollbackDetected, match="foreign volume"):
                open_volume(vdir, key, counter=store)

        records = json.loads(cli("kms", "audit", "--json"))
        kinds = {(r["kind"], r["outcome"]) for r in records}
        assert ("volume.counter", "ok") in kinds and ("secret.generate", "ok") in kinds
        assert sp("kms", "audit", "--verify", "--json").returncode == 0
    finally:
        stop_server(srv)
    assert key.hex() not in logs.text()
