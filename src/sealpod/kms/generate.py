"""Secrets the KMS makes itself: random bytes, passwords, and TLS certificates issued at release
time by a KMS-held CA (docs/protocol.md, Provisioning).

``bytes:N`` and ``password`` values are generated once per version and stored like owner-set
values. A ``tls-cert`` secret stores only its parameters; each release mints a fresh P-256 key
and a certificate for the secret's DNS names, signed by the KMS CA, and returns
``{"key", "cert", "ca"}`` (PEM) as JSON — the private key exists only inside the JWE.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealpod.errors import ConfigError

MAX_GENERATED_BYTES = 4096
PASSWORD_LENGTH = 32
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.~"
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
CA_VALIDITY_DAYS = 3650


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerateSpec:
    kind: str  # "bytes" | "password" | "tls-cert"
    size: int = 0
    dns: tuple[str, ...] = ()
    validity_days: int = 30

    def params(self) -> dict[str, object]:
        if self.kind == "bytes":
            return {"generate": f"bytes:{self.size}"}
        if self.kind == "password":
            return {"generate": "password", "length": PASSWORD_LENGTH}
        return {"generate": "tls-cert", "dns": list(self.dns), "validity_days": self.validity_days}


def parse_generate(spec: str, *, dns: list[str], validity_days: int = 30) -> GenerateSpec:
    """Parse ``bytes:N`` | ``password`` | ``tls-cert`` (+ DNS names).

    Raises:
        ConfigError: an unknown kind, a size outside 1..4096, or tls-cert without valid names.
    """
    if spec.startswith("bytes:"):
        try:
            size = int(spec.removeprefix("bytes:"), 10)
        except ValueError as exc:
            raise ConfigError(f"generate is {spec!r}, expected bytes:N with N a number") from exc
        if not 1 <= size <= MAX_GENERATED_BYTES:
            raise ConfigError(f"generate size is {size}, expected 1..{MAX_GENERATED_BYTES}")
        return GenerateSpec(kind="bytes", size=size)
    if spec == "password":
        return GenerateSpec(kind="password")
    if spec == "tls-cert":
        if not dns:
            raise ConfigError("generate tls-cert needs at least one --dns NAME")
        for name in dns:
            _check_dns(name)
        return GenerateSpec(kind="tls-cert", dns=tuple(dns), validity_days=validity_days)
    raise ConfigError(f"generate is {spec!r}, expected bytes:N, password or tls-cert")


def _check_dns(name: str) -> None:
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    labels = name.removeprefix("*.").split(".")
    if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise ConfigError(f"dns name {name!r} is not a valid host name or IP address")


def generate_value(spec: GenerateSpec) -> bytes:
    """The stored value of a generated ``bytes`` or ``password`` secret (tls-cert stores its
    parameters only)."""
    if spec.kind == "bytes":
        return secrets.token_bytes(spec.size)
    if spec.kind == "password":
        return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH)).encode()
    return json.dumps(spec.params(), sort_keys=True).encode()


class CertificateAuthority:
    """The KMS-held CA that issues workload TLS certificates."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        cert: x509.Certificate,
        previous: Sequence[CertificateAuthority] = (),
    ) -> None:
        self._key = key
        self.cert = cert
        #: CAs rotated out, still trusted (their certificates stay in the bundle).
        self.previous = tuple(previous)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (hex): how audit records and logs name a CA."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def bundle_pem(self) -> str:
        """The trust bundle: this CA's certificate, then the previous ones."""
        return self.cert_pem() + "".join(p.cert_pem() for p in self.previous)

    def __repr__(self) -> str:
        return f"CertificateAuthority(subject={self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def create(cls, *, label: str, now: datetime) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealpod"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"sealpod KMS CA {label}"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def key_der(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load(
        cls, key_der: bytes, cert_pem: str, previous: Sequence[CertificateAuthority] = ()
    ) -> CertificateAuthority:
        """Raises: ConfigError if the stored CA key or certificate does not load or match."""
        try:
            key = serialization.load_der_private_key(key_der, password=None)
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
        except ValueError as exc:
            raise ConfigError("stored KMS CA key or certificate does not load") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("stored KMS CA key is not an EC key")
        if key.public_key() != cert.public_key():
            raise ConfigError("stored KMS CA key does not match its certificate")
        return cls(key, cert, previous)

    def issue(
        self, *, dns: tuple[str, ...], validity_days: int, now: datetime, subject_note: str
    ) -> dict[str, str]:
        """Mint a key and a server/client certificate for ``dns``; returns PEMs."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in dns:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealpod workload"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, subject_note[:64]),
                x509.NameAttribute(NameOID.COMMON_NAME, dns[0][:64]),
            ]
        )
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return {
            "key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "ca": self.bundle_pem(),  # peers may still hold certificates of the previous CA
        }
