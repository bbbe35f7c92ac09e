"""The demo's service: a tiny HTTPS notes store, as a sealed pod runs it.

Its TLS key and certificate are [[files]] secrets (issued by the KMS's CA for this pod), its
password an env secret, its notes live on an encrypted volume at /data. Nothing secret is in
the image.
"""

import base64
import hmac
import os
import signal
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("NOTES_PORT", "18444"))
PASSWORD = os.environ["NOTES_PASSWORD"]
NOTES = "/data/notes.txt"


class Notes(BaseHTTPRequestHandler):
    def _authorized(self) -> bool:
        token = base64.b64encode(f"demo:{PASSWORD}".encode()).decode()
        if hmac.compare_digest(self.headers.get("Authorization", ""), f"Basic {token}"):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="notes"')
        self.end_headers()
        return False

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self._authorized():
            try:
                with open(NOTES, "rb") as f:
                    self._reply(f.read())
            except FileNotFoundError:
                self._reply(b"")

    def do_POST(self) -> None:
        if self._authorized():
            length = min(int(self.headers.get("Content-Length", "0")), 4096)
            note = self.rfile.read(length).replace(b"\n", b" ") + b"\n"
            with open(NOTES, "ab") as f:
                f.write(note)
                f.flush()
                os.fsync(f.fileno())
            self._reply(b"stored\n")

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("notes: " + (format % args) + "\n")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Notes)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain("/run/secrets/tls.crt", "/run/secrets/tls.key")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"notes: serving https://127.0.0.1:{PORT} as uid {os.getuid()}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


main()
