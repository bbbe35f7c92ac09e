"""Intel PCS v4 over HTTP: TCB Info, QE Identity, PCK CRL and the root CA CRL.

Endpoints (Intel SGX and TDX Provisioning Certification Service API v4,
https://api.portal.trustedservices.intel.com/content/documentation.html):

    GET {base}/{sgx|tdx}/certification/v4/tcb?fmspc=<12 hex>     header TCB-Info-Issuer-Chain
    GET {base}/{sgx|tdx}/certification/v4/qe/identity?update=standard
                                                  header SGX-Enclave-Identity-Issuer-Chain
    GET {base}/sgx/certification/v4/pckcrl?ca=<platform|processor>&encoding=der
                                                  header SGX-PCK-CRL-Issuer-Chain
    GET https://certificates.trustedservices.intel.com/IntelSGXRootCA.der   (root CA CRL)

Issuer-chain headers carry URL-encoded PEM. Responses are kept byte for byte (signatures cover
the exact ``tcbInfo``/``enclaveIdentity`` bytes) in a content-addressed on-disk cache
(:mod:`sealpod.collateral.cache`), fresh until the document's own nextUpdate (capped by
``max_age``); when Intel cannot be reached, a cached document that is still within its validity
is served. HTTP 429 (and 5xx) are retried by :mod:`sealpod.retry` (jittered back-off that
honours ``Retry-After``).
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509

from sealpod.collateral._http import ResponseTooLarge, get_or_retry
from sealpod.collateral.cache import ContentCache
from sealpod.collateral.models import (
    QeIdentity,
    QuoteCollateral,
    TcbInfo,
    crl_to_der,
    split_signed_json,
)
from sealpod.errors import CollateralUnavailable, MalformedCollateral
from sealpod.retry import RetryPolicy, RetryStopped, retry_call
from sealpod.settings import sealpod_home
from sealpod.verify.claims import TeeKind
from sealpod.verify.x509util import X509_ERRORS

log = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADER = "SGX-Enclave-Identity-Issuer-Chain"
PCK_CRL_CHAIN_HEADER = "SGX-PCK-CRL-Issuer-Chain"
NEXT_UPDATE_HEADER = "X-Sealpod-Next-Update"
MAX_RESPONSE_SIZE = 1 << 20
_FMSPC = re.compile(r"[0-9A-Fa-f]{12}")


def default_cache_dir() -> Path:
    return sealpod_home() / "cache" / "collateral"


#: Intel PCS: five attempts, 1 s doubling to 60 s with up to 1 s of jitter.
PCS_RETRY = RetryPolicy(attempts=5, base_delay=1.0, max_delay=60.0, jitter=1.0)


class IntelPcsClient:
    """Fetches raw collateral from Intel PCS (or a PCCS with the same API), with a cache."""

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        root_ca_crl_url: str = INTEL_ROOT_CA_CRL_URL,
        client: httpx.Client | None = None,
        cache: ContentCache | None = None,
        retry: RetryPolicy = PCS_RETRY,
        max_age: timedelta = timedelta(hours=24),
        api_key: str | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_ca_crl_url = root_ca_crl_url
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self._owns_client = client is None
        self.cache = cache if cache is not None else ContentCache(default_cache_dir())
        self.retry = retry
        self.max_age = max_age
        self._headers = {"Ocp-Apim-Subscription-Key": api_key} if api_key else {}
        self._sleep = sleep
        self._clock = clock
        self.requests = 0  # HTTP requests sent (for tests and metrics)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> IntelPcsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the four documents ---------------------------------------------------------------------
    def tcb_info(self, tee: TeeKind, fmspc: str) -> tuple[bytes, str]:
        """(raw response body, issuer chain PEM) of the TCB Info for ``fmspc``.

        Raises:
            CollateralUnavailable: PCS could not give it and nothing valid is cached.
            MalformedCollateral: the response is not a TCB Info.
        """
        if not _FMSPC.fullmatch(fmspc):
            raise CollateralUnavailable(f"FMSPC {fmspc!r} is not 12 hex digits")
        url = f"{self.base_url}/{_tee_path(tee)}/certification/v4/tcb?fmspc={fmspc.upper()}"
        cached = self._fetch(url, TCB_INFO_CHAIN_HEADERS, _tcb_info_next_update)
        return cached.body, _chain(cached.headers, TCB_INFO_CHAIN_HEADERS, url)

    def qe_identity(self, tee: TeeKind) -> tuple[bytes, str]:
        """(raw response body, issuer chain PEM) of the QE Identity (QE or TD_QE).

        Raises:
            CollateralUnavailable, MalformedCollateral: as for :meth:`tcb_info`.
        """
        url = f"{self.base_url}/{_tee_path(tee)}/certification/v4/qe/identity?update=standard"
        cached = self._fetch(url, (QE_IDENTITY_CHAIN_HEADER,), _qe_identity_next_update)
        return cached.body, _chain(cached.headers, (QE_IDENTITY_CHAIN_HEADER,), url)

    def pck_crl(self, ca: str) -> tuple[bytes, str]:
        """(DER CRL, issuer chain PEM) of the ``platform`` or ``processor`` PCK CA.

        Raises:
            CollateralUnavailable, MalformedCollateral: as for :meth:`tcb_info`.
        """
        if ca not in ("platform", "processor"):
            raise CollateralUnavailable(f"PCK CA {ca!r} is not 'platform' or 'processor'")
        url = f"{self.base_url}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
        cached = self._fetch(url, (PCK_CRL_CHAIN_HEADER,), _crl_next_update)
        return crl_to_der(cached.body, what="PCK CRL"), _chain(
            cached.headers, (PCK_CRL_CHAIN_HEADER,), url
        )

    def root_ca_crl(self) -> bytes:
        """The Intel SGX root CA CRL (DER).

        Raises:
            CollateralUnavailable, MalformedCollateral: as for :meth:`tcb_info`.
        """
        cached = self._fetch(self.root_ca_crl_url, (), _crl_next_update)
        return crl_to_der(cached.body, what="root CA CRL")

    # --- HTTP with cache and back-off -----------------------------------------------------------
    def _fetch(
        self,
        url: str,
        keep_headers: tuple[str, ...],
        next_update: Callable[[bytes], datetime],
    ) -> _Entry:
        now = self._clock()
        fresh = self.cache.get(url, now=now)
        if fresh is not None:
            return _Entry(fresh.body, fresh.headers)
        try:
            response = self._get(url)
        except CollateralUnavailable:
            stale = self.cache.lookup(url)
            if stale is not None and _still_valid(stale.headers, now):
                log.warning("collateral: serving cached %s, Intel PCS is unreachable", url)
                return _Entry(stale.body, stale.headers)
            raise
        body = response.content
        valid_until = next_update(body)  # parses: never cache what does not parse
        headers = {h: response.headers[h] for h in keep_headers if h in response.headers}
        headers[NEXT_UPDATE_HEADER] = valid_until.isoformat()
        self.cache.put(
            url,
            body,
            headers=headers,
            fetched_at=now,
            fresh_until=min(valid_until, now + self.max_age),
        )
        return _Entry(body, headers)

    def _get(self, url: str) -> httpx.Response:
        try:
            return retry_call(lambda: self._attempt(url), policy=self.retry, sleep=self._sleep)
        except RetryStopped as exc:
            raise CollateralUnavailable(f"{url}: {exc}") from exc

    def _attempt(self, url: str) -> httpx.Response:
        self.requests += 1
        try:
            response = get_or_retry(
                self._client, url, headers=self._headers, limit=MAX_RESPONSE_SIZE, now=self._clock()
            )
        except ResponseTooLarge as exc:
            raise CollateralUnavailable(f"{url}: response larger than 1 MiB") from exc
        if response.status_code != 200:
            raise CollateralUnavailable(f"{url}: HTTP {response.status_code}")
        return response


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    headers: Mapping[str, str]


def _tee_path(tee: TeeKind) -> str:
    if tee is TeeKind.SGX:
        return "sgx"
    if tee is TeeKind.TDX:
        return "tdx"
    raise CollateralUnavailable(f"Intel PCS has no collateral for TEE kind {tee.value!r}")


def _chain(headers: Mapping[str, str], names: tuple[str, ...], url: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in names:
        if name.lower() in lowered:
            return urllib.parse.unquote(lowered[name.lower()])
    raise MalformedCollateral(f"{url}: response has no {names[0]} header")


def _still_valid(headers: Mapping[str, str], now: datetime) -> bool:
    try:
        return now < datetime.fromisoformat(headers[NEXT_UPDATE_HEADER])
    except (KeyError, ValueError):
        return False


def _tcb_info_next_update(body: bytes) -> datetime:
    raw, _ = split_signed_json(body, "tcbInfo", what="TCB Info response")
    return TcbInfo.from_raw(raw).next_update


def _qe_identity_next_update(body: bytes) -> datetime:
    raw, _ = split_signed_json(body, "enclaveIdentity", what="QE Identity response")
    return QeIdentity.from_raw(raw).next_update


def _crl_next_update(body: bytes) -> datetime:
    der = crl_to_der(body)
    try:
        next_update = x509.load_der_x509_crl(der).next_update_utc
    except X509_ERRORS as exc:
        raise MalformedCollateral(f"CRL does not parse: {exc}") from exc
    if next_update is None:
        raise MalformedCollateral("CRL has no nextUpdate")
    return next_update


class PcsCollateralProvider:
    """A :class:`DcapCollateralProvider` backed by Intel PCS (through the cache)."""

    def __init__(self, client: IntelPcsClient | None = None) -> None:
        self.client = client or IntelPcsClient()

    def get(self, fmspc: str, ca: str, tee: TeeKind) -> QuoteCollateral:
        """Collateral for a platform from Intel PCS.

        Raises:
            CollateralUnavailable: PCS could not give it and nothing valid is cached.
            MalformedCollateral: a response is not of the expected shape.
        """
        tcb_body, tcb_chain = self.client.tcb_info(tee, fmspc)
        qe_body, qe_chain = self.client.qe_identity(tee)
        pck_crl, pck_chain = self.client.pck_crl(ca)
        return QuoteCollateral.from_pcs(
            tcb_info_response=tcb_body,
            tcb_info_issuer_chain=tcb_chain,
            qe_identity_response=qe_body,
            qe_identity_issuer_chain=qe_chain,
            root_ca_crl=self.client.root_ca_crl(),
            pck_crl=pck_crl,
            pck_crl_issuer_chain=pck_chain,
        )
