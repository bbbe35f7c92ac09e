"""RA-TLS over real TLS on 127.0.0.1: the socket API, the httpx transport and `sealpod ratls
verify` accept the right workload and refuse another measurement, simulation without
allow_simulation and a certificate whose evidence binds another key — before sending a byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sealpod.errors import ConfigError, KeyBindingError, PeerUnreachable, PolicyViolation
from sealpod.policy.model import Policy
from sealpod.ratls.client import (
    EXTRA_INFO_KEY,
    RaTlsPeerVerifier,
    RaTlsTransport,
    connect,
    parse_address,
)
from sealpod.ratls.issue import issue_ratls_certificate
from sealpod.settings import sealpod_home
from sealpod.tee.sim import SimPlatform

from .conftest import IDENTITY, NOW, OTHER, TlsServer, backend
from .test_ratls import forge

pytestmark = pytest.mark.timeout(120)
Serve = Callable[[bytes, bytes], TlsServer]
PINNED = Policy(allow_simulation=True, measurements=[IDENTITY.measurement.hex()])


def verifier(sim: SimPlatform, policy: Policy = PINNED) -> RaTlsPeerVerifier:
    return RaTlsPeerVerifier(
        policy=policy, trust=sim.trust_anchors(), dcap_collateral=sim.dcap_collateral(now=NOW),
        clock=lambda: NOW,
    )  # fmt: skip


def forged_server(sim: SimPlatform, serve: Serve) -> TlsServer:
    """A server with its own key, presenting the right workload's evidence (for another key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    _, good = issue_ratls_certificate(backend(sim), now=NOW)
    forged = forge(good)
    # forge() made a new key we do not hold: make one more, whose certificate we can serve.
    key = ec.generate_private_key(ec.SECP384R1())
    source = x509.load_pem_x509_certificate(forged)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor")])
    ext = next(e for e in source.extensions if e.oid.dotted_string == "2.23.133.5.4.9")
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(9).not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1)).add_extension(ext.value, critical=False)
        .sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.PEM)
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return serve(key_pem, cert)


def test_socket_api_accepts_the_right_workload(sim: SimPlatform, serve: Serve) -> None:
    server = serve(*issue_ratls_certificate(backend(sim), now=NOW))
    sock, verdict = connect("127.0.0.1", server.port, verifier(sim))
    try:
        assert verdict.accepted and verdict.claims.measurement == IDENTITY.measurement
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert sock.recv(4096).endswith(b"attested")
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("case", "error"),
    [("other-measurement", PolicyViolation), ("no-simulation", PolicyViolation),
     ("other-key", KeyBindingError)],
)  # fmt: skip
def test_refused_before_a_byte_is_sent(
    sim: SimPlatform, serve: Serve, case: str, error: type[Exception]
) -> None:
    policy = PINNED
    if case == "other-measurement":
        server = serve(*issue_ratls_certificate(backend(sim, OTHER), now=NOW))
    elif case == "no-simulation":
        server = serve(*issue_ratls_certificate(backend(sim), now=NOW))
        policy = Policy(measurements=[IDENTITY.measurement.hex()])
    else:
        server = forged_server(sim, serve)
    with pytest.raises(error):
        connect("127.0.0.1", server.port, verifier(sim, policy))
    # The handshake happened; the client then closed without sending application data.
    with httpx.Client(transport=RaTlsTransport(verifier(sim, policy))) as client:
        with pytest.raises(error):
            client.get(f"https://127.0.0.1:{server.port}/secret")
    server.close()
    assert server.handshakes >= 2
    assert server.received and all(data == b"" for data in server.received)


def test_httpx_transport_accepts_and_exposes_the_verdict(sim: SimPlatform, serve: Serve) -> None:
    server = serve(*issue_ratls_certificate(backend(sim), now=NOW))
    with httpx.Client(transport=RaTlsTransport(verifier(sim))) as client:
        response = client.get(f"https://127.0.0.1:{server.port}/")
        assert response.status_code == 200 and response.text == "attested"
        verdict = response.extensions["network_stream"].get_extra_info(EXTRA_INFO_KEY)
        assert verdict is not None and verdict.claims.measurement == IDENTITY.measurement
        with pytest.raises(ConfigError, match="https"):
            client.get(f"http://127.0.0.1:{server.port}/")


def test_unreachable_server_is_a_typed_error(sim: SimPlatform, serve: Serve) -> None:
    server = serve(*issue_ratls_certificate(backend(sim), now=NOW))
    port = server.port
    server.close()
    with pytest.raises(PeerUnreachable):
        connect("127.0.0.1", port, verifier(sim), timeout=2)


@pytest.mark.parametrize("text", ["", "host", "host:", ":80", "h:0", "h:65536", "h:x"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text)


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "SEALPOD_HOME": str(sealpod_home())}
    done = subprocess.run(
        [sys.executable, "-m", "sealpod.cli.main", *args], env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_cli_ratls_verify_accepts_and_refuses(sim: SimPlatform, serve: Serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = serve(*issue_ratls_certificate(backend(sim), now=NOW))
    other = serve(*issue_ratls_certificate(backend(sim, OTHER), now=NOW))
    impostor = forged_server(sim, serve)
    policy = tmp_path / "p.toml"
    policy.write_text(f'measurements = ["{IDENTITY.measurement.hex()}"]\n')
    code, doc = _cli("ratls", "verify", good.address, "--policy", str(policy),
                     "--allow-simulation", "--json")  # fmt: skip
    assert code == 0 and doc["verified"] and doc["claims"]["tee"] == "sim"
    code, doc = _cli("ratls", "verify", good.address, "--policy", str(policy), "--json")
    assert code == 13 and doc["violations"][0]["code"] == "simulation_not_allowed"
    code, doc = _cli("ratls", "verify", other.address, "--policy", str(policy),
                     "--allow-simulation", "--json")  # fmt: skip
    assert code == 13 and doc["violations"][0]["code"] == "measurement_not_allowed"
    code, doc = _cli("ratls", "verify", impostor.address, "--allow-simulation", "--json")
    assert code == 12 and doc["error"]["code"] == "verify.binding"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_httpx_transport_accepts_and_refuses(sim: SimPlatform, serve: Serve) -> None:
    from sealpod.ratls.client import AsyncRaTlsTransport

    good = serve(*issue_ratls_certificate(backend(sim), now=NOW))
    other = serve(*issue_ratls_certificate(backend(sim, OTHER), now=NOW))
    async with httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier(sim))) as client:
        response = await client.get(f"https://127.0.0.1:{good.port}/")
        assert response.text == "attested"
        verdict = response.extensions["network_stream"].get_extra_info(EXTRA_INFO_KEY)
        assert verdict.claims.measurement == IDENTITY.measurement
        with pytest.raises(PolicyViolation):
            await client.get(f"https://127.0.0.1:{other.port}/")
        with pytest.raises(ConfigError):
            await client.get(f"http://127.0.0.1:{good.port}/")
    other.close()
    assert other.received and all(data == b"" for data in other.received)
