"""The in-enclave pre-main: what Gramine runs first (``libos.entrypoint``), before the pod.

Inside the enclave, in this order (the runtime's phases, :mod:`sealpod.runtime`):

1. *verify* — the bundle's ``manifest.json`` (a trusted file: Gramine refuses it unless its
   SHA-256, the sealpod measurement, is the one MRENCLAVE covers) and its signature; the rootfs
   files are trusted files too, so Gramine checks each one when it is opened;
2. *attest* — :func:`sealpod.runtime.kms.attest_and_release` with evidence from
   ``/dev/attestation`` (:class:`~sealpod.tee.gramine.GramineBackend`). The workload measurement
   the KMS sees is the enclave's own MRENCLAVE (read from ``my_target_info``), because the KMS
   requires an SGX quote's MRENCLAVE to be the claimed workload; a release policy therefore pins
   MRENCLAVE/MRSIGNER (``sealpod gramine sign`` writes one). The KMS is the one the measured spec
   names and pins (``[kms] url`` and ``identity``): the host cannot redirect it;
3. *provision* — :func:`sealpod.runtime.provision.prepare`;
4. *volumes* — each volume key (the KMS secret ``volume.NAME``, 32 bytes) is turned into the
   16-byte key Gramine's encrypted files use (HKDF-SHA256, :func:`gramine_volume_key`) and
   written to ``/dev/attestation/keys/sealpod-volume-NAME`` **before anything opens an encrypted
   mount** — the pre-main never touches a volume path;
5. the ``[[files]]`` are written into the enclave's in-memory tmpfs, owned by the pod's user;
6. exec of the pod's entrypoint with its argv and environment (the pre-main's own copies of
   the secrets are wiped first).

``--attestation-root`` and ``--root`` exist for tests (a fake ``/dev/attestation`` tree and a
scratch root); inside Gramine the argv comes from the manifest only, so the host cannot set them.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealpod.build.bundle import load_bundle
from sealpod.errors import (
    AttestationRefused,
    ConfigError,
    EvidenceGenerationError,
    PolicyViolation,
    SealpodError,
)
from sealpod.gramine.manifest import BUNDLE_DIR, volume_key_name
from sealpod.runtime import provision
from sealpod.runtime.events import Reporter
from sealpod.runtime.kms import attest_and_release, resolve_target
from sealpod.runtime.memory import SecretStore
from sealpod.runtime.plan import RunOptions, RunPlan, SandboxKind, TeeChoice, make_plan
from sealpod.runtime.users import MAX_TABLE_SIZE, UserTable
from sealpod.tee._pseudofile import write_attribute
from sealpod.tee.gramine import GRAMINE_ROOT, GramineBackend

GRAMINE_KEY_SIZE = 16  # Gramine: "/dev/attestation/keys/<key_name> ... a 16-byte raw binary value"
_KDF_INFO = b"sealpod/gramine-encrypted-mount/v1\x00"


def gramine_volume_key(volume_key: bytes | memoryview, name: str) -> bytes:
    """The 128-bit Gramine encrypted-files key of volume ``name`` from its 32-byte sealpod key.

    A KDF and not a truncation: the same KMS secret must not be used raw by two schemes.

    Raises:
        ConfigError: the volume key is not 32 bytes.
    """
    if len(volume_key) != 32:
        raise ConfigError(f"volume key of {name!r} is {len(volume_key)} bytes, expected 32")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=GRAMINE_KEY_SIZE, salt=None,
                info=_KDF_INFO + name.encode())  # fmt: skip
    return hkdf.derive(bytes(volume_key))


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """What the pre-main execs: resolved paths under ``root`` and the environment."""

    path: str
    argv: list[str]
    env: dict[str, str]
    cwd: str


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def write_volume_keys(plan: RunPlan, store: SecretStore, attestation_root: Path) -> list[str]:
    """Write every volume's Gramine key to ``/dev/attestation/keys/<name>``; their names.

    Raises:
        ConfigError: a volume key is not 32 bytes.
        TeeUnavailable / EvidenceGenerationError: the keys directory refused the write.
    """
    written = []
    for volume in plan.volumes:
        name = volume_key_name(volume.name)
        with store.view(volume.key_secret) as key:
            derived = gramine_volume_key(key, volume.name)
        path = attestation_root / "keys" / name
        write_attribute(path, derived, what=f"keys/{name}", source="gramine",
                        absent=f"{path} is absent (is this Gramine >= 1.6?)")  # fmt: skip
        written.append(name)
    return written


def write_files(plan: RunPlan, store: SecretStore, root: Path) -> None:
    """Write the ``[[files]]`` into the in-enclave tmpfs (new files only, never through a link).

    Raises:
        ConfigError: a file exists already or cannot be written.
    """
    for secret_file in plan.files:
        target = _under(root, secret_file.path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target.name, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            raise ConfigError(f"cannot create {secret_file.path}: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        try:
            with store.view(provision.file_key(secret_file)) as view:
                os.write(fd, view)
            if os.geteuid() == 0:
                os.fchown(fd, plan.uid, plan.gid)
            os.fchmod(fd, stat.S_IMODE(secret_file.mode))
        finally:
            os.close(fd)


def prepare_launch(
    bundle_dir: Path,
    *,
    attestation_root: Path,
    root: Path,
    events: Reporter,
) -> Launch:
    """Phases 1-5; the pod's launch (nothing has been exec'd yet).

    Raises:
        SealpodError: the typed refusal of the phase that failed (bundle 4, policy 13, KMS 16,
            TEE 14, config 2).
    """
    with events.phase("verify") as detail:
        bundle = load_bundle(bundle_dir)
        detail.update(measurement=bundle.measurement.hex(), signer=bundle.signer_id.hex())
    passwd = _under(root, "/etc/passwd")
    users = UserTable.parse(_read_small(passwd))
    options = RunOptions(bundle=bundle_dir, tee=TeeChoice.sgx, sandbox=SandboxKind.none)
    plan = make_plan(bundle.manifest, measurement=bundle.measurement,
                     signer_id=bundle.signer_id, options=options, users=users)  # fmt: skip
    # The measured spec alone decides the KMS: no host URL, pin or CA is consulted.
    target = resolve_target(bundle.manifest.kms, url=None, identity=None,
                            unsafe_any_kms=False, ca=None)  # fmt: skip
    backend = GramineBackend(attestation_root)
    mr_enclave = backend.my_target_info()[:32]  # TARGETINFO.MEASUREMENT (SDM: offset 0)
    if len(mr_enclave) != 32:
        raise EvidenceGenerationError("gramine: my_target_info holds no MRENCLAVE")
    store: SecretStore | None = None
    client = None
    try:
        with events.phase("attest") as detail:
            try:
                client, released = attest_and_release(
                    target, backend, measurement=mr_enclave, names=plan.secret_names,
                    evidence_tee="sgx",
                )  # fmt: skip
            except AttestationRefused as exc:  # as `sealpod run`: a policy refusal is exit 13
                raise PolicyViolation(f"the KMS refused this enclave: {exc.message}",
                                      exc.violations) from exc  # fmt: skip
            detail.update(mr_enclave=mr_enclave.hex(), secrets=len(released.secrets))
        with events.phase("provision") as detail:
            store, env = provision.prepare(plan, released)
            detail.update(env=len(plan.env), files=len(plan.files))
        with events.phase("volumes") as detail:
            detail.update(keys=write_volume_keys(plan, store, attestation_root))
        write_files(plan, store, root)
        path = str(_under(root, plan.argv[0]))
        return Launch(path=path, argv=list(plan.argv), env=env, cwd=str(_under(root, plan.workdir)))
    finally:
        if store is not None:
            store.wipe()
        if client is not None:
            client.close()


def _read_small(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_TABLE_SIZE + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sealpod-premain``: run the phases, then exec the pod (never returns on
    success). Errors print one line and exit with the family's code."""
    parser = argparse.ArgumentParser(prog="sealpod-premain")
    parser.add_argument("--bundle-dir", default=BUNDLE_DIR)
    parser.add_argument("--attestation-root", default=str(GRAMINE_ROOT))
    parser.add_argument("--root", default="/")
    args = parser.parse_args(argv)
    events = Reporter(json_lines=os.environ.get("SEALPOD_PREMAIN_JSON") == "1")
    try:
        launch = prepare_launch(
            Path(args.bundle_dir), attestation_root=Path(args.attestation_root),
            root=Path(args.root), events=events,
        )  # fmt: skip
    except SealpodError as exc:
        events.emit("error", **exc.to_dict(), exit_code=exc.exit_code)
        return exc.exit_code
    try:
        os.chdir(launch.cwd)
        os.execve(launch.path, launch.argv, launch.env)  # noqa: S606 - the measured entrypoint
    except OSError as exc:
        events.emit("error", code="tee", message=f"cannot exec {launch.argv[0]}: {exc.strerror}")
        return 14


if __name__ == "__main__":
    sys.exit(main())
