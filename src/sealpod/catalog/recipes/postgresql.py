"""``postgresql``: superuser password from the KMS, ``initdb`` on first start inside the
sandbox, data on an encrypted volume, TLS with a KMS-issued certificate."""

from __future__ import annotations

from collections.abc import Mapping

from sealpod.catalog.model import Layout, Param, ParamValue, Recipe, RootfsFile
from sealpod.catalog.recipes._common import (
    ALL_BACKENDS,
    ENTRY_DIR,
    common_params,
    password_secret,
    tls_files,
    tls_secret,
)
from sealpod.catalog.spec import PodParts, SecretFile, spec_toml

VOLUME = "/var/lib/postgresql"
PGDATA = f"{VOLUME}/data"
ENTRY = f"{ENTRY_DIR}/sealpod-postgresql-entry"
CONF = "/etc/postgresql/sealpod.conf"
HBA = "/etc/postgresql/sealpod_hba.conf"

ENTRY_SCRIPT = f"""#!/bin/sh
# sealpod catalog: postgresql. First start: initdb on the encrypted volume, with the superuser
# password read from the KMS-provisioned file (never from the image). Then the server.
set -eu
umask 077
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && PATH="$d:$PATH"; done
export PATH
if [ ! -s {PGDATA}/PG_VERSION ]; then
  echo "sealpod entry: initialising {PGDATA} (first start)" >&2
  mkdir -p {PGDATA}
  chmod 700 {PGDATA}
  initdb -D {PGDATA} -U "$PG_SUPERUSER" --pwfile=/run/secrets/postgres-password \\
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C >/dev/null
fi
mkdir -p /run/postgresql
exec postgres -D {PGDATA} -c config_file={CONF}
"""

HBA_TEXT = """# sealpod catalog: passwords (SCRAM) everywhere; TCP only over TLS.
local    all  all                 scram-sha-256
hostssl  all  all  127.0.0.1/32   scram-sha-256
hostssl  all  all  ::1/128        scram-sha-256
"""


def _config(values: Mapping[str, ParamValue]) -> str:
    return f"""# sealpod catalog: postgresql
data_directory = '{PGDATA}'
hba_file = '{HBA}'
listen_addresses = '127.0.0.1'
port = {values["port"]}
max_connections = {values["max_connections"]}
unix_socket_directories = '/run/postgresql'
shared_buffers = '{values["shared_buffers"]}B'
commit_delay = {values["commit_delay"]}
dynamic_shared_memory_type = mmap
ssl = on
ssl_cert_file = '/run/secrets/tls.crt'
ssl_key_file = '/run/secrets/tls.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = scram-sha-256
logging_collector = off
log_destination = 'stderr'
datestyle = 'iso, mdy'
timezone = 'UTC'
lc_messages = 'C'
"""


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The postgresql pod for ``values``."""
    name = str(values["name"])
    secrets = (
        password_secret(f"{name}-password", "password of the superuser (PG_SUPERUSER)"),
        tls_secret(values),
    )
    parts = PodParts(
        title=f"PostgreSQL from the sealpod catalog (instance {name})",
        entrypoint=ENTRY,
        user="postgres",
        env=(("PG_SUPERUSER", str(values["superuser"])),),
        files=(
            SecretFile(path="/run/secrets/postgres-password", secret=f"{name}-password"),
            *tls_files(values),
        ),
        volumes=((name, VOLUME),),
        rollback_window_ms=int(values["rollback_window_ms"]),
        ready_tcp=f"127.0.0.1:{values['port']}",
        product_id=int(values["product_id"]),
        memory=str(values["memory"]),
        backends=ALL_BACKENDS,
    )
    return Layout(
        recipe="postgresql",
        spec_toml=spec_toml(parts),
        files=(
            RootfsFile(path=ENTRY, text=ENTRY_SCRIPT, mode=0o755),
            RootfsFile(path=CONF, text=_config(values)),
            RootfsFile(path=HBA, text=HBA_TEXT),
        ),
        dirs=(VOLUME,),
        secrets=secrets,
        volumes=((name, VOLUME),),
        ports=(("postgresql", int(values["port"])),),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="postgresql",
    summary="PostgreSQL 15: initdb on first start, data on an encrypted volume, TLS, SCRAM",
    packages=("postgresql-15",),
    user="postgres",
    params=(
        Param(name="port", kind="port", default=15432, help="TLS-only TCP port on 127.0.0.1"),
        Param(name="superuser", kind="name", default="postgres", help="the superuser's name"),
        Param(name="shared_buffers", kind="size", default="128M", help="shared_buffers"),
        Param(name="max_connections", kind="int", default=100, help="max_connections"),
        Param(
            name="commit_delay",
            kind="int",
            default=0,
            help="commit_delay in microseconds: wait this long before a WAL flush so that "
            "concurrent commits share it (PostgreSQL's advice where fsync is slow)",
            maximum=100_000,
        ),
        *common_params("postgresql", 0x5202, memory="1G"),
    ),
    render=render,
    # postgresql-15's install script creates a "main" cluster (random system id, no password):
    # the entry makes its own on the volume at the first start.
    build_remove=("var/lib/postgresql/15", "etc/postgresql/15"),
)
