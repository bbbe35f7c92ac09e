"""The example ``sealpod.toml`` and tiny sample rootfs that ``sealpod init`` writes.

The example is meant to be read: every section is present and commented, and it builds as is
(``sealpod keygen -o k.pem && sealpod init demo && sealpod build --spec demo/sealpod.toml
--key k.pem -o out``). The sample app is a shell script and its config; the rootfs carries no
shell of its own, so running it needs a base image (see docs/bundles.md).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sealpod import _files
from sealpod.errors import ConfigError

EXAMPLE_SPEC = """\
# sealpod.toml - the pod spec: what `sealpod build` seals into a signed bundle.
# Every key is checked: an unknown key or a wrong type is an error, so typos fail closed.

[image]
# A rootfs directory, a `docker save` / `podman save` archive, or an OCI image layout
# (directory or tar). A relative path is relative to this file.
source = "rootfs"

[process]
entrypoint = "/app/bin/hello"             # absolute path inside the image
args = ["/app/etc/greeting.conf"]
workdir = "/app"
user = "1000:1000"                        # UID[:GID], or a user name from the image

[process.env]
GREETING_STYLE = "plain"                  # a literal: part of the measurement
API_TOKEN = { secret = "api-token" }      # filled at run time by the KMS, never in the bundle

# Files provisioned at run time from KMS secrets, in memory, never on the host's disk.
# They live in /run, /tmp or a [runtime] tmpfs path, owned by the process's user.
[[files]]
path = "/run/secrets/tls.key"
secret = "tls-key"
mode = 0o400
# field = "key"                           # one member of a JSON secret: key, cert or ca

[trusted]
# Hashed into the manifest and read-only at run time. Default: the whole image.
paths = ["/"]

# Encrypted volumes: a name (its key comes from the KMS) and a mount point.
[[volumes]]
path = "/data"
name = "app-data"

[tee]
# "sim" is for development: it gives NO hardware protection, and every verifier refuses it
# unless its policy says allow_simulation = true.
backends = ["sgx", "snp", "tdx", "sim"]
memory = "512M"
threads = 4
debug = false                             # a debug enclave can be read by the host

[identity]
# Policies can pin signer + product_id + a minimum svn; raise svn for every security fix.
product_id = 1
svn = 1

# How `sealpod run` lays out the sandbox. The image's root is read-only; /tmp and /run are
# private tmpfs mounts.
# [runtime]
# tmpfs = ["/var/cache/app"]              # more writable in-memory directories
# ready_tcp = "127.0.0.1:8080"            # `sealpod run` reports "ready" once this port answers
# insecure__use_cmdline_argv = false      # true: the host may append arguments (not measured)
# ratls = "/run/ratls"                    # an RA-TLS key.pem + cert.pem issued at every start

# The key broker that provisions this pod, pinned by the SHA-256 of its public key.
# [kms]
# url = "https://kms.example.com:8443"
# identity = "<64 hex digits>"
"""

_HELLO = """\
#!/bin/sh
# Sample workload: prints the greeting from its config file.
conf="${1:-/app/etc/greeting.conf}"
. "$conf"
echo "${GREETING:-hello} from a sealed pod (style: ${GREETING_STYLE:-none})"
"""

_CONF = """\
# Read by /app/bin/hello. Part of the measurement: change it and the bundle's identity changes.
GREETING="hello"
"""

_README = "A tiny sample app for sealpod. Its files are trusted: sealpod hashes every one.\n"

#: (path inside the rootfs, mode, content); ``None`` content means a directory.
SAMPLE_ROOTFS: tuple[tuple[str, int, str | None], ...] = (
    ("app", 0o755, None),
    ("app/bin", 0o755, None),
    ("app/bin/hello", 0o755, _HELLO),
    ("app/etc", 0o755, None),
    ("app/etc/greeting.conf", 0o644, _CONF),
    ("app/README.txt", 0o644, _README),
    ("data", 0o755, None),  # mount point of the app-data volume: stays empty
)


def write_example(directory: Path, *, force: bool = False) -> list[Path]:
    """Write ``sealpod.toml`` and ``rootfs/`` (with the sample app) into ``directory``.

    Returns the paths written. Modes are set explicitly, so the umask does not change the
    sample's measurement.

    Raises:
        ConfigError: ``sealpod.toml`` or ``rootfs/`` already exists (and ``force`` is false),
            or the directory cannot be written.
    """
    spec_path = directory / "sealpod.toml"
    rootfs = directory / "rootfs"
    if not force:
        for existing in (spec_path, rootfs):
            if existing.exists() or existing.is_symlink():
                raise ConfigError(f"{existing} already exists; use --force to overwrite it")
    written: list[Path] = []
    fds: dict[str, int] = {}
    try:
        # Everything below ``directory`` is reached through descriptors and never through a
        # symlink: one planted in a shared directory is refused, its target left alone.
        directory.mkdir(parents=True, exist_ok=True)
        fds["."] = _files.open_dir(directory)
        _put_file(fds["."], "sealpod.toml", EXAMPLE_SPEC.encode(), 0o644, force=force)
        written.append(spec_path)
        fds[""] = _files.open_subdir(fds["."], "rootfs", create=True, mode=0o755)
        os.fchmod(fds[""], 0o755)
        for rel, mode, content in SAMPLE_ROOTFS:
            parent, _, name = rel.rpartition("/")
            if content is None:
                fds[rel] = _files.open_subdir(fds[parent], name, create=True, mode=mode)
                os.fchmod(fds[rel], mode)
            else:
                _put_file(fds[parent], name, content.encode(), mode, force=True)
            written.append(rootfs / rel)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("hi", dir_fd=fds["app/bin"])
        os.symlink("hello", "hi", dir_fd=fds["app/bin"])  # recorded by its target
        written.append(rootfs / "app/bin/hi")
    except OSError as exc:
        raise ConfigError(f"cannot write the example into {directory}: {exc}") from exc
    finally:
        for fd in fds.values():
            os.close(fd)
    return written


def _put_file(dir_fd: int, name: str, data: bytes, mode: int, *, force: bool) -> None:
    """Create ``name`` exclusively (after removing an old one when ``force``), with ``mode``
    regardless of the umask.

    Raises:
        OSError: it exists (without ``force``), is a directory, or cannot be written.
    """
    if force:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)  # a planted symlink goes, its target stays
    fd = _files.create_new(dir_fd, name, mode=mode)
    try:
        _files.write_all(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
