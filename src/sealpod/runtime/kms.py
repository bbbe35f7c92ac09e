"""The runtime's side of the key broker: which KMS, is it the pinned one, and the one
attestation that brings every secret the pod needs.

The KMS's identity is the SHA-256 of its TLS public key (DER SubjectPublicKeyInfo). The pin that
counts is the one in the measured spec (``[kms] identity``): a host that redirects the pod to a
KMS of its own could otherwise hand it volume keys it knows. A host-given ``--kms-identity``
must equal the spec's pin; for a spec without one it pins the connection against the network
(not against the host, and it is reported as such). Before any request, the server's key is
checked on a first TLS handshake, and the connection that follows trusts exactly that
certificate.

An unreachable KMS is retried with exponential back-off and jitter by the project's one retry
policy (:mod:`sealpod.retry`), a bounded number of times; refusals (policy, authentication) are
never retried.
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from sealpod.errors import ConfigError, KmsAuthError, KmsUnavailable
from sealpod.kms.client import AttestedSession, KmsClient, ReleasedSecret, checked_base_url
from sealpod.kms.identity import identity_of_certificate, peer_certificate
from sealpod.retry import Retry, RetryPolicy, RetryStopped, retry_call
from sealpod.spec.model import KmsSpec
from sealpod.tee.base import TeeBackend

URL_ENV = "SEALPOD_KMS_URL"
T = TypeVar("T")
#: An unreachable KMS at start: 5 attempts, waits 0.2, 0.4, 0.8, 1.6 s (+ jitter), then exit 16.
ATTEST_RETRY = RetryPolicy(attempts=5, base_delay=0.2, max_delay=4.0, jitter=0.3)


@dataclass(frozen=True, slots=True, kw_only=True)
class KmsTarget:
    """The KMS a pod will ask, and how it is trusted."""

    url: str
    identity: str | None  # hex SHA-256 of the server's SPKI; None only with unsafe_any
    measured_pin: bool  # the pin comes from the measured spec, not from the host
    ca: str | None = None  # a PEM file to verify the chain with (unpinned connections)

    def describe(self) -> dict[str, object]:
        return {
            "url": self.url,
            "identity": self.identity,
            "pinned_by": "spec" if self.measured_pin else ("host" if self.identity else None),
        }


def resolve_target(
    spec: KmsSpec | None,
    *,
    url: str | None,
    identity: str | None,
    unsafe_any_kms: bool,
    ca: str | None,
    local: Callable[[], tuple[str, str | None] | None] | None = None,
) -> KmsTarget:
    """Pick the KMS: ``--kms``, ``$SEALPOD_KMS_URL``, the spec's url, or what ``local()`` finds
    (the URL and CA of a ``sealpod kms serve`` on this host; asked only when nothing else
    names a KMS), and its pin.

    Raises:
        ConfigError: no URL; a malformed identity; a host identity that contradicts the spec's
            pin; no pin at all without ``unsafe_any_kms``; a pin on a plain-http URL.
    """
    chosen = url or os.environ.get(URL_ENV) or (spec.url if spec is not None else None)
    found = local() if not chosen and local is not None else None
    if found is not None:
        chosen, ca = found[0], ca or found[1]
    if not chosen:
        raise ConfigError(
            f"no KMS: pass --kms URL, set ${URL_ENV}, give the spec a [kms] url, or start"
            " `sealpod kms serve` on this host"
        )
    checked_base_url(chosen)
    host_pin = _hex_identity(identity) if identity is not None else None
    spec_pin = spec.identity if spec is not None else None
    if spec_pin is not None and host_pin is not None and host_pin != spec_pin:
        raise ConfigError(
            f"--kms-identity {host_pin[:16]}... differs from the identity the measured spec pins"
            f" ({spec_pin[:16]}...): the host cannot change the pod's KMS"
        )
    pin = spec_pin or host_pin
    if pin is None and not unsafe_any_kms:
        raise ConfigError(
            "the KMS is not pinned: give the spec a [kms] identity (or --kms-identity HEX, the"
            " SHA-256 of the KMS's TLS public key that `sealpod kms status` prints); to trust"
            " any KMS reachable at the URL, pass --unsafe-any-kms"
        )
    if pin is not None and httpx.URL(chosen).scheme != "https":
        raise ConfigError(f"KMS URL {chosen} is not https://, so its identity cannot be pinned")
    return KmsTarget(url=chosen, identity=pin, measured_pin=spec_pin is not None, ca=ca)


def _hex_identity(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError("--kms-identity must be 64 hex digits (SHA-256 of the KMS public key)")
    return text


def pinned_context(url: str, identity: str) -> ssl.SSLContext:
    """A TLS context that trusts exactly the certificate the server at ``url`` shows now,
    after checking that its key is ``identity``.

    Raises:
        KmsUnavailable: the server cannot be reached (retried by the caller).
        KmsAuthError: the server's key is not the pinned one (never retried: it is an attack
            or a misconfiguration, and waiting does not fix either).
    """
    der = peer_certificate(url)
    seen = identity_of_certificate(der)
    if not hmac.compare_digest(seen, identity):
        raise KmsAuthError(
            f"the KMS at {url} is not the pinned one: its key is {seen[:16]}..., the pin is"
            f" {identity[:16]}..."
        )
    context = ssl.create_default_context(cadata=der)
    context.check_hostname = False  # the certificate itself is the trust anchor
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


@dataclass(slots=True, kw_only=True)
class Released:
    """What one attestation brought: the session (token + ephemeral key) and the secrets."""

    session: AttestedSession
    secrets: dict[str, ReleasedSecret] = field(repr=False)


def attest_and_release(
    target: KmsTarget,
    backend: TeeBackend,
    *,
    measurement: bytes,
    names: Sequence[str],
    evidence_tee: str,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> tuple[KmsClient, Released]:
    """Attest ``measurement`` with evidence from ``backend`` and receive ``names`` in the
    answer. Returns the open client (for volume counters; the caller closes it).

    Raises:
        KmsUnavailable: still unreachable after the retries (exit 16).
        KmsAuthError: the KMS is not the pinned one.
        AttestationRefused: the KMS refused (policy violations listed; exit 13/16).
        TeeError: the backend could not produce evidence.
    """

    return while_unreachable(
        lambda: _attest_once(target, backend, measurement, names, evidence_tee),
        policy=ATTEST_RETRY,
        on_retry=on_retry,
    )


def while_unreachable(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``fn``, retried by ``policy`` while it raises :class:`KmsUnavailable`.

    Raises:
        KmsUnavailable: the last attempt's, once ``policy.attempts`` all failed.
        Exception: anything else ``fn`` raises, at once.
    """
    failures: list[KmsUnavailable] = []

    def attempt() -> T:
        try:
            return fn()
        except KmsUnavailable as exc:
            failures.append(exc)
            if on_retry is not None and len(failures) < policy.attempts:
                on_retry(len(failures), exc)
            raise Retry(exc.message) from exc

    try:
        return retry_call(attempt, policy=policy)
    except RetryStopped as exc:
        raise (failures[-1] if failures else KmsUnavailable(str(exc))) from exc


def _attest_once(
    target: KmsTarget,
    backend: TeeBackend,
    measurement: bytes,
    names: Sequence[str],
    evidence_tee: str,
) -> tuple[KmsClient, Released]:
    verify: bool | str | ssl.SSLContext
    if target.identity is not None:
        verify = pinned_context(target.url, target.identity)
    else:
        verify = target.ca if target.ca is not None else True
    client = KmsClient(target.url, verify=verify)
    try:
        session, secrets = client.attest_and_fetch(
            backend, measurement, list(names), tee=evidence_tee
        )
    except BaseException:
        client.close()
        raise
    return client, Released(session=session, secrets=secrets)
