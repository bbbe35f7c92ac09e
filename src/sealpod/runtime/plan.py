"""The run plan: everything ``sealpod run`` will do, computed before it does any of it.

Pure: built from the verified manifest, the options the host gave and the image's user table,
with no file access and no clock. ``--dry-run`` prints :meth:`RunPlan.describe`; the sandbox
command line is built from the plan alone (:mod:`sealpod.runtime.sandbox`), so a test can read
every mount, variable name and limit without starting anything.

What the host decides is deliberately small: the TEE backend, the KMS to ask, the network
(``none`` or ``host``), the sandbox (``bwrap`` or, with a warning, ``none``) and where volume
ciphertext lives. The workload's argv, environment, files, user and mounts come from the
measured manifest; host arguments are refused unless the manifest opts in with
``[runtime] insecure__use_cmdline_argv = true``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealpod.build.manifest import Manifest, in_memory_dirs
from sealpod.errors import ConfigError, SpecError
from sealpod.runtime.users import UserTable
from sealpod.spec.model import SecretRef

#: The KMS secret that holds volume NAME's key (so a release policy grants it like any other).
VOLUME_KEY_PREFIX = "volume."
#: The pseudo-secret of the RA-TLS key and certificate sealpod issues itself at start.
RATLS = "(ra-tls)"
#: PATH for a workload whose spec sets none (the value container engines use).
#: The kernel's limit on one ``NAME=value`` string of an environment (MAX_ARG_STRLEN).
MAX_ENV_STRING = 32 * 4096
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TeeChoice(enum.StrEnum):
    """``--tee``: where the evidence comes from. ``auto`` never picks the simulator."""

    auto = "auto"
    sim = "sim"
    sgx = "sgx"
    snp = "snp"
    tdx = "tdx"


class Emulate(enum.StrEnum):
    """``--emulate``: the evidence format the simulator produces."""

    sgx = "sgx"
    tdx = "tdx"
    snp = "snp"


class Network(enum.StrEnum):
    """``--network``: ``none`` (a private network namespace with loopback only) or ``host``."""

    none = "none"
    host = "host"


class SandboxKind(enum.StrEnum):
    """``--sandbox``: ``bwrap`` isolates; ``none`` keeps only the file-system layout."""

    bwrap = "bwrap"
    none = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What the host asked for. Untrusted: nothing here can widen what the manifest allows."""

    bundle: Path
    tee: TeeChoice = TeeChoice.auto
    emulate: str = "sgx"  # sim only: the evidence format (sgx, tdx, snp)
    kms_url: str | None = None
    kms_identity: str | None = None
    unsafe_any_kms: bool = False
    kms_ca: Path | None = None
    signer: str | None = None
    unsafe_any_signer: bool = False
    network: Network = Network.none
    sandbox: SandboxKind = SandboxKind.bwrap
    volume_dir: Path | None = None
    host_args: tuple[str, ...] = ()
    ready_timeout_secs: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvVar:
    """One variable of the workload: a literal from the manifest, or a KMS secret's value."""

    name: str
    value: str | None = field(default=None, repr=False)
    secret: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFile:
    """A ``[[files]]`` entry: written in memory inside the sandbox, owned by the workload."""

    path: str
    secret: str
    field: str | None
    mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMount:
    """A ``[[volumes]]`` entry: its key is the KMS secret ``volume.<name>``."""

    name: str
    path: str
    rollback_window_ms: int = 0  # how long the KMS counter may lag (0: never)

    @property
    def key_secret(self) -> str:
        return VOLUME_KEY_PREFIX + self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """The resolved pod: what runs, as whom, with what, where."""

    measurement: bytes
    signer_id: bytes
    argv: tuple[str, ...]
    workdir: str
    uid: int
    gid: int
    env: tuple[EnvVar, ...]
    files: tuple[SecretFile, ...]
    volumes: tuple[VolumeMount, ...]
    tmpfs: tuple[str, ...]
    network: Network
    sandbox: SandboxKind
    ready_tcp: tuple[str, int] | None
    debug: bool

    @property
    def ratls(self) -> bool:
        """Whether sealpod issues the pod an RA-TLS key and certificate at start."""
        return any(f.secret == RATLS for f in self.files)

    @property
    def secret_names(self) -> tuple[str, ...]:
        """Every secret the pod needs, each once, in a stable order: env, files, volume keys.
        All of them are asked for in the one attestation answer."""
        names = [v.secret for v in self.env if v.secret is not None]
        names += [f.secret for f in self.files if f.secret != RATLS]
        names += [v.key_secret for v in self.volumes]
        return tuple(dict.fromkeys(names))

    def describe(self) -> dict[str, object]:
        """The plan for ``--dry-run``: names and places, never a secret value.

        Raises:
            Nothing.
        """
        return {
            "measurement": self.measurement.hex(),
            "signer": self.signer_id.hex(),
            "argv": list(self.argv),
            "workdir": self.workdir,
            "user": f"{self.uid}:{self.gid}",
            "env": [
                {"name": v.name, "source": f"secret:{v.secret}" if v.secret else "manifest"}
                for v in self.env
            ],
            "files": [
                {"path": f.path, "secret": f.secret, "field": f.field, "mode": f"{f.mode:04o}"}
                for f in self.files
            ],
            "volumes": [
                {"name": v.name, "path": v.path, "key_secret": v.key_secret} for v in self.volumes
            ],
            "tmpfs": list(self.tmpfs),
            "network": self.network.value,
            "sandbox": self.sandbox.value,
            "ready_tcp": f"{self.ready_tcp[0]}:{self.ready_tcp[1]}" if self.ready_tcp else None,
            "secrets": list(self.secret_names),
        }


def make_plan(
    manifest: Manifest,
    *,
    measurement: bytes,
    signer_id: bytes,
    options: RunOptions,
    users: UserTable,
) -> RunPlan:
    """Resolve the manifest and the host's options into a :class:`RunPlan`.

    Raises:
        ConfigError: host arguments given to a pod that does not opt in to them.
        SpecError: the process user is not in the image, or a secret file cannot be placed.
    """
    runtime = manifest.runtime
    if options.host_args and not (runtime is not None and runtime.insecure__use_cmdline_argv):
        raise ConfigError(
            "host arguments after `--` are refused: they are not measured, and this pod's spec"
            " does not set [runtime] insecure__use_cmdline_argv = true"
        )
    process = manifest.process
    uid, gid = users.resolve(process.user)
    env = _environment(process.env)
    memory = in_memory_dirs(runtime)
    files = tuple(
        SecretFile(path=f.path, secret=f.secret, field=f.field, mode=f.mode) for f in manifest.files
    )
    if runtime is not None and runtime.ratls is not None:
        base = runtime.ratls.rstrip("/")
        files += (
            SecretFile(path=f"{base}/key.pem", secret=RATLS, field="key", mode=0o400),
            SecretFile(path=f"{base}/cert.pem", secret=RATLS, field="cert", mode=0o444),
        )
    for f in files:
        if not any(f.path.startswith(m + "/") for m in memory):
            raise SpecError(
                f"files: {f.path} is not inside /run, /tmp or a [runtime] tmpfs path"
                " (rebuild the bundle: secret files live in memory)"
            )
    ready = None
    if runtime is not None and runtime.ready_tcp is not None:
        host, _, port = runtime.ready_tcp.rpartition(":")
        ready = (host.strip("[]"), int(port))
    return RunPlan(
        measurement=measurement,
        signer_id=signer_id,
        argv=(process.entrypoint, *process.args, *options.host_args),
        workdir=process.workdir,
        uid=uid,
        gid=gid,
        env=env,
        files=files,
        volumes=tuple(
            VolumeMount(name=v.name, path=v.path, rollback_window_ms=v.rollback_window_ms)
            for v in manifest.volumes
        ),
        tmpfs=memory,
        # No sandbox, no network namespace: say so rather than echo --network none.
        network=Network.host if options.sandbox is SandboxKind.none else options.network,
        sandbox=options.sandbox,
        ready_tcp=ready,
        debug=manifest.tee.debug,
    )


def _environment(template: Mapping[str, str | SecretRef]) -> tuple[EnvVar, ...]:
    out = [
        EnvVar(name=name, secret=value.secret)
        if isinstance(value, SecretRef)
        else EnvVar(name=name, value=value)
        for name, value in sorted(template.items())
    ]
    if "PATH" not in template:
        out.insert(0, EnvVar(name="PATH", value=DEFAULT_PATH))
    return tuple(out)


def workload_environment(
    plan: RunPlan, values: Mapping[str, bytes], *, extra: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """The workload's whole environment: the plan's literals and the released secrets.

    Raises:
        ConfigError: a secret needed as a variable is not text (a variable cannot hold NUL or
            invalid UTF-8) or is longer than the kernel takes; the message names the variable
            and the secret, never the value.
    """
    env: dict[str, str] = {}
    for var in plan.env:
        if var.secret is None:
            env[var.name] = var.value or ""
            continue
        raw = values[var.secret]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "\x00"
        if "\x00" in text:
            raise ConfigError(
                f"secret {var.secret!r} cannot be the variable {var.name}: it is not UTF-8 text"
                " without NUL (provision it as a [[files]] entry instead)"
            )
        if len(var.name) + 2 + len(raw) > MAX_ENV_STRING:
            raise ConfigError(
                f"secret {var.secret!r} is too long for the variable {var.name}: the kernel"
                f" takes at most {MAX_ENV_STRING} bytes per variable (provision it as a"
                " [[files]] entry instead)"
            )
        env[var.name] = text
    env.update(extra)
    return env
