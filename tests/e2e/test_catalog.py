"""Each catalog entry end to end, as a user runs it: `sealpod catalog build` (Debian rootfs by
mmdebstrap), its secrets and its own sample policy in a real KMS on 127.0.0.1, `sealpod run
--tee sim --network host`, the software's real client over TLS checked against the KMS CA: a
value written, the pod stopped with SIGTERM, the value found nowhere in plaintext in the volume
directory, the pod started again and the value read back. A policy that does not allow the
bundle keeps the service from starting."""

from __future__ import annotations

import secrets
import socket
import ssl
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_harness import Entry, build_and_provision, plaintext_hits, run_refused, start
from pod_harness import (
    Kms,
    cli,
    events,
    kms_fixture,  # noqa: F401 (the kms fixture)
)

pytestmark = pytest.mark.slow


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


# --- the software's own clients: write(entry, marker) and read(entry) -> marker or None ------
def _redis(entry: Entry, tls: bool = True) -> Any:
    import redis

    values = entry.build.layout.ports
    port = dict(values)["redis-tls" if tls else "redis"]
    password = entry.secret(f"{entry.name}-password")
    if tls:
        return redis.Redis(host="127.0.0.1", port=port, password=password, ssl=True,
                           ssl_ca_certs=str(entry.ca_file), ssl_check_hostname=True,
                           socket_timeout=30)  # fmt: skip
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=30)


def redis_write(entry: Entry, marker: str) -> None:
    client = _redis(entry)
    client.set("catalog-key", marker)
    assert client.get("catalog-key") == marker.encode()
    plain = _redis(entry, tls=False)
    assert plain.ping()
    client.close()
    plain.close()


def redis_read(entry: Entry) -> str | None:
    client = _redis(entry)
    value = client.get("catalog-key")
    client.close()
    return None if value is None else bytes(value).decode()


def redis_refuses_a_wrong_password(entry: Entry) -> None:
    import redis

    port = dict(entry.build.layout.ports)["redis"]
    client = redis.Redis(host="127.0.0.1", port=port, password="wrong")
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()
    client.close()


def _mariadb(entry: Entry) -> Any:
    import pymysql

    return pymysql.connect(
        host="127.0.0.1", port=dict(entry.build.layout.ports)["mariadb"], user="app",
        password=entry.secret(f"{entry.name}-app-password"), database="app",
        ssl_ca=str(entry.ca_file), ssl_verify_cert=True, ssl_verify_identity=True,
        connect_timeout=30,
    )  # fmt: skip


def mariadb_write(entry: Entry, marker: str) -> None:
    conn = _mariadb(entry)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS notes (v VARCHAR(200))")
        cur.execute("INSERT INTO notes VALUES (%s)", (marker,))
        cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1], "the connection is not encrypted"
    conn.commit()
    conn.close()


def mariadb_read(entry: Entry) -> str | None:
    conn = _mariadb(entry)
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM notes")
        row = cur.fetchone()
    conn.close()
    return None if row is None else str(row[0])


def mariadb_refuses_a_wrong_password(entry: Entry) -> None:
    import pymysql

    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=dict(entry.build.layout.ports)["mariadb"],
                        user="root", password="wrong", connect_timeout=10)  # fmt: skip


def _pg(entry: Entry, password: str | None = None) -> Any:
    import psycopg

    for _ in range(60):  # the port answers while the server still says "starting up"
        try:
            return _pg_once(entry, password)
        except psycopg.OperationalError as exc:
            if "starting up" not in str(exc):
                raise
            time.sleep(0.5)
    return _pg_once(entry, password)


def _pg_once(entry: Entry, password: str | None) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=dict(entry.build.layout.ports)["postgresql"], user="postgres",
        password=password or entry.secret(f"{entry.name}-password"), dbname="postgres",
        sslmode="verify-full", sslrootcert=str(entry.ca_file), connect_timeout=30,
    )  # fmt: skip


def postgresql_write(entry: Entry, marker: str) -> None:
    with _pg(entry) as conn:
        conn.execute("CREATE TABLE notes (v text)")
        conn.execute("INSERT INTO notes VALUES (%s)", (marker,))
        conn.execute("CHECKPOINT")  # the heap page on the volume, not only in the WAL


def postgresql_read(entry: Entry) -> str | None:
    with _pg(entry) as conn:
        row = conn.execute("SELECT v FROM notes").fetchone()
    return None if row is None else str(row[0])


def postgresql_refuses_a_wrong_password(entry: Entry) -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError):
        _pg(entry, password="wrong")


def _https(entry: Entry) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(entry.ca_file))
    return httpx.Client(verify=context, timeout=30)


def nginx_write(entry: Entry, marker: str) -> None:
    port = dict(entry.build.layout.ports)["https"]
    auth = ("uploader", entry.secret(f"{entry.name}-password"))
    with _https(entry) as client:
        index = client.get(f"https://127.0.0.1:{port}/")
        assert index.status_code == 200 and "sealed, measured bundle" in index.text
        put = client.put(f"https://127.0.0.1:{port}/files/note.txt", content=marker, auth=auth)
        assert put.status_code in (201, 204), put.text


def nginx_read(entry: Entry) -> str | None:
    port = dict(entry.build.layout.ports)["https"]
    auth = ("uploader", entry.secret(f"{entry.name}-password"))
    with _https(entry) as client:
        got = client.get(f"https://127.0.0.1:{port}/files/note.txt", auth=auth)
    return got.text if got.status_code == 200 else None


def nginx_refuses_a_wrong_password(entry: Entry) -> None:
    port = dict(entry.build.layout.ports)["https"]
    with _https(entry) as client:
        got = client.put(f"https://127.0.0.1:{port}/files/x", content=b"x", auth=("uploader", "no"))
    assert got.status_code == 401


def python_write(entry: Entry, marker: str) -> None:
    port = dict(entry.build.layout.ports)["https"]
    auth = ("app", entry.secret(f"{entry.name}-db-password"))
    with _https(entry) as client:
        put = client.put(f"https://127.0.0.1:{port}/kv/note", content=marker, auth=auth)
        assert put.status_code == 204, put.text


def python_read(entry: Entry) -> str | None:
    port = dict(entry.build.layout.ports)["https"]
    auth = ("app", entry.secret(f"{entry.name}-db-password"))
    with _https(entry) as client:
        got = client.get(f"https://127.0.0.1:{port}/kv/note", auth=auth)
    return got.text if got.status_code == 200 else None


def python_refuses_a_wrong_password(entry: Entry) -> None:
    port = dict(entry.build.layout.ports)["https"]
    with _https(entry) as client:
        assert (
            client.get(f"https://127.0.0.1:{port}/kv/note", auth=("app", "no")).status_code == 401
        )


def _mqtt(entry: Entry, password: str | None = None) -> tuple[Any, int]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=secrets.token_hex(6))
    client.tls_set(ca_certs=str(entry.ca_file))
    client.username_pw_set("app", password or entry.secret(f"{entry.name}-password"))
    return client, dict(entry.build.layout.ports)["mqtts"]


def mosquitto_write(entry: Entry, marker: str) -> None:
    client, port = _mqtt(entry)
    client.connect("127.0.0.1", port)
    client.loop_start()
    info = client.publish("catalog/note", marker, qos=1, retain=True)
    info.wait_for_publish(timeout=30)
    assert info.is_published()
    client.disconnect()
    client.loop_stop()


def mosquitto_read(entry: Entry) -> str | None:
    client, port = _mqtt(entry)
    got: list[str] = []
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        got.append(msg.payload.decode())
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("catalog/note", qos=1)
    client.loop_start()
    done.wait(20)
    client.disconnect()
    client.loop_stop()
    return got[0] if got else None


def mosquitto_refuses_a_wrong_password(entry: Entry) -> None:
    client, port = _mqtt(entry, password="wrong")
    rc = client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for _ in range(100):
            if client.is_connected():
                break
            threading.Event().wait(0.1)
        assert rc != 0 or not client.is_connected()
    finally:
        client.disconnect()
        client.loop_stop()


Client = tuple[Callable[[Entry, str], None], Callable[[Entry], str | None], Callable[[Entry], None]]
CLIENTS: dict[str, Client] = {
    "redis": (redis_write, redis_read, redis_refuses_a_wrong_password),
    "mariadb": (mariadb_write, mariadb_read, mariadb_refuses_a_wrong_password),
    "postgresql": (postgresql_write, postgresql_read, postgresql_refuses_a_wrong_password),
    "nginx": (nginx_write, nginx_read, nginx_refuses_a_wrong_password),
    "mosquitto": (mosquitto_write, mosquitto_read, mosquitto_refuses_a_wrong_password),
    "python": (python_write, python_read, python_refuses_a_wrong_password),
}


@pytest.mark.parametrize("name", list(CLIENTS))
def test_entry_serves_keeps_its_data_encrypted_and_refuses_a_bundle_its_policy_does_not_allow(
    tmp_path: Path, kms: Kms, name: str
) -> None:
    write, read, refuses = CLIENTS[name]
    entry = build_and_provision(tmp_path, kms, name)
    ready_port = int(entry.build.layout.ready_tcp.rsplit(":", 1)[1])

    # A policy that pins another signer: the KMS refuses, the service never starts.
    other = entry.build.policy_path.read_text().replace(entry.pod.signer, "0" * 64)
    wrong = tmp_path / "wrong-policy.toml"
    wrong.write_text(other)
    cli("kms", "policy", "put", entry.policy_name, str(wrong))
    refused = run_refused(entry)
    assert refused.returncode == 13, refused.stderr[-2000:]
    assert any(e.get("event") == "error" for e in events(refused.stderr))
    assert _port_closed(ready_port)
    cli("kms", "policy", "put", entry.policy_name, str(entry.build.policy_path))

    marker = f"catalog-marker-{secrets.token_hex(12)}"
    first = start(entry)
    try:
        write(entry, marker)
        refuses(entry)
    finally:
        code = first.stop()
    assert code == 0, first.log()
    assert _port_closed(ready_port)
    assert entry.volume_dir.is_dir()
    assert plaintext_hits(entry.volume_dir, marker.encode()) == []

    second = start(entry)
    try:
        assert read(entry) == marker
    finally:
        assert second.stop() == 0, second.log()


def test_redis_from_an_oci_archive_of_the_debian_rootfs(tmp_path: Path, kms: Kms) -> None:
    """Path (b): the same recipe applied to an image archive (here made from path (a))."""
    from catalog_harness import CACHE

    from sealpod.build.oci import write_oci_layout
    from sealpod.catalog.recipes import get_recipe
    from sealpod.catalog.rootfs import debian_rootfs

    base = debian_rootfs(get_recipe("redis"), CACHE)
    layout_dir = tmp_path / "redis-oci"
    write_oci_layout(base.path, layout_dir, annotations={"org.opencontainers.image.title": "r"})
    archive = tmp_path / "redis-oci.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(layout_dir, arcname=".")
    entry = build_and_provision(tmp_path, kms, "redis", ["port=16391", "tls_port=16392"],
                                image=archive)  # fmt: skip
    assert entry.build.source.kind == "image"
    marker = f"oci-marker-{secrets.token_hex(8)}"
    running = start(entry)
    try:
        redis_write(entry, marker)
        assert redis_read(entry) == marker
    finally:
        assert running.stop() == 0, running.log()


def test_nginx_with_ratls_is_reached_only_as_the_attested_pod(tmp_path: Path, kms: Kms) -> None:
    """nginx serves the RA-TLS certificate `sealpod run` issued at start ([runtime] ratls); a
    client with sealpod's RA-TLS transport accepts it for this bundle's measurement and refuses
    it for another, before sending a byte."""
    from datetime import UTC, datetime

    from sealpod.errors import PolicyViolation
    from sealpod.policy.model import Policy
    from sealpod.ratls.client import RaTlsPeerVerifier, RaTlsTransport
    from sealpod.tee.sim import SimPlatform

    entry = build_and_provision(tmp_path, kms, "nginx", ["ratls=yes", "port=18453"])
    sim = SimPlatform.load(None)

    def client(measurement: str) -> httpx.Client:
        verifier = RaTlsPeerVerifier(
            policy=Policy(allow_simulation=True, measurements=[measurement]),
            trust=sim.trust_anchors(),
            dcap_collateral=sim.dcap_collateral(now=datetime.now(UTC)),
        )
        return httpx.Client(transport=RaTlsTransport(verifier), timeout=30)

    running = start(entry)
    try:
        with client(entry.pod.measurement) as attested:
            index = attested.get("https://127.0.0.1:18453/")
        assert index.status_code == 200 and "sealed, measured bundle" in index.text
        with client("00" * 32) as other, pytest.raises(PolicyViolation):
            other.get("https://127.0.0.1:18453/")
    finally:
        assert running.stop() == 0, running.log()
