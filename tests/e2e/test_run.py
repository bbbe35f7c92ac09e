"""`sealpod run` end to end: a real KMS process on 127.0.0.1, real bubblewrap, real FUSE
volumes, simulated TEE evidence. Each test names what it proves in its name."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pod_harness import (
    Kms,
    Pod,
    build_pod,
    busybox_rootfs,
    descendants,
    events,
    kms_fixture,  # noqa: F401 (the kms fixture)
    mounted,
    need_volumes,
    phase,
    run,
    run_args,
    workload_pid,
)

INSPECT = """#!/bin/sh
echo "ID=$(id -u):$(id -g)"
echo "ENV_SECRET=$DB_PASSWORD"
echo "FILE_SECRET=$(cat /run/secrets/token)"
echo "FILE_MODE=$(ls -ln /run/secrets/token | tr -s ' ' | cut -d' ' -f1,3,4)"
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr ':' '='
for ns in pid ipc uts mnt net user cgroup; do echo "NS_$ns=$(readlink /proc/self/ns/$ns)"; done
if touch /etc/written 2>/dev/null; then echo "ROOT=rw"; else echo "ROOT=ro"; fi
echo "ARGS=$*"
"""

SPEC = """
[process]
entrypoint = "/app/inspect.sh"
user = "app"
[process.env]
DB_PASSWORD = { secret = "db-password" }
[[files]]
path = "/run/secrets/token"
secret = "api-token"
mode = 0o440
[identity]
product_id = 1
svn = 1
"""

COUNTER = """#!/bin/sh
n=$(cat /data/count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /data/count
echo "$MARKER $n" > /data/marker.txt
echo "COUNT=$n"
"""

VOLUME_SPEC = """
[process]
entrypoint = "/app/counter.sh"
user = "app"
[process.env]
MARKER = { secret = "marker" }
[[volumes]]
path = "/data"
name = "appdata"
[identity]
product_id = 1
svn = 1
"""

SLEEPER = """#!/bin/sh
trap 'echo "got TERM"; exit 42' TERM
echo "READY"
while :; do sleep 0.05; done
"""


def report(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


@pytest.fixture
def inspect_pod(tmp_path: Path, kms: Kms) -> tuple[Pod, bytes, bytes]:
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/inspect.sh": INSPECT})
    pod = build_pod(tmp_path, SPEC, rootfs)
    env_secret = f"env-{secrets.token_hex(12)}".encode()
    file_secret = f"file-{secrets.token_hex(12)}".encode()
    kms.put_secret("db-password", env_secret)
    kms.put_secret("api-token", file_secret)
    kms.allow(pod, ["db-password", "api-token"])
    return pod, env_secret, file_secret


def _scan_for(roots: list[Path], needles: list[bytes]) -> list[str]:
    """Files under ``roots`` (not following links, skipping huge ones) that hold a needle."""
    hits = []
    for root in roots:
        for directory, dirs, files in os.walk(root):
            # other programs' mounts (a sandbox's /proc, a FUSE view) are not the host's disk
            dirs[:] = [d for d in dirs if not os.path.ismount(os.path.join(directory, d))]
            for name in files:
                path = Path(directory) / name
                try:
                    st = path.lstat()
                    if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits


def test_secrets_reach_the_workload_as_env_and_file_and_nowhere_on_the_host_disk(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms, _isolated_home: Path, tmp_path: Path
) -> None:
    pod, env_secret, file_secret = inspect_pod
    done = run(pod, kms)
    assert done.returncode == 0, done.stderr
    got = report(done.stdout)
    assert got["ENV_SECRET"] == env_secret.decode()
    assert got["FILE_SECRET"] == file_secret.decode()
    assert got["FILE_MODE"] == "-r--r----- 1000 1000"
    # nothing secret in the host's files: the home (KMS db is encrypted), the bundle, /tmp
    hits = _scan_for([_isolated_home, pod.bundle, Path("/tmp")], [env_secret, file_secret])
    assert hits == []
    # and never in an event or error line of sealpod's own
    own = "\n".join(line for line in done.stderr.splitlines() if line.startswith("{"))
    assert env_secret.decode() not in own and file_secret.decode() not in own


def test_the_workload_runs_confined_as_its_user_with_no_capabilities(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, _, _ = inspect_pod
    done = run(pod, kms)
    assert done.returncode == 0, done.stderr
    got = report(done.stdout)
    assert got["ID"] == "1000:1000"
    assert int(got["CapEff"], 16) == 0 and int(got["CapPrm"], 16) == 0
    assert got["NoNewPrivs"] == "1"
    assert got["Seccomp"] == "2"  # a filter is loaded
    assert got["ROOT"] == "ro"
    for ns in ("pid", "ipc", "uts", "mnt", "net", "user", "cgroup"):
        assert got[f"NS_{ns}"] != os.readlink(f"/proc/self/ns/{ns}"), ns
    started = phase(done.stderr, "sandbox")
    assert started["outcome"] == "ok" and started["user"] == "1000:1000"


def test_network_host_shares_only_the_network_namespace(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, _, _ = inspect_pod
    got = report(run(pod, kms, "--network", "host").stdout)
    assert got["NS_net"] == os.readlink("/proc/self/ns/net")
    assert got["NS_pid"] != os.readlink("/proc/self/ns/pid")


def test_host_arguments_are_refused_unless_the_spec_opts_in(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms, tmp_path: Path
) -> None:
    pod, _, _ = inspect_pod
    refused = run(pod, kms, "--", "--evil")
    assert refused.returncode == 2, refused.stderr
    assert "insecure__use_cmdline_argv" in refused.stderr
    rootfs = tmp_path / "rootfs"
    opted = build_pod(
        tmp_path, SPEC + "[runtime]\ninsecure__use_cmdline_argv = true\n", rootfs, "opted"
    )
    kms.allow(opted, ["db-password", "api-token"], name="opted")
    done = run(opted, kms, "--", "one", "two")
    assert done.returncode == 0, done.stderr
    assert report(done.stdout)["ARGS"] == "one two"


def test_no_secret_on_any_command_line_while_the_pod_runs(tmp_path: Path, kms: Kms) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/sleeper.sh": SLEEPER})
    spec = SPEC.replace("/app/inspect.sh", "/app/sleeper.sh")
    pod = build_pod(tmp_path, spec, rootfs)
    value = f"cmdline-{secrets.token_hex(12)}".encode()
    kms.put_secret("db-password", value)
    kms.put_secret("api-token", value + b"-file")
    kms.allow(pod, ["db-password", "api-token"])
    proc = subprocess.Popen(run_args(pod, kms), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"READY"
        tree = descendants(proc.pid)
        assert len(tree) >= 3  # sealpod, bwrap (+ its reaper), the workload
        for pid in tree:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # a short-lived process (the workload's sleep) already gone
            assert value not in cmdline, pid
        # sealpod's own environment holds no secret either
        assert value not in Path(f"/proc/{proc.pid}/environ").read_bytes()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "\nUid:\t0\t" in status or os.geteuid() != 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err


@pytest.mark.parametrize(
    ("sig", "expected"),
    [(signal.SIGTERM, 42), (signal.SIGINT, 128 + signal.SIGINT), (signal.SIGHUP, 128 + 1)],
)
def test_signals_are_forwarded_and_the_exit_status_returned(
    tmp_path: Path, kms: Kms, sig: signal.Signals, expected: int
) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/sleeper.sh": SLEEPER})
    spec = SPEC.replace("/app/inspect.sh", "/app/sleeper.sh")
    pod = build_pod(tmp_path, spec, rootfs)
    kms.put_secret("db-password", b"x")
    kms.put_secret("api-token", b"y")
    kms.allow(pod, ["db-password", "api-token"])
    proc = subprocess.Popen(
        run_args(pod, kms, "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == expected, err.decode()
    exits = [e for e in events(err.decode()) if e.get("event") == "exit"]
    assert exits and exits[-1]["code"] == expected


def test_a_stop_request_as_the_sandbox_phase_ends_reaches_the_workload(
    tmp_path: Path, kms: Kms
) -> None:
    # The sandbox phase's event is written once the workload runs; a SIGTERM sent on reading
    # it must be forwarded to the workload (its trap exits 42; 143 if the signal beat the
    # shell's `trap` line), never taken for an interrupt of the start (exit 130, or 14 when
    # bubblewrap died under it, and the workload killed without its shutdown).
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/sleeper.sh": SLEEPER})
    pod = build_pod(tmp_path, SPEC.replace("/app/inspect.sh", "/app/sleeper.sh"), rootfs)
    kms.put_secret("db-password", b"x")
    kms.put_secret("api-token", b"y")
    kms.allow(pod, ["db-password", "api-token"])
    codes = []
    for _ in range(4):
        proc = subprocess.Popen(
            run_args(pod, kms, "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            if b'"phase": "sandbox"' in line:
                proc.send_signal(signal.SIGTERM)
                break
        proc.communicate(timeout=60)
        codes.append(proc.returncode)
    assert set(codes) <= {42, 128 + signal.SIGTERM}, codes


def test_a_tampered_file_is_refused_before_any_network_call(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, _, _ = inspect_pod
    (pod.bundle / "rootfs" / "app" / "inspect.sh").write_text("#!/bin/sh\necho pwned\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    connections: list[object] = []

    def accept() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                connections.append(listener.accept())
            except OSError:
                continue

    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    done = subprocess.run(
        run_args(pod, kms, "--json", kms_args=["--kms", url, "--unsafe-any-kms"]),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "pwned" not in done.stdout
    verify = phase(done.stderr, "verify")
    assert verify["outcome"] == "error" and verify["code"] == "bundle.integrity"
    assert connections == []
    listener.close()


def test_an_unpinned_signer_or_kms_is_refused_unless_asked(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, _, _ = inspect_pod
    args = run_args(pod, kms)
    no_signer = [a for a in args if a not in ("--signer", pod.signer)]
    done = subprocess.run(no_signer, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--unsafe-any-signer" in done.stderr
    wrong = subprocess.run(
        run_args(pod, kms, kms_args=["--kms", kms.url, "--kms-identity", "ab" * 32]),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 16 and "not the pinned one" in wrong.stderr
    other = ["--signer", "cd" * 32]
    foreign = subprocess.run([*no_signer, *other], capture_output=True, text=True, timeout=60)
    assert foreign.returncode == 4, foreign.stderr
    unpinned = [a for a in args if a not in ("--kms-identity", kms.identity)]
    refused = subprocess.run(unpinned, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--unsafe-any-kms" in refused.stderr


def test_a_changed_bundle_is_refused_by_the_kms(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms, tmp_path: Path
) -> None:
    changed = build_pod(tmp_path, SPEC.replace("svn = 1", "svn = 2"), tmp_path / "rootfs", "v2")
    done = run(changed, kms)
    assert done.returncode == 13, done.stderr
    attest = phase(done.stderr, "attest")
    assert attest["outcome"] == "error" and attest["code"] == "policy.violation"
    assert "measurement_not_allowed" in done.stderr
    assert "ENV_SECRET" not in done.stdout


def test_an_unreachable_kms_ends_in_exit_16_after_bounded_retries(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, _, _ = inspect_pod
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"https://127.0.0.1:{port}"
    args = run_args(pod, kms, "--json", kms_args=["--kms", url, "--kms-identity", kms.identity])
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 16, done.stderr
    retries = [e for e in events(done.stderr) if e.get("event") == "retry"]
    assert len(retries) == 4  # five attempts in all
    assert time.monotonic() - started < 60
    assert "ENV_SECRET" not in done.stdout


def test_a_missing_sandbox_tool_is_exit_14_before_the_kms_is_asked(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms, tmp_path: Path
) -> None:
    pod, _, _ = inspect_pod
    bare = tmp_path / "bin"
    bare.mkdir()
    sealpod = Path(run_args(pod, kms)[0])
    env = {**os.environ, "PATH": str(bare)}
    done = subprocess.run(run_args(pod, kms, "--json"), capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert sealpod.exists()
    assert done.returncode == 14, done.stderr
    assert "apt-get install bubblewrap" in done.stderr
    assert [e for e in events(done.stderr) if e.get("phase") == "attest"] == []


def test_dry_run_shows_the_plan_and_no_secret_value(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms
) -> None:
    pod, env_secret, _ = inspect_pod
    done = subprocess.run(run_args(pod, kms, "--dry-run", "--json"), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    import json

    plan = json.loads(done.stdout)
    assert plan["user"] == "1000:1000"
    assert {"name": "DB_PASSWORD", "source": "secret:db-password"} in plan["env"]
    assert plan["secrets"] == ["db-password", "api-token"]
    assert "--unshare-net" in plan["sandbox_argv"] and "--seccomp" in plan["sandbox_argv"]
    assert plan["kms"]["identity"] == kms.identity
    assert env_secret.decode() not in done.stdout + done.stderr


# --- volumes -----------------------------------------------------------------------------------
@pytest.fixture
def volume_pod(tmp_path: Path, kms: Kms) -> tuple[Pod, bytes]:
    need_volumes()
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/counter.sh": COUNTER})
    pod = build_pod(tmp_path, VOLUME_SPEC, rootfs)
    marker = f"marker-{secrets.token_hex(12)}".encode()
    kms.put_secret("marker", marker)
    kms.put_secret("volume.appdata", generate="bytes:32")
    kms.allow(pod, ["marker", "volume.appdata"])
    return pod, marker


def test_volume_data_persists_across_runs_and_is_ciphertext_on_the_host(
    volume_pod: tuple[Pod, bytes], kms: Kms, tmp_path: Path
) -> None:
    pod, marker = volume_pod
    vdir = tmp_path / "volumes"
    for expected in (1, 2, 3):
        done = run(pod, kms, "--volume-dir", str(vdir))
        assert done.returncode == 0, done.stderr
        assert report(done.stdout)["COUNT"] == str(expected)
    assert (vdir / "appdata").is_dir()
    assert _scan_for([vdir], [marker]) == []
    assert not mounted(vdir)  # the decrypted view never was in our namespace


def test_a_restored_old_copy_of_a_volume_is_refused_with_exit_15(
    volume_pod: tuple[Pod, bytes], kms: Kms, tmp_path: Path
) -> None:
    import shutil

    pod, _ = volume_pod
    vdir = tmp_path / "volumes"
    assert run(pod, kms, "--volume-dir", str(vdir)).returncode == 0
    shutil.copytree(vdir / "appdata", tmp_path / "old-copy", symlinks=True)
    assert run(pod, kms, "--volume-dir", str(vdir)).returncode == 0
    shutil.rmtree(vdir / "appdata")
    shutil.copytree(tmp_path / "old-copy", vdir / "appdata", symlinks=True)
    done = run(pod, kms, "--volume-dir", str(vdir))
    assert done.returncode == 15, done.stderr
    assert phase(done.stderr, "volumes")["code"] == "volume.rollback"
    assert "COUNT" not in done.stdout
    # a deleted volume is no way around it: the KMS still knows the volume
    shutil.rmtree(vdir / "appdata")
    gone = run(pod, kms, "--volume-dir", str(vdir))
    assert gone.returncode == 15 and "no copy of it" in gone.stderr


def test_symlinks_planted_in_a_volume_directory_another_user_owns_are_never_followed(
    volume_pod: tuple[Pod, bytes], kms: Kms, tmp_path: Path
) -> None:
    # The FUSE server runs as root: had it followed journal -> victim it would truncate any
    # file of the host. A volume directory another user can change is refused before any use.
    pod, _ = volume_pod
    vdir = tmp_path / "volumes"
    (vdir / "appdata").mkdir(parents=True)
    victim, victim_dir = tmp_path / "victim", tmp_path / "victim-dir"
    victim.write_text("precious")
    victim_dir.mkdir()
    (vdir / "appdata" / "journal").symlink_to(victim)
    (vdir / "appdata" / "files").symlink_to(victim_dir)
    os.chown(vdir / "appdata", 1000, 1000)
    done = run(pod, kms, "--volume-dir", str(vdir))
    assert done.returncode == 15, done.stderr
    assert "owned by uid 1000" in done.stderr
    assert "COUNT" not in done.stdout
    assert victim.read_text() == "precious"
    assert list(victim_dir.iterdir()) == []


def test_killing_the_workload_or_interrupting_sealpod_leaves_no_mount_behind(
    tmp_path: Path, kms: Kms
) -> None:
    need_volumes()
    script = SLEEPER.replace('echo "READY"', 'echo kept > /data/kept; echo "READY"')
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/counter.sh": script})
    pod = build_pod(tmp_path, VOLUME_SPEC, rootfs)
    kms.put_secret("marker", b"m")
    kms.put_secret("volume.appdata", generate="bytes:32")
    kms.allow(pod, ["marker", "volume.appdata"])
    vdir = tmp_path / "volumes"
    for how in ("kill-workload", "interrupt-sealpod"):
        proc = subprocess.Popen(
            run_args(pod, kms, "--volume-dir", str(vdir)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"READY"
        tree = descendants(proc.pid)
        if how == "kill-workload":
            os.kill(workload_pid(tree), signal.SIGKILL)
            expected = 128 + signal.SIGKILL
        else:
            proc.send_signal(signal.SIGINT)
            expected = 128 + signal.SIGINT
        proc.communicate(timeout=60)
        assert proc.returncode == expected, how
        time.sleep(0.2)
        alive = [(p, _cmd(p)) for p in tree if Path(f"/proc/{p}").exists()]
        assert alive == [], f"{how}: processes left: {alive}"
        assert not mounted(vdir)
    # the volume is whole and not locked: the same pod starts again cleanly
    proc = subprocess.Popen(run_args(pod, kms, "--volume-dir", str(vdir)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 42, err.decode()


def _cmd(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "?"
    return (
        cmd + " " + " ".join(line for line in status if line.startswith(("Name", "State", "PPid")))
    )


# --- confidential VMs (fake configfs-tsm) ------------------------------------------------------
GUEST = "6a" * 32  # the simulated VM's launch measurement (the guest image holding sealpod)


@pytest.mark.parametrize(("tee", "provider"), [("snp", "sev_guest"), ("tdx", "tdx_guest")])
def test_a_cvm_pod_binds_its_container_into_tsm_evidence_and_the_kms_checks_it(
    inspect_pod: tuple[Pod, bytes, bytes], kms: Kms, tmp_path: Path, tee: str, provider: str
) -> None:
    import json
    import sys

    pod, env_secret, _ = inspect_pod
    # The policy pins the container (release.workloads) on simulated evidence of this TEE.
    policy = kms.home / "cvm.toml"
    policy.write_text(
        f'allow_simulation = true\ntees = ["{tee}"]\n'
        f'[release]\nsecrets = ["db-password", "api-token"]\nworkloads = ["{pod.measurement}"]\n'
    )
    from pod_harness import cli

    cli("kms", "policy", "put", "cvm", str(policy))
    script = Path(__file__).with_name("cvm_pod.py")

    def start(bundle: Pod) -> subprocess.CompletedProcess[str]:
        root = tmp_path / f"tsm-{bundle.measurement[:8]}"
        args = {"bundle": str(bundle.bundle), "root": str(root), "provider": provider,
                "tee": tee, "signer": bundle.signer, "kms": kms.url, "identity": kms.identity,
                "guest_measurement": GUEST}  # fmt: skip
        return subprocess.run([sys.executable, str(script), json.dumps(args)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    done = start(pod)
    assert done.returncode == 0, done.stderr
    assert report(done.stdout)["ENV_SECRET"] == env_secret.decode()
    attest = phase(done.stderr, "attest")
    assert attest["outcome"] == "ok"
    # another container in the same VM image is refused: the workload is pinned
    other = build_pod(tmp_path, SPEC.replace("svn = 1", "svn = 9"), tmp_path / "rootfs", "other")
    refused = start(other)
    assert refused.returncode == 13, refused.stderr
    assert "workload_not_allowed" in refused.stderr


# --- RA-TLS issued at start --------------------------------------------------------------------
RATLS_SPEC = SPEC.replace("/app/inspect.sh", "/app/ratls.sh") + '[runtime]\nratls = "/run/ratls"\n'
SHOW_RATLS = """#!/bin/sh
ls -ln /run/ratls | tr -s ' ' | cut -d' ' -f1,3,9 | grep pem
cat /run/ratls/cert.pem
"""


def test_a_pod_can_have_an_ratls_certificate_whose_evidence_binds_its_key(
    tmp_path: Path, kms: Kms
) -> None:
    import json

    from pod_harness import cli

    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/ratls.sh": SHOW_RATLS})
    pod = build_pod(tmp_path, RATLS_SPEC, rootfs)
    kms.put_secret("db-password", b"x")
    kms.put_secret("api-token", b"y")
    kms.allow(pod, ["db-password", "api-token"])
    done = run(pod, kms)
    assert done.returncode == 0, done.stderr
    assert "-r-------- 1000 key.pem" in done.stdout and "-r--r--r-- 1000 cert.pem" in done.stdout
    assert phase(done.stderr, "provision")["ratls"] == "issued"
    cert = tmp_path / "cert.pem"
    cert.write_text(done.stdout[done.stdout.index("-----BEGIN CERTIFICATE-----") :])
    shown = json.loads(cli("ratls", "inspect", str(cert), "--json"))
    assert shown["binds_key"] is True
    claimed = shown["evidence"][0]["claimed_identity"]
    assert claimed["mr_enclave"] == pod.measurement  # the simulated enclave is this bundle
    assert "SIMULATED" in claimed["root"]


def test_a_running_pod_keeps_its_kms_counter_current_after_its_policy_changes(
    tmp_path: Path, kms: Kms
) -> None:
    import shutil

    need_volumes()
    script = """#!/bin/sh
trap 'echo after > /data/after; exit 0' TERM
if [ -e /data/after ]; then echo "FOUND=$(cat /data/after)"; exit 0; fi
echo "READY"
while :; do sleep 0.05; done
"""
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/counter.sh": script})
    pod = build_pod(tmp_path, VOLUME_SPEC, rootfs)
    kms.put_secret("marker", b"m")
    kms.put_secret("volume.appdata", generate="bytes:32")
    kms.allow(pod, ["marker", "volume.appdata"])
    vdir = tmp_path / "volumes"
    proc = subprocess.Popen(run_args(pod, kms, "--volume-dir", str(vdir)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"READY"
    shutil.copytree(vdir / "appdata", tmp_path / "before", symlinks=True)  # the host's snapshot
    # The owner edits the policy: the pod's token is revoked at once (docs/kms.md). The last
    # commit must still move the KMS's counter (attesting again), or the snapshot above would
    # pass for current and the commit could be rolled back unnoticed.
    kms.put_secret("another", b"a")
    kms.allow(pod, ["marker", "volume.appdata", "another"])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    shutil.move(vdir / "appdata", tmp_path / "after")
    shutil.copytree(tmp_path / "before", vdir / "appdata", symlinks=True)
    stale = run(pod, kms, "--volume-dir", str(vdir))
    assert stale.returncode == 15, stale.stderr
    shutil.rmtree(vdir / "appdata")
    shutil.move(tmp_path / "after", vdir / "appdata")
    again = run(pod, kms, "--volume-dir", str(vdir))
    assert again.returncode == 0, again.stderr
    assert report(again.stdout)["FOUND"] == "after"


def test_a_volume_with_a_rollback_window_names_it_and_still_refuses_an_older_copy(
    tmp_path: Path, kms: Kms
) -> None:
    """The window is in the signed spec and said at every start; the KMS is caught up when the
    volume is unmounted, so a copy from an earlier run is refused as without a window."""
    import shutil

    need_volumes()
    rootfs = busybox_rootfs(tmp_path / "rootfs", {"/app/counter.sh": COUNTER})
    spec = VOLUME_SPEC.replace(
        'name = "appdata"\n', 'name = "appdata"\nrollback_window_ms = 5000\n'
    )
    pod = build_pod(tmp_path, spec, rootfs)
    kms.put_secret("marker", b"window-marker")
    kms.put_secret("volume.appdata", generate="bytes:32")
    kms.allow(pod, ["marker", "volume.appdata"])
    vdir = tmp_path / "volumes"
    first = run(pod, kms, "--volume-dir", str(vdir), "--json")
    assert first.returncode == 0, first.stderr
    assert phase(first.stderr, "volumes")["rollback_window"] == "appdata=5000ms"
    shutil.copytree(vdir / "appdata", tmp_path / "old-copy", symlinks=True)
    second = run(pod, kms, "--volume-dir", str(vdir))
    assert second.returncode == 0, second.stderr
    assert report(second.stdout)["COUNT"] == "2"
    shutil.rmtree(vdir / "appdata")
    shutil.copytree(tmp_path / "old-copy", vdir / "appdata", symlinks=True)
    done = run(pod, kms, "--volume-dir", str(vdir))
    assert done.returncode == 15, done.stderr
    assert phase(done.stderr, "volumes")["code"] == "volume.rollback"
