"""``redis``: requirepass from the KMS, AOF on an encrypted volume, a TLS port with a
KMS-issued certificate."""

from __future__ import annotations

from collections.abc import Mapping

from sealpod.catalog.model import Layout, Param, ParamValue, Recipe, RootfsFile
from sealpod.catalog.recipes._common import (
    ALL_BACKENDS,
    ENTRY_DIR,
    SHELL_READ_FN,
    common_params,
    password_secret,
    tls_files,
    tls_secret,
)
from sealpod.catalog.spec import PodParts, SecretFile, spec_toml

DATA = "/var/lib/redis"
ENTRY = f"{ENTRY_DIR}/sealpod-redis-entry"
CONF = "/etc/redis/sealpod.conf"

ENTRY_SCRIPT = (
    """#!/bin/sh
# sealpod catalog: redis. The password arrives from the KMS as a file on the sandbox's tmpfs;
# it is written into an include file there (never on the measured root or the volume).
set -eu
umask 077
"""
    + SHELL_READ_FN
    + f"""
read_password pw /run/secrets/redis-password
mkdir -p /run/redis
printf 'requirepass "%s"\\nmasterauth "%s"\\n' "$pw" "$pw" > /run/redis/secrets.conf
exec redis-server {CONF}
"""
)


def _config(values: Mapping[str, ParamValue]) -> str:
    aof = values["appendonly"] == "yes"
    return f"""# sealpod catalog: redis. Secrets are included from the sandbox's tmpfs.
bind 127.0.0.1
protected-mode yes
port {values["port"]}
tls-port {values["tls_port"]}
tls-cert-file /run/secrets/tls.crt
tls-key-file /run/secrets/tls.key
tls-ca-cert-file /run/secrets/ca.crt
tls-auth-clients no
daemonize no
supervised no
logfile ""
dir {DATA}
save ""
appendonly {"yes" if aof else "no"}
appendfsync everysec
appenddirname "appendonlydir"
include /run/redis/secrets.conf
"""


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The redis pod for ``values``."""
    name = str(values["name"])
    secrets = (
        password_secret(f"{name}-password", "requirepass (clients AUTH with it)"),
        tls_secret(values),
    )
    parts = PodParts(
        title=f"redis from the sealpod catalog (instance {name})",
        entrypoint=ENTRY,
        user="redis",
        files=(
            SecretFile(path="/run/secrets/redis-password", secret=f"{name}-password"),
            *tls_files(values),
        ),
        volumes=((name, DATA),),
        rollback_window_ms=int(values["rollback_window_ms"]),
        ready_tcp=f"127.0.0.1:{values['port']}",
        product_id=int(values["product_id"]),
        memory=str(values["memory"]),
        backends=ALL_BACKENDS,
    )
    return Layout(
        recipe="redis",
        spec_toml=spec_toml(parts),
        files=(
            RootfsFile(path=ENTRY, text=ENTRY_SCRIPT, mode=0o755),
            RootfsFile(path=CONF, text=_config(values)),
        ),
        dirs=(DATA,),
        secrets=secrets,
        volumes=((name, DATA),),
        ports=(("redis", int(values["port"])), ("redis-tls", int(values["tls_port"]))),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="redis",
    summary="Redis key-value store: requirepass from the KMS, AOF on an encrypted volume, TLS port",
    packages=("redis-server",),
    user="redis",
    params=(
        Param(name="port", kind="port", default=16379, help="plain port on 127.0.0.1"),
        Param(name="tls_port", kind="port", default=16380, help="TLS port on 127.0.0.1"),
        Param(
            name="appendonly",
            kind="yesno",
            default="yes",
            help="yes: AOF (appendfsync everysec) on the volume; no: persistence off",
        ),
        *common_params("redis", 0x5201),
    ),
    render=render,
)
