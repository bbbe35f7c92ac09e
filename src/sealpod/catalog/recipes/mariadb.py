"""``mariadb``: root and one application user's passwords from the KMS, the datadir on an
encrypted volume, first-start initialisation (``mariadb-install-db``) inside the sandbox."""

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

DATADIR = "/var/lib/mysql"
ENTRY = f"{ENTRY_DIR}/sealpod-mariadb-entry"
CONF = "/etc/mysql/sealpod.cnf"

# The init file is rebuilt from the KMS's passwords at every start (a rotated password takes
# effect at the next start); it lives on the sandbox's tmpfs only.
ENTRY_SCRIPT = (
    """#!/bin/sh
# sealpod catalog: mariadb. First start: mariadb-install-db on the encrypted volume. Every
# start: the root and application passwords from the KMS are (re)applied by an init file.
set -eu
umask 077
"""
    + SHELL_READ_FN
    + f"""
read_password root_pw /run/secrets/mariadb-root-password
read_password app_pw /run/secrets/mariadb-app-password
mkdir -p /run/mysqld
if [ ! -d {DATADIR}/mysql ]; then
  echo "sealpod entry: initialising {DATADIR} (first start)" >&2
  # --force: the sandbox has no resolvable host name, and names are never resolved here.
  mariadb-install-db --defaults-file={CONF} --auth-root-authentication-method=normal \\
    --skip-test-db --skip-name-resolve --force >&2
fi
cat > /run/mysqld/init.sql <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '$root_pw';
CREATE DATABASE IF NOT EXISTS \\`$APP_DATABASE\\`;
CREATE USER IF NOT EXISTS '$APP_USER'@'%' IDENTIFIED BY '$app_pw';
ALTER USER '$APP_USER'@'%' IDENTIFIED BY '$app_pw';
GRANT ALL PRIVILEGES ON \\`$APP_DATABASE\\`.* TO '$APP_USER'@'%';
SQL
exec mariadbd --defaults-file={CONF} --init-file=/run/mysqld/init.sql
"""
)


def _config(values: Mapping[str, ParamValue]) -> str:
    return f"""# sealpod catalog: mariadb
[mariadbd]
datadir = {DATADIR}
socket = /run/mysqld/mysqld.sock
pid-file = /run/mysqld/mysqld.pid
tmpdir = /tmp
bind-address = 127.0.0.1
port = {values["port"]}
skip-name-resolve
innodb_buffer_pool_size = {values["buffer_pool"]}
# The encrypted volume is a FUSE file system: no O_DIRECT, no native AIO.
innodb_flush_method = fsync
innodb_use_native_aio = 0
ssl_cert = /run/secrets/tls.crt
ssl_key = /run/secrets/tls.key
ssl_ca = /run/secrets/ca.crt
"""


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The mariadb pod for ``values``."""
    name = str(values["name"])
    secrets = (
        password_secret(f"{name}-root-password", "password of root@localhost"),
        password_secret(f"{name}-app-password", "password of the application user (APP_USER)"),
        tls_secret(values),
    )
    parts = PodParts(
        title=f"MariaDB from the sealpod catalog (instance {name})",
        entrypoint=ENTRY,
        user="mysql",
        env=(("APP_USER", str(values["app_user"])), ("APP_DATABASE", str(values["database"]))),
        files=(
            SecretFile(path="/run/secrets/mariadb-root-password", secret=f"{name}-root-password"),
            SecretFile(path="/run/secrets/mariadb-app-password", secret=f"{name}-app-password"),
            *tls_files(values),
        ),
        volumes=((name, DATADIR),),
        rollback_window_ms=int(values["rollback_window_ms"]),
        ready_tcp=f"127.0.0.1:{values['port']}",
        product_id=int(values["product_id"]),
        memory=str(values["memory"]),
        backends=ALL_BACKENDS,
    )
    return Layout(
        recipe="mariadb",
        spec_toml=spec_toml(parts),
        files=(
            RootfsFile(path=ENTRY, text=ENTRY_SCRIPT, mode=0o755),
            RootfsFile(path=CONF, text=_config(values)),
        ),
        dirs=(DATADIR,),
        secrets=secrets,
        volumes=((name, DATADIR),),
        ports=(("mariadb", int(values["port"])),),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="mariadb",
    summary="MariaDB 10.11: root + app user passwords from the KMS, datadir on an encrypted volume",
    packages=("mariadb-server-core", "mariadb-client-core"),
    user="mysql",
    params=(
        Param(name="port", kind="port", default=13306, help="TCP port on 127.0.0.1"),
        Param(name="app_user", kind="name", default="app", help="the application user"),
        Param(name="database", kind="name", default="app", help="the application's database"),
        Param(name="buffer_pool", kind="size", default="128M", help="innodb_buffer_pool_size"),
        *common_params("mariadb", 0x5203, memory="1G"),
    ),
    render=render,
)
