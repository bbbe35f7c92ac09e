"""The server's generated TLS pair: private (0600) from the first byte, reused only while the
key matches the certificate, replaced when either file is damaged."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealpod.kms.server import ensure_tls


def _spki_of_key(key_path: Path) -> bytes:
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _spki_of_cert(cert_path: Path) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_generated_pair_is_private_and_reused(tmp_path: Path) -> None:
    cert, key = ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    assert key.stat().st_mode & 0o077 == 0
    assert _spki_of_key(key) == _spki_of_cert(cert)
    before = key.read_bytes()
    ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    assert key.read_bytes() == before, "a valid pair is reused"
    assert [p.name for p in (tmp_path / "tls").iterdir() if p.name.startswith(".")] == []


def test_garbage_or_mismatched_key_is_replaced(tmp_path: Path) -> None:
    cert, key = ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    key.write_bytes(random.Random(1).randbytes(300))
    ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    assert _spki_of_key(key) == _spki_of_cert(cert)
    other_cert, other_key = ensure_tls(tmp_path / "other", host="127.0.0.1", dns=())
    key.write_bytes(other_key.read_bytes())  # a crash between the two renames looks like this
    ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    assert _spki_of_key(key) == _spki_of_cert(cert)
    assert _spki_of_cert(cert) != _spki_of_cert(other_cert)


def test_world_readable_key_is_not_reused(tmp_path: Path) -> None:
    _, key = ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    before = key.read_bytes()
    key.chmod(0o644)
    ensure_tls(tmp_path / "tls", host="127.0.0.1", dns=())
    assert key.read_bytes() != before
    assert key.stat().st_mode & 0o077 == 0
