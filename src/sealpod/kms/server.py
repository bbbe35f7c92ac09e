"""``sealpod kms serve``: the KMS under uvicorn.

Binds 127.0.0.1 unless told otherwise; serves TLS with a certificate it generates (P-256,
self-signed, for the bind address, ``localhost`` and any ``--dns`` names, kept under
``$SEALPOD_HOME/kms/tls``) unless one is given. Plain HTTP only with ``insecure_http`` (tests
and a TLS-terminating sidecar). After the socket is bound it writes ``server.json`` (URL, CA
certificate path, pid) next to the database so the CLI finds the server without flags.

Logs are one line per event, ``key=value``; no line carries a secret value, a token or a share.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI

from sealpod._files import write_atomic
from sealpod.errors import ConfigError
from sealpod.kms.app import create_app
from sealpod.kms.identity import identity_of_pem
from sealpod.kms.keys import MasterKey, load_master_key_env, load_master_key_file
from sealpod.kms.logformat import LogFormat, configure_logging
from sealpod.kms.metrics import process_exited, share_across
from sealpod.kms.ratelimit import SharedRateLimiter
from sealpod.kms.serverinfo import SERVER_INFO
from sealpod.kms.service import AttestationVerifier
from sealpod.kms.settings import KmsSettings, kms_home
from sealpod.kms.state import SealState
from sealpod.kms.store import Store

log = logging.getLogger("sealpod.kms")
TLS_VALIDITY_DAYS = 365


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    dns: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: LogFormat = LogFormat.LOGFMT
    access_log: bool = True
    info_file: Path | None = None  # default: kms_home()/server.json
    workers: int = 1  # > 1: pre-forked processes sharing the socket (needs the key at start)


def ensure_tls(directory: Path, *, host: str, dns: tuple[str, ...]) -> tuple[Path, Path]:
    """A self-signed server certificate for ``host``/``localhost``/``dns`` in ``directory``,
    reused while it is valid for those names for at least another day.

    Raises:
        ConfigError: the directory cannot be written.
    """
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    names = sorted({host, "localhost", "127.0.0.1", *dns} - {"0.0.0.0", "::", ""})  # noqa: S104
    if cert_path.is_file() and key_path.is_file():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
                str(v) for v in san.get_values_for_type(x509.IPAddress)
            }
            fresh = cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)
            if fresh and set(names) <= have and _key_matches(key_path, cert):
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass  # unreadable or foreign: make a new one
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sealpod KMS {host}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=TLS_VALIDITY_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        # Each file appears whole (temporary file, then rename), the key never with a wider
        # mode than 0600; a crash between the two renames leaves a pair that _key_matches
        # refuses, so the next start makes a new one.
        write_atomic(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(f"cannot write TLS material in {directory}: {exc.strerror}") from exc
    return cert_path, key_path


def _key_matches(key_path: Path, cert: x509.Certificate) -> bool:
    """True when ``key_path`` holds the private key of ``cert`` and only its owner can read it."""
    try:
        if key_path.stat().st_mode & 0o077:
            return False
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def startup_master_key(settings: KmsSettings) -> MasterKey | None:
    """The master key from ``--master-key-file`` or ``$SEALPOD_KMS_MASTER_KEY``, or None (the
    server then starts sealed and waits for Shamir shares).

    Raises:
        ConfigError: the file or variable is malformed.
    """
    if settings.master_key_file is not None:
        return load_master_key_file(settings.master_key_file)
    return load_master_key_env()


def serve(settings: KmsSettings, verifier: AttestationVerifier, options: ServeOptions) -> None:
    """Open the store, unseal if the key is at hand, and serve until SIGTERM/SIGINT.

    With ``options.workers > 1`` the process binds the socket, checks the key, and forks that
    many workers that each open the store, unseal and serve on the shared socket (the kernel
    spreads connections); it restarts a worker that dies and stops them all on SIGTERM.

    Raises:
        ConfigError: bad TLS files, an address that cannot be bound, a wrong master key, or
            several workers without the master key at start (Shamir shares unseal one process).
        KmsUnavailable: the database cannot be reached.
    """
    configure_logging(options.log_level, options.log_format)
    if options.workers < 1:
        raise ConfigError(f"--workers is {options.workers}, expected at least 1")
    master = startup_master_key(settings)
    if options.workers > 1 and master is None:
        raise ConfigError(
            "--workers > 1 needs the master key at start (--master-key-file or "
            "SEALPOD_KMS_MASTER_KEY): Shamir shares submitted to one worker would unseal only it"
        )
    store = Store.open(settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous)
    app: FastAPI | None = None
    try:
        if master is None or options.workers == 1:
            app = create_app(settings, verifier=verifier, store=store, master_key=master)
            sealed, initialized = app.state.kms_state.sealed, app.state.kms_state.initialized
        else:
            SealState(store).check_key(master)
            sealed, initialized = False, True
    except BaseException:
        store.close()
        raise
    if not initialized:
        log.warning("event=start database is not initialised; run `sealpod kms init`")
    ssl_kwargs, scheme, cert_path = _tls(options)
    sock = _bind(options.host, options.port)
    port = sock.getsockname()[1]
    host_for_url = f"[{options.host}]" if ":" in options.host else options.host
    if options.host in ("0.0.0.0", "::"):  # noqa: S104 - only when the operator asked for it
        host_for_url = "127.0.0.1"
    info = {
        "url": f"{scheme}://{host_for_url}:{port}",
        "ca": str(cert_path) if cert_path else None,
        "identity": identity_of_pem(cert_path.read_bytes()) if cert_path else None,
        "pid": os.getpid(),
        "sealed": sealed,
        "workers": options.workers,
    }
    info_file = options.info_file or (kms_home() / SERVER_INFO)
    log.info(
        "event=start url=%s sealed=%s db=%s workers=%d",
        info["url"],
        sealed,
        store.dialect,
        options.workers,
    )
    # uvicorn re-raises SIGTERM once it has shut down; with this handler that ends in a clean
    # SystemExit, so the cleanup below runs (instead of the default handler killing us).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if app is not None:
            server = uvicorn.Server(_uvicorn_config(app, options, ssl_kwargs))
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(_run(server, sock, info_file, info))
        elif master is not None:  # several workers (the key was checked above)
            store.close()  # each worker opens its own after the fork
            _Supervisor(settings, verifier, options, master, sock, ssl_kwargs).run(
                lambda: _write_info(info_file, info)
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError):
            current = json.loads(info_file.read_text())
            if current.get("pid") == os.getpid():
                info_file.unlink()
        store.close()
        sock.close()
        log.info("event=stop")


def _tls(options: ServeOptions) -> tuple[dict[str, object], str, Path | None]:
    """uvicorn's TLS arguments, the URL scheme and the certificate path (None: plain HTTP)."""
    if options.insecure_http:
        return {}, "http", None
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    if options.tls_cert is not None and options.tls_key is not None:
        cert_path, key_path = options.tls_cert, options.tls_key
    else:
        cert_path, key_path = ensure_tls(kms_home() / "tls", host=options.host, dns=options.dns)
    return {"ssl_certfile": str(cert_path), "ssl_keyfile": str(key_path)}, "https", cert_path


def _uvicorn_config(
    app: FastAPI, options: ServeOptions, ssl_kwargs: dict[str, object]
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=options.log_level,
        log_config=None,  # uvicorn's records go through configure_logging's one format
        access_log=options.access_log,
        lifespan="off",
        server_header=False,
        # The KMS decides itself whether X-Forwarded-For is trusted (trust_forwarded_for);
        # uvicorn's own proxy handling would trust it from any loopback peer.
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        **ssl_kwargs,  # type: ignore[arg-type]
    )


class _Supervisor:
    """Pre-forked workers on one listening socket: start, restart the dead, stop on SIGTERM."""

    READY_TIMEOUT_SECS = 60.0
    MAX_RESTARTS = 10  # within RESTART_WINDOW_SECS; beyond that something is wrong: stop
    RESTART_WINDOW_SECS = 60.0

    def __init__(
        self,
        settings: KmsSettings,
        verifier: AttestationVerifier,
        options: ServeOptions,
        master: MasterKey,
        sock: socket.socket,
        ssl_kwargs: dict[str, object],
    ) -> None:
        self.settings, self.verifier, self.options = settings, verifier, options
        self.master, self.sock, self.ssl_kwargs = master, sock, ssl_kwargs
        self.children: dict[int, int] = {}  # pid -> worker number
        self.restarts: list[float] = []
        # One set of buckets for every worker (made before the forks that share it).
        self.limiter = SharedRateLimiter(settings.attest_rate_per_sec, settings.attest_burst)

    def run(self, on_ready: Callable[[], None]) -> None:
        # One set of metrics over every worker, whichever of them a scrape reaches.
        with share_across("kms"), self.limiter:
            self._run(on_ready)

    def _run(self, on_ready: Callable[[], None]) -> None:
        # Ctrl-C stops the workers the way SIGTERM does (as one uvicorn process would).
        previous = signal.signal(signal.SIGINT, _terminate)
        try:
            for n in range(self.options.workers):
                self._spawn(n)
            on_ready()
            while self.children:
                pid, status = os.wait()
                n = self.children.pop(pid, -1)
                if n < 0:
                    continue
                code = os.waitstatus_to_exitcode(status)
                log.warning("event=worker_exit worker=%d pid=%d code=%d", n, pid, code)
                process_exited(pid)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW_SECS]
                if len(self.restarts) >= self.MAX_RESTARTS:
                    raise ConfigError(
                        f"workers keep dying ({len(self.restarts)} restarts in "
                        f"{self.RESTART_WINDOW_SECS:.0f} s); stopping"
                    )
                self.restarts.append(now)
                self._spawn(n)
        finally:
            self._stop_all()
            signal.signal(signal.SIGINT, previous)

    def _spawn(self, n: int) -> None:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's stack
            os.close(ready_r)
            code = 1
            try:
                self._worker(ready_w)
                code = 0
            except BaseException as exc:
                if not isinstance(exc, SystemExit | KeyboardInterrupt):
                    log.error("event=worker_failed worker=%d error=%s", n, type(exc).__name__)
                else:
                    code = 0
            finally:
                os._exit(code)
        os.close(ready_w)
        self.children[pid] = n
        ready = _wait_readable(ready_r, self.READY_TIMEOUT_SECS)
        os.close(ready_r)
        if not ready:
            raise ConfigError(f"worker {n} (pid {pid}) did not start")
        log.info("event=worker_start worker=%d pid=%d", n, pid)

    def _worker(self, ready_fd: int) -> None:
        signal.signal(signal.SIGTERM, _terminate)
        store = Store.open(
            self.settings.resolved_db_url(), sqlite_synchronous=self.settings.sqlite_synchronous
        )
        try:
            app = create_app(
                self.settings,
                verifier=self.verifier,
                store=store,
                master_key=self.master,
                rate_limiter=self.limiter,
            )
            server = uvicorn.Server(_uvicorn_config(app, self.options, self.ssl_kwargs))

            async def run() -> None:
                task = asyncio.create_task(server.serve(sockets=[self.sock]))
                while not server.started and not task.done():
                    await asyncio.sleep(0.01)
                if server.started:
                    os.write(ready_fd, b"1")
                os.close(ready_fd)
                await task

            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(run())
        finally:
            store.close()

    def _stop_all(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.05)
            else:
                self.children.pop(pid, None)
        for pid in self.children:  # did not stop in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        self.children.clear()


def _wait_readable(fd: int, timeout: float) -> bool:
    """True once ``fd`` has a byte (a worker is serving), False on timeout or EOF."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) == b"1"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (about half the per-request CPU of asyncio's own,
    measured in bench/kms_bench.py), else None: asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
        return None
    return uvloop.new_event_loop


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


async def _run(
    server: uvicorn.Server, sock: socket.socket, info_file: Path, info: dict[str, object]
) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        _write_info(info_file, info)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: setattr(server, "should_exit", True))
    await task


def _write_info(path: Path, info: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, (json.dumps(info, indent=2) + "\n").encode())
    except OSError as exc:
        log.warning("event=server_info_unwritten path=%s reason=%s", path, exc.strerror)
