"""``sealpod run``: the phases in order, each timed and named in events and errors.

1. verify    — the bundle's signature against the pinned signer, every trusted file re-hashed.
2. attest    — KMS challenge, ephemeral key, evidence with report_data bound to nonce, key and
               measurement; every secret the pod needs comes in the one answer.
3. provision — secret values into protected memory; env and the files' contents prepared.
4. volumes   — each volume created on first start or checked against the KMS counter, served
               decrypted in the pod's private mount namespace.
5. sandbox   — bubblewrap started as the workload's uid, secrets fed through pipes; sealpod's
               copies wiped once the workload runs.
6. ready     — (optional) the spec's ``ready_tcp`` answers.
Then the supervisor forwards signals, waits, unmounts the volumes and returns the workload's
exit status. Every phase is a function of its own module, so the SGX pre-main and a CVM image
reuse them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from sealpod.build.bundle import Bundle, check_files, load_bundle
from sealpod.build.manifest import FileEntry, resolve
from sealpod.errors import (
    AttestationRefused,
    BundleIntegrityError,
    ConfigError,
    PolicyViolation,
    SealpodError,
    VolumeError,
)
from sealpod.kms.client import KmsClient
from sealpod.runtime import provision, sandbox, supervise, volumes
from sealpod.runtime.backends import open_run_backend
from sealpod.runtime.events import Reporter
from sealpod.runtime.kms import KmsTarget, Released, attest_and_release, resolve_target
from sealpod.runtime.memory import SecretStore, harden_process, reap_orphans
from sealpod.runtime.plan import RunOptions, RunPlan, SandboxKind, TeeChoice, make_plan
from sealpod.runtime.seccomp import default_filter
from sealpod.runtime.staging import Stage, can_stage, enter_stage, unstaged
from sealpod.runtime.users import MAX_TABLE_SIZE, UserTable
from sealpod.settings import sealpod_home
from sealpod.tee.base import TeeBackend
from sealpod.tee.detect import probe_gramine
from sealpod.tee.gramine import GRAMINE_ROOT


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """What the phases before the network produce (and ``--dry-run`` shows)."""

    bundle: Bundle
    plan: RunPlan
    target: KmsTarget
    argv: list[str]  # the sandbox command line, with placeholder descriptors


def prepare(options: RunOptions, events: Reporter) -> Prepared:
    """Phase *verify* and the plan: nothing here touches the network.

    Raises:
        SignatureError, BundleIntegrityError, BundleError: the bundle is not the signed one.
        ConfigError: an unpinned signer or KMS without the matching ``--unsafe-…`` flag, host
            arguments a spec does not allow.
        SpecError: the process user or a secret file cannot be laid out.
    """
    signer = _signer(options)
    with events.phase("verify") as detail:
        bundle = load_bundle(options.bundle, signer=signer)
        report = check_files(bundle)
        detail.update(
            measurement=bundle.measurement.hex(),
            signer=bundle.signer_id.hex(),
            files=report.file_count,
            signer_pinned=signer is not None,
        )
    users = UserTable.parse(_image_file(bundle, "/etc/passwd"))
    plan = make_plan(
        bundle.manifest,
        measurement=bundle.measurement,
        signer_id=bundle.signer_id,
        options=options,
        users=users,
    )
    target = resolve_target(
        bundle.manifest.kms,
        url=options.kms_url,
        identity=options.kms_identity,
        unsafe_any_kms=options.unsafe_any_kms,
        ca=str(options.kms_ca) if options.kms_ca is not None else None,
        local=_local_kms,  # read only when no URL is given
    )
    layout = sandbox.SandboxLayout(
        bwrap="bwrap",
        rootfs=str(bundle.rootfs),
        volumes={v.name: f"<volume {v.name}>" for v in plan.volumes},
        file_fds=list(range(10, 10 + len(plan.files))),
        seccomp_fd=9 if plan.sandbox is SandboxKind.bwrap else None,
    )
    return Prepared(bundle=bundle, plan=plan, target=target, argv=sandbox.bwrap_argv(plan, layout))


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signum)


def _local_kms() -> tuple[str, str | None] | None:
    """The URL and certificate of a ``sealpod kms serve`` on this host, if one runs."""
    from sealpod.kms.serverinfo import read_server_info

    info = read_server_info() or {}
    url, ca = info.get("url"), info.get("ca")
    if not isinstance(url, str):
        return None
    return url, ca if isinstance(ca, str) else None


def _signer(options: RunOptions) -> bytes | None:
    if options.signer is None:
        if not options.unsafe_any_signer:
            raise ConfigError(
                "no signer is pinned: pass --signer HEX (the author key's id that `sealpod"
                " inspect` prints), or --unsafe-any-signer to run a bundle signed by anyone"
            )
        return None
    text = options.signer.strip().lower()
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise ConfigError("--signer must be 64 hex digits (SHA-256 of the author's public key)")
    return value


def _image_file(bundle: Bundle, path: str) -> bytes | None:
    """A small trusted file of the verified image (the user table), or None if absent.

    Raises:
        BundleIntegrityError: the bytes read are not the measured ones (the file was changed
            after the verify phase hashed it).
    """
    index = {e.path: e for e in bundle.manifest.trusted.entries}
    entry = resolve(index, path)
    if not isinstance(entry, FileEntry) or entry.size > MAX_TABLE_SIZE:
        return None
    host = bundle.rootfs / entry.path.lstrip("/")
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_TABLE_SIZE + 1)
    # Read a second time since the verify phase: it decides the workload's uid, so it must
    # still be the measured file.
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), entry.sha256):
        raise BundleIntegrityError(f"{path} changed after the bundle was verified")
    return data


def run_pod(
    options: RunOptions,
    events: Reporter,
    *,
    backend: TeeBackend | None = None,
    evidence_tee: str | None = None,
) -> int:
    """Run the pod in the foreground; its exit status (128+n when a signal ended it).

    ``backend``/``evidence_tee`` replace the one ``options.tee`` names (tests and pre-mains).

    Raises:
        SealpodError: the typed refusal of the phase that failed (verify 4, attest 13/16,
            volumes 15, sandbox 14); the workload never started.
    """
    if (
        options.tee is TeeChoice.sgx
        and backend is None
        and not probe_gramine(GRAMINE_ROOT).available
    ):
        # Outside an enclave, an SGX pod is started by Gramine's loader; inside it, sealpod's
        # pre-main runs these same phases (sealpod.gramine.premain, docs/sgx.md).
        from sealpod.gramine.launch import launch_enclave

        with events.phase("verify") as detail:
            bundle = load_bundle(options.bundle, signer=_signer(options))
            detail.update(measurement=bundle.measurement.hex(), signer=bundle.signer_id.hex())
        return launch_enclave(options.bundle, events)
    harden_process()
    # A stop request before the workload runs unwinds like Ctrl-C: volumes unmounted, memory
    # wiped. Once it runs, these signals are forwarded to it instead.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    prepared = prepare(options, events)
    plan, bundle = prepared.plan, prepared.bundle
    if plan.sandbox is SandboxKind.none:
        events.emit(
            "warning",
            message="--sandbox none: no pid, ipc, uts or network namespace and no seccomp filter",
        )
    # Checked before the network: a missing sandbox must not spend a nonce.
    with events.phase("preflight"):
        bwrap = supervise.find_bwrap()
        seccomp = default_filter() if plan.sandbox is SandboxKind.bwrap else None
        if plan.volumes and not can_stage():
            raise VolumeError(
                "this pod has volumes: `sealpod run` must run as root to mount them (FUSE and"
                " a private mount namespace)"
            )
    if backend is None:
        backend, evidence_tee = open_run_backend(options.tee, bundle, emulate=options.emulate)
    client: KmsClient | None = None
    store: SecretStore | None = None
    served: list[volumes.ServedVolume] = []
    try:
        with events.phase("attest") as detail, _policy_refusal():
            client, released = attest_and_release(
                prepared.target,
                backend,
                measurement=plan.measurement,
                names=plan.secret_names,
                evidence_tee=evidence_tee or "sgx",
                on_retry=lambda n, exc: events.emit(
                    "retry", phase="attest", attempt=n, code=getattr(exc, "code", "error")
                ),
            )
            detail.update(secrets=len(released.secrets), **prepared.target.describe())
        with events.phase("provision") as detail:
            ratls = _issue_ratls(backend) if plan.ratls else None
            store, env = provision.prepare(plan, released, ratls=ratls)
            detail.update(env=len(plan.env), files=len(plan.files), memory=store.kind)
            if ratls is not None:
                detail["ratls"] = "issued"
        stage = enter_stage(bundle.rootfs) if can_stage() else unstaged(bundle.rootfs)
        with events.phase("volumes") as detail:
            served = _mount_volumes(plan, options, stage, store, prepared.target, backend,
                                    evidence_tee or "sgx", released, client)  # fmt: skip
            detail.update(volumes=len(served))
            windows = [f"{m.name}={m.rollback_window_ms}ms" for m in plan.volumes
                       if m.rollback_window_ms]  # fmt: skip
            if windows:  # the signed spec weakened rollback protection: say so at every start
                detail["rollback_window"] = ",".join(windows)
        return _sandbox_and_wait(plan, options, events, stage, store, env, bwrap, seccomp)
    finally:
        if store is not None:
            store.wipe()
        for item in reversed(served):
            try:
                volumes.stop(item)
            except SealpodError as exc:  # e.g. its KMS counter could not be caught up
                events.emit(
                    "warning", phase="volumes", code=exc.code,
                    message=f"volume {item.mount.name}: {exc.message}",
                )  # fmt: skip
        if client is not None:
            client.close()
        reap_orphans()


def _issue_ratls(backend: TeeBackend) -> tuple[bytes, bytes]:
    """An RA-TLS key and certificate from this pod's own TEE (``[runtime] ratls``)."""
    from datetime import UTC, datetime

    from sealpod.ratls.issue import issue_ratls_certificate

    return issue_ratls_certificate(backend, now=datetime.now(UTC))


@contextlib.contextmanager
def _policy_refusal() -> Iterator[None]:
    """The KMS's policy refusal is the pod's policy refusal (exit 13, the codes kept)."""
    try:
        yield
    except AttestationRefused as exc:
        raise PolicyViolation(f"the KMS refused this pod: {exc.message}", exc.violations) from exc


def _mount_volumes(
    plan: RunPlan,
    options: RunOptions,
    stage: Stage,
    store: SecretStore,
    target: KmsTarget,
    backend: TeeBackend,
    evidence_tee: str,
    released: Released,
    client: KmsClient,
) -> list[volumes.ServedVolume]:
    if not plan.volumes:
        return []
    from sealpod.volume.store import VolumeDir  # the volume stack only for pods that have one

    counters = volumes.KmsCounters(
        target=target,
        backend=backend,
        measurement=plan.measurement,
        evidence_tee=evidence_tee,
        session=released.session,
        client=client,
    )
    volume_dir = options.volume_dir or sealpod_home() / "volumes"
    served: list[volumes.ServedVolume] = []
    try:
        for mount in plan.volumes:
            path = volumes.prepare_directory(volume_dir, mount.name)
            held_id, held_counter = counters.current(mount.name)
            has_volume = VolumeDir(path).header_path.exists()
            create = volumes.check_presence(mount.name, has_volume, held_id, held_counter)
            served.append(
                volumes.serve(
                    mount,
                    path=path,
                    key=store.copy(mount.key_secret),
                    freshness=volumes.RenewingFreshness(counters, mount.name),
                    create=create,
                    mountpoint=stage.volume_mountpoint(mount.name),
                    uid=plan.uid,
                    gid=plan.gid,
                )
            )
    except BaseException:
        for item in reversed(served):
            with contextlib.suppress(SealpodError):
                volumes.stop(item)
        raise
    return served


def _sandbox_and_wait(
    plan: RunPlan,
    options: RunOptions,
    events: Reporter,
    stage: Stage,
    store: SecretStore,
    env: dict[str, str],
    bwrap: str,
    seccomp: bytes | None,
) -> int:
    feeder = supervise.FdFeeder()
    file_fds = [feeder.add(store.view(provision.file_key(f))) for f in plan.files]
    seccomp_fd = feeder.add(seccomp) if seccomp is not None else None
    info_r, info_w = os.pipe()
    status_r, status_w = os.pipe()
    layout = sandbox.SandboxLayout(
        bwrap=bwrap,
        rootfs=str(stage.rootfs),
        volumes={v.name: str(stage.volume_mountpoint(v.name)) for v in plan.volumes},
        file_fds=file_fds,
        seccomp_fd=seccomp_fd,
        info_fd=info_w,
        status_fd=status_w,
    )
    argv = sandbox.bwrap_argv(plan, layout)
    drop = os.geteuid() == 0 and plan.uid != 0
    # One forwarder from bwrap's start to the end: a stop request in between (while the
    # phase's event is written, say) must reach the workload, not unwind the start.
    with contextlib.ExitStack() as forwarding:
        with events.phase("sandbox") as detail:
            feeder.start()
            box = supervise.start(
                argv,
                env=env,
                pass_fds=feeder.read_fds,
                info_fd=(info_r, info_w),
                status_fd=(status_r, status_w),
                uid=plan.uid if drop else None,
                gid=plan.gid if drop else None,
                pid_namespace=plan.sandbox is SandboxKind.bwrap,
            )
            forwarding.enter_context(supervise.SignalForwarder(box.signal))
            feeder.finish()
            pid = box.find_workload()
            store.wipe()  # bwrap has copied every file into the sandbox's tmpfs
            env.clear()
            if pid is None:
                box.process.wait()
            detail.update(pid=pid, user=f"{plan.uid}:{plan.gid}", network=plan.network.value)
        if pid is not None and plan.ready_tcp is not None:
            _watch_ready(plan.ready_tcp, box, events, options.ready_timeout_secs)
        code = box.wait()
    events.emit("exit", code=code)
    return code


def _watch_ready(
    address: tuple[str, int], box: supervise.Sandbox, events: Reporter, timeout: float
) -> None:
    def watch() -> None:
        took = supervise.wait_ready(
            address, lambda: box.process.poll() is None, timeout_secs=timeout
        )
        events.emit(
            "phase",
            phase="ready",
            outcome="ok" if took is not None else "error",
            duration_ms=round((took or timeout) * 1000, 1),
            address=f"{address[0]}:{address[1]}",
        )

    threading.Thread(target=watch, daemon=True, name="sealpod-ready").start()
