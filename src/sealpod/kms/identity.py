"""The KMS's identity: SHA-256 of its TLS public key (DER SubjectPublicKeyInfo), in hex.

A pod's spec pins it (``[kms] identity``) so that a host cannot redirect the pod to a key broker
of its own; ``sealpod kms serve`` writes it to ``server.json`` and ``sealpod kms status``
prints it.
"""

from __future__ import annotations

import hashlib
import socket
import ssl

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealpod.errors import ConfigError, KmsUnavailable

PROBE_TIMEOUT_SECS = 10.0


def identity_of_certificate(der: bytes) -> str:
    """The KMS identity of a DER certificate.

    Raises:
        ConfigError: the bytes are not an X.509 certificate.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ConfigError("the KMS presented something that is not a certificate") from exc
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def identity_of_pem(pem: bytes) -> str:
    """The KMS identity of a PEM certificate (the first one in ``pem``).

    Raises:
        ConfigError: no certificate in ``pem``.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError("not a PEM certificate") from exc
    return identity_of_certificate(cert.public_bytes(serialization.Encoding.DER))


def peer_certificate(url: str) -> bytes:
    """The DER certificate the TLS server at ``url`` presents, unverified (the caller pins it).

    Raises:
        KmsUnavailable: the server cannot be reached or speaks no TLS.
    """
    parsed = httpx.URL(url)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # the caller compares the key with its pin
    try:
        with (
            socket.create_connection(
                (parsed.host, parsed.port or 443), timeout=PROBE_TIMEOUT_SECS
            ) as raw,
            probe.wrap_socket(raw, server_hostname=parsed.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise KmsUnavailable(f"cannot reach the KMS at {url}: {type(exc).__name__}") from exc
    if der is None:
        raise KmsUnavailable(f"the KMS at {url} presented no certificate")
    return der
