"""``mosquitto``: an MQTT broker over TLS (KMS-issued certificate), its password file made from
a KMS password at each start, persistence on an encrypted volume."""

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

DATA = "/var/lib/mosquitto"
ENTRY = f"{ENTRY_DIR}/sealpod-mosquitto-entry"
CONF = "/etc/mosquitto/sealpod.conf"

# mosquitto_passwd reads the password from stdin here, so it never is on a command line.
ENTRY_SCRIPT = (
    """#!/bin/sh
# sealpod catalog: mosquitto. The broker's password file is hashed at each start from the
# password the KMS provisions, into the sandbox's tmpfs.
set -eu
umask 077
"""
    + SHELL_READ_FN
    + f"""
read_password pw /run/secrets/mosquitto-password
mkdir -p /run/mosquitto
printf '%s\\n%s\\n' "$pw" "$pw" | mosquitto_passwd -c /run/mosquitto/passwd "$MQTT_USER" >/dev/null
exec mosquitto -c {CONF}
"""
)


def _config(values: Mapping[str, ParamValue]) -> str:
    return f"""# sealpod catalog: mosquitto
per_listener_settings false
allow_anonymous false
password_file /run/mosquitto/passwd
persistence true
persistence_location {DATA}/
autosave_interval {values["autosave_interval"]}
log_dest stderr
listener {values["port"]} 127.0.0.1
certfile /run/secrets/tls.crt
keyfile /run/secrets/tls.key
cafile /run/secrets/ca.crt
tls_version tlsv1.2
"""


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The mosquitto pod for ``values``."""
    name = str(values["name"])
    secrets = (
        password_secret(f"{name}-password", "password of the MQTT user (MQTT_USER)"),
        tls_secret(values),
    )
    parts = PodParts(
        title=f"Mosquitto from the sealpod catalog (instance {name})",
        entrypoint=ENTRY,
        user="mosquitto",
        env=(("MQTT_USER", str(values["mqtt_user"])),),
        files=(
            SecretFile(path="/run/secrets/mosquitto-password", secret=f"{name}-password"),
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
        recipe="mosquitto",
        spec_toml=spec_toml(parts),
        files=(
            RootfsFile(path=ENTRY, text=ENTRY_SCRIPT, mode=0o755),
            RootfsFile(path=CONF, text=_config(values)),
        ),
        dirs=(DATA,),
        secrets=secrets,
        volumes=((name, DATA),),
        ports=(("mqtts", int(values["port"])),),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="mosquitto",
    summary="Mosquitto MQTT broker: TLS and a password from the KMS, persistence on a volume",
    packages=("mosquitto",),
    user="mosquitto",
    params=(
        Param(name="port", kind="port", default=18883, help="MQTT over TLS port on 127.0.0.1"),
        Param(name="mqtt_user", kind="name", default="app", help="the MQTT user"),
        Param(
            name="autosave_interval",
            kind="int",
            default=60,
            help="seconds between saves of the in-memory store (and at shutdown)",
        ),
        *common_params("mosquitto", 0x5205),
    ),
    render=render,
)
