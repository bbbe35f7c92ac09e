"""``sealpod run --tee sgx`` on the host: start the bundle's enclave with ``gramine-sgx``.

Outside an enclave, an SGX pod is not run by sealpod's sandbox but by Gramine's loader: this
module checks that everything it needs is there — ``gramine-sgx`` on PATH, the SGX device
``/dev/sgx_enclave``, and the signed enclave that ``sealpod gramine manifest`` + ``sealpod
gramine sign`` wrote into ``BUNDLE/gramine`` (``sealpod.manifest.sgx`` and ``sealpod.sig``, whose
signature is checked here) — refuses with exit 14 and a message naming what is missing
otherwise, then runs ``gramine-sgx sealpod`` in the foreground, forwarding SIGTERM/SIGINT/SIGHUP
and returning the enclave's exit status. Inside the enclave, :mod:`sealpod.gramine.premain`
takes over.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

from sealpod.errors import SealpodError, TeeUnavailable
from sealpod.gramine.pipeline import MANIFEST_SGX_FILE, SIG_FILE, load_sigstruct
from sealpod.gramine.sigstruct import Sigstruct, verify_sigstruct
from sealpod.runtime.events import Reporter

LOADER = "gramine-sgx"
SGX_DEVICE = Path("/dev/sgx_enclave")
ENCLAVE_NAME = "sealpod"  # gramine-sgx NAME reads NAME.manifest.sgx and NAME.sig
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def check_launch(bundle_dir: Path, *, device: Path | None = None) -> tuple[str, Path, Sigstruct]:
    """The loader, the enclave directory and its verified SIGSTRUCT, or why the start is refused.

    Raises:
        TeeUnavailable: Gramine or the SGX device is absent, or the bundle has no signed
            enclave (``sealpod gramine manifest`` / ``sign`` were not run).
        MalformedEvidence / EvidenceSignatureError: the ``.sig`` is not a valid SIGSTRUCT.
    """
    device = device if device is not None else SGX_DEVICE
    loader = shutil.which(LOADER)
    missing = []
    if loader is None:
        missing.append(f"{LOADER} is not on PATH (Gramine is not installed)")
    if not device.exists():
        missing.append(f"{device} is absent (no SGX, or the in-kernel SGX driver is not loaded)")
    enclave = bundle_dir / "gramine"
    for name in (MANIFEST_SGX_FILE, SIG_FILE):
        if not (enclave / name).is_file():
            missing.append(
                f"{enclave / name} is missing (run `sealpod gramine manifest` and "
                "`sealpod gramine sign` for this bundle)"
            )
    if missing or loader is None:
        raise TeeUnavailable("--tee sgx cannot start the enclave: " + "; ".join(missing))
    sig = load_sigstruct(enclave / SIG_FILE)
    verify_sigstruct(sig)
    return loader, enclave, sig


def launch_enclave(bundle_dir: Path, events: Reporter, *, device: Path | None = None) -> int:
    """Run the bundle's enclave in the foreground; its exit status (128+n for a signal).

    Raises:
        TeeUnavailable, MalformedEvidence, EvidenceSignatureError: see :func:`check_launch`.
    """
    with events.phase("preflight") as detail:
        loader, enclave, sig = check_launch(bundle_dir, device=device)
        detail.update(loader=loader, mr_enclave=sig.mr_enclave.hex(), mr_signer=sig.mr_signer.hex())
    try:
        process = subprocess.Popen([loader, ENCLAVE_NAME], cwd=enclave)  # noqa: S603
    except OSError as exc:
        raise TeeUnavailable(f"{LOADER} could not start: {exc.strerror or exc}") from exc
    previous = {}
    try:
        for signum in _FORWARDED:
            previous[signum] = signal.signal(signum, lambda n, _f: process.send_signal(n))
        code = process.wait()
    except SealpodError:
        process.kill()
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    status = 128 - code if code < 0 else code
    events.emit("exit", code=status)
    return status
