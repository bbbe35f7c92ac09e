"""The example app of the ``python`` entry (written to ``/app/app.py`` in the rootfs).

A small HTTPS key-value service on SQLite: its database password comes from the KMS as the env
secret ``DB_PASSWORD`` (clients must send it, HTTP basic auth as user ``app``), its TLS key and
certificate are KMS-issued files, and its database lives on the encrypted volume at ``/data``.
"""

EXAMPLE_APP = """#!/usr/bin/python3
\"\"\"sealpod catalog example: an HTTPS key-value store whose password comes from the KMS.\"\"\"
import base64
import hmac
import os
import signal
import sqlite3
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSWORD = os.environ.pop("DB_PASSWORD", "")  # from the KMS: {secret = ...} in the spec
if not PASSWORD:
    sys.exit("DB_PASSWORD is not set (the KMS provisions it)")
EXPECTED = "Basic " + base64.b64encode(b"app:" + PASSWORD.encode()).decode()
PORT = int(os.environ.get("APP_PORT", "18080"))
DB = os.path.join(os.environ.get("APP_DATA", "/data"), "app.db")
LOCK = threading.Lock()
conn = sqlite3.connect(DB, check_same_thread=False, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")


class Handler(BaseHTTPRequestHandler):
    def _authorised(self):
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), EXPECTED.encode()):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="app"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _key(self):
        return self.path[len("/kv/"):] if self.path.startswith("/kv/") else None

    def _reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self._reply(200, b"ok")
        if not self._authorised():
            return
        key = self._key()
        with LOCK:
            row = conn.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        self._reply(200, row[0]) if row else self._reply(404)

    def do_PUT(self):
        if not self._authorised():
            return
        key = self._key()
        size = int(self.headers.get("Content-Length", "0"))
        if key is None or not 0 <= size <= 1 << 20:
            return self._reply(400)
        value = self.rfile.read(size)
        with LOCK:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
        self._reply(204)

    def log_message(self, fmt, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain("/run/secrets/tls.crt", "/run/secrets/tls.key")
server.socket = context.wrap_socket(server.socket, server_side=True)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"app: listening on 127.0.0.1:{PORT}", file=sys.stderr, flush=True)
server.serve_forever()
conn.close()
"""
