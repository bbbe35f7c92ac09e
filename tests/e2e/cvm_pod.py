"""Run a pod as `sealpod run --tee snp|tdx` would inside a confidential VM, against a fake
configfs-tsm tree (the test's "kernel" must live in this process, so this script is the
process; the runtime code path is the real one).

Usage: python cvm_pod.py '{"bundle", "root", "provider", "tee", "signer", "kms", "identity",
"guest_measurement"}'  — exits with the pod's status, or the typed error's exit code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sealpod.build.bundle import load_bundle
from sealpod.errors import SealpodError
from sealpod.runtime.backends import open_run_backend
from sealpod.runtime.events import Reporter
from sealpod.runtime.plan import RunOptions, TeeChoice
from sealpod.runtime.run import run_pod
from sealpod.tee.sim import SimIdentity, SimPlatform
from sealpod.testing.fake_tsm import FakeTsm
from sealpod.testing.sim_fakes import sim_tsm_producer


def main() -> int:
    args = json.loads(sys.argv[1])
    bundle = load_bundle(Path(args["bundle"]))
    guest = SimIdentity(measurement=bytes.fromhex(args["guest_measurement"]), signer=b"\x07" * 32)
    producer = sim_tsm_producer(SimPlatform.load(None), guest, args["provider"])
    events = Reporter(json_lines=True)
    with FakeTsm(Path(args["root"]), provider=args["provider"], producer=producer) as fake:
        try:
            backend, kind = open_run_backend(
                TeeChoice(args["tee"]), bundle, tsm_root=fake.root, tsm_ops=fake
            )
            options = RunOptions(
                bundle=bundle.path, tee=TeeChoice(args["tee"]), signer=args["signer"],
                kms_url=args["kms"], kms_identity=args["identity"],
            )  # fmt: skip
            return run_pod(options, events, backend=backend, evidence_tee=kind)
        except SealpodError as exc:
            events.emit("error", **exc.to_dict(), exit_code=exc.exit_code)
            return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
