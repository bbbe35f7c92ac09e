"""``nginx``: HTTPS with a certificate and key the KMS CA issues for the configured names;
static content measured in the bundle; uploads (WebDAV PUT, basic auth with a KMS password)
kept on an encrypted volume."""

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

FILES = "/srv/files"
WWW = "/srv/www"
ENTRY = f"{ENTRY_DIR}/sealpod-nginx-entry"
CONF = "/etc/nginx/sealpod.conf"

ENTRY_SCRIPT = (
    """#!/bin/sh
# sealpod catalog: nginx. The upload password from the KMS becomes an htpasswd file on the
# sandbox's tmpfs ({PLAIN} scheme: the file never leaves memory). nginx runs unprivileged.
set -eu
umask 077
"""
    + SHELL_READ_FN
    + f"""
read_password pw /run/secrets/nginx-password
mkdir -p /run/nginx /tmp/nginx
printf '%s:{{PLAIN}}%s\\n' "$UPLOAD_USER" "$pw" > /run/nginx/htpasswd
exec nginx -e stderr -c {CONF}
"""
)

INDEX = """<!doctype html>
<title>sealpod catalog: nginx</title>
<p>Served from a sealed, measured bundle, over TLS with a certificate issued by the KMS.</p>
"""


def _config(values: Mapping[str, ParamValue]) -> str:
    names = " ".join(str(values["dns"]).split(","))
    return f"""# sealpod catalog: nginx (unprivileged: no user directive, temp files on tmpfs)
worker_processes {values["workers"]};
pid /run/nginx/nginx.pid;
error_log stderr notice;
daemon off;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    server_tokens off;
    client_body_temp_path /tmp/nginx/body;
    proxy_temp_path /tmp/nginx/proxy;
    fastcgi_temp_path /tmp/nginx/fastcgi;
    uwsgi_temp_path /tmp/nginx/uwsgi;
    scgi_temp_path /tmp/nginx/scgi;
    client_max_body_size {values["max_upload"]};
    server {{
        listen 127.0.0.1:{values["port"]} ssl;
        server_name {names};
        ssl_certificate {_cert(values)[0]};
        ssl_certificate_key {_cert(values)[1]};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {WWW};
        location / {{ try_files $uri $uri/ =404; }}
        location /files/ {{
            root /srv;
            auth_basic "sealpod";
            auth_basic_user_file /run/nginx/htpasswd;
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
    }}
}}
"""


RATLS_DIR = "/run/ratls"


def _cert(values: Mapping[str, ParamValue]) -> tuple[str, str]:
    """(certificate, key): the KMS CA's, or with ``ratls=yes`` the RA-TLS pair sealpod run
    issues at start, whose evidence binds the key (clients check it with sealpod ratls)."""
    if values["ratls"] == "yes":
        return f"{RATLS_DIR}/cert.pem", f"{RATLS_DIR}/key.pem"
    return "/run/secrets/tls.crt", "/run/secrets/tls.key"


def render(values: Mapping[str, ParamValue]) -> Layout:
    """The nginx pod for ``values``."""
    name = str(values["name"])
    ratls = values["ratls"] == "yes"
    secrets = (
        password_secret(f"{name}-password", "basic-auth password for uploads to /files/"),
        *(() if ratls else (tls_secret(values),)),
    )
    parts = PodParts(
        title=f"nginx from the sealpod catalog (instance {name})",
        entrypoint=ENTRY,
        user="www-data",
        env=(("UPLOAD_USER", str(values["upload_user"])),),
        files=(
            SecretFile(path="/run/secrets/nginx-password", secret=f"{name}-password"),
            *(() if ratls else tls_files(values)),
        ),
        ratls=RATLS_DIR if ratls else None,
        volumes=((name, FILES),),
        rollback_window_ms=int(values["rollback_window_ms"]),
        ready_tcp=f"127.0.0.1:{values['port']}",
        product_id=int(values["product_id"]),
        memory=str(values["memory"]),
        backends=ALL_BACKENDS,
    )
    return Layout(
        recipe="nginx",
        spec_toml=spec_toml(parts),
        files=(
            RootfsFile(path=ENTRY, text=ENTRY_SCRIPT, mode=0o755),
            RootfsFile(path=CONF, text=_config(values)),
            RootfsFile(path=f"{WWW}/index.html", text=INDEX),
        ),
        dirs=(FILES, WWW),
        secrets=secrets,
        volumes=((name, FILES),),
        ports=(("https", int(values["port"])),),
        ready_tcp=parts.ready_tcp,
        product_id=parts.product_id,
    )


RECIPE = Recipe(
    name="nginx",
    summary="nginx: HTTPS with a KMS-issued certificate, static files, uploads on a volume",
    packages=("nginx-light",),
    user="www-data",
    params=(
        Param(name="port", kind="port", default=18443, help="HTTPS port on 127.0.0.1"),
        Param(name="workers", kind="int", default=1, help="worker_processes"),
        Param(
            name="upload_user",
            kind="name",
            default="uploader",
            help="basic-auth user for PUT /files/...",
        ),
        Param(name="max_upload", kind="size", default="16M", help="client_max_body_size"),
        Param(
            name="ratls",
            kind="yesno",
            default="no",
            help="yes: serve with an RA-TLS certificate issued at start (evidence binds its key)",
        ),
        *common_params("nginx", 0x5204),
    ),
    render=render,
)
