"""AMD Key Distribution Service (KDS) client: VCEK certificates, ASK/ARK chains and CRLs.

Endpoints (AMD pub. 57230, "VCEK Certificate and KDS Interface Specification"), base
``https://kdsintf.amd.com``:

* ``/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`` — the VCEK (DER) of one
  chip at one TCB; Turin adds ``fmcSPL`` first and its hwid is the first 8 bytes of CHIP_ID;
* ``/vcek/v1/{product}/cert_chain`` and ``/vlek/v1/{product}/cert_chain`` — ASK (or ASVK) and ARK,
  PEM;
* ``/vcek/v1/{product}/crl`` and ``/vlek/v1/{product}/crl`` — the ARK's CRL (DER).

KDS rate-limits hard (HTTP 429). This client backs off with :mod:`sealpod.retry` (``Retry-After``
when given, otherwise exponential with jitter), and remembers a ``Retry-After`` so that *every*
following request of the client waits too instead of hammering the service. A wait longer than
the policy's ``max_retry_after`` fails at once with :class:`CollateralUnavailable`.

Responses are cached on disk **by content**: each body is stored once under its SHA-256
(``blobs/<sha256>``), and an index maps a request URL to that hash. A blob is re-hashed when read,
so a corrupted cache entry is dropped and fetched again. Nothing is keyed by a certificate
serial (AMD's VCEKs all have serial 0; Intel re-issued a certificate with the same serial).
VCEKs and chains are kept; a CRL is reused only until its ``nextUpdate``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx
from cryptography import x509

from sealpod._files import read_limited, write_atomic
from sealpod.collateral._http import ResponseTooLarge, get_or_retry
from sealpod.errors import (
    CertificateError,
    CollateralUnavailable,
    ConfigError,
    MalformedCollateral,
)
from sealpod.evidence.snp_report import SnpProduct, SnpReport, TcbVersion
from sealpod.retry import GaveUp, Retry, RetryPolicy, WaitTooLong, retry_call
from sealpod.verify import amd

KDS_BASE_URL = "https://kdsintf.amd.com"
DEFAULT_TIMEOUT_SECS = 30.0
#: AMD KDS: four attempts, 2 s doubling with up to 1 s of jitter; a Retry-After over 2 min fails.
KDS_RETRY = RetryPolicy(
    attempts=4, base_delay=2.0, max_delay=60.0, jitter=1.0, max_retry_after=120.0
)
MAX_RESPONSE_SIZE = 1024 * 1024
MAX_INDEX_SIZE = 4096  # {"url", "sha256", "stored_at"}: a few hundred bytes

KeyKind = Literal["vcek", "vlek"]


def vcek_path(product: SnpProduct, chip_id: bytes, tcb: TcbVersion) -> str:
    """The KDS path and query of one chip's VCEK at ``tcb`` (Turin: 8-byte hwid, fmcSPL).

    Raises:
        ValueError: a CHIP_ID of the wrong size, or a Turin TCB without FMC.
    """
    if len(chip_id) != 64:
        raise ValueError(f"chip_id is {len(chip_id)} bytes, expected 64")
    if product is SnpProduct.TURIN:
        if tcb.fmc is None:
            raise ValueError("a Turin TCB has an FMC component")
        hwid = chip_id[:8].hex()
        query = f"fmcSPL={tcb.fmc}&"
    else:
        hwid = chip_id.hex()
        query = ""
    query += f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    return f"/vcek/v1/{product.value}/{hwid}?{query}"


class KdsClient:
    """Fetches AMD SNP endorsement material, with an on-disk content cache and 429 back-off.

    ``sleep`` and ``clock`` (monotonic seconds) are injectable for tests; ``client`` may be an
    ``httpx.Client`` with a mock transport.
    """

    def __init__(
        self,
        *,
        base_url: str = KDS_BASE_URL,
        cache_dir: Path | None = None,
        client: httpx.Client | None = None,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        retry: RetryPolicy = KDS_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._cache = cache_dir
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout_secs, follow_redirects=False)
        self._retry = retry
        self._sleep = sleep
        self._clock = clock
        self._blocked_until = 0.0

    # --- context manager ------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- endpoints ------------------------------------------------------------------------------
    def vcek(self, product: SnpProduct, chip_id: bytes, tcb: TcbVersion) -> bytes:
        """The VCEK (DER) of ``chip_id`` at ``tcb``.

        Raises:
            CollateralUnavailable: KDS has none, or keeps refusing (429, 5xx, network).
            MalformedCollateral: the response is not a VCEK certificate.
        """
        return self._get(vcek_path(product, chip_id, tcb), check=_check_vcek)

    def vcek_for_report(self, report: SnpReport, product: SnpProduct) -> bytes:
        """The VCEK that signed ``report`` (its CHIP_ID at its REPORTED_TCB).

        Raises:
            CollateralUnavailable, MalformedCollateral: see :meth:`vcek`.
        """
        if not any(report.chip_id):
            raise CollateralUnavailable(
                "report CHIP_ID is zero (VLEK-signed or masked): KDS cannot serve its VCEK"
            )
        return self.vcek(product, report.chip_id, report.tcb("reported", product))

    def cert_chain(self, product: SnpProduct, *, kind: KeyKind = "vcek") -> bytes:
        """ASK (``kind="vcek"``) or ASVK (``"vlek"``) and the ARK, PEM.

        Raises:
            CollateralUnavailable, MalformedCollateral: as for :meth:`vcek`.
        """
        return self._get(f"/{kind}/v1/{product.value}/cert_chain", check=_check_chain)

    def crl(self, product: SnpProduct, *, kind: KeyKind = "vcek", now: datetime) -> bytes:
        """The ARK's CRL (DER); a cached one is reused while ``now`` is before its nextUpdate.

        Raises:
            CollateralUnavailable, MalformedCollateral: as for :meth:`vcek`.
        """
        return self._get(
            f"/{kind}/v1/{product.value}/crl",
            check=_check_crl,
            fresh=lambda body: _crl_fresh(body, now),
        )

    # --- transport ------------------------------------------------------------------------------
    def _get(
        self,
        path: str,
        *,
        check: Callable[[bytes], None],
        fresh: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        url = self._base + path
        cached = self._cache_read(url)
        if cached is not None and (fresh is None or fresh(cached)):
            return cached
        body = self._fetch(url)
        try:
            check(body)
        except (CertificateError, ValueError) as exc:
            raise MalformedCollateral(f"AMD KDS answer for {path} is malformed: {exc}") from exc
        self._cache_write(url, body)
        return body

    def _fetch(self, url: str) -> bytes:
        try:
            return retry_call(lambda: self._attempt(url), policy=self._retry, sleep=self._sleep)
        except WaitTooLong as exc:
            raise CollateralUnavailable(
                f"AMD KDS asks to wait {exc.retry_after or 0:.0f} s ({exc.reason}), more "
                f"than the {self._retry.max_retry_after:.0f} s this client waits; try again later"
            ) from exc
        except GaveUp as exc:
            raise CollateralUnavailable(
                f"AMD KDS did not answer {url} after {exc.attempts} attempts (last: {exc.reason})"
            ) from exc

    def _attempt(self, url: str) -> bytes:
        self._wait_if_blocked()
        try:
            response = get_or_retry(
                self._client,
                url,
                headers={"Accept": "*/*"},
                limit=MAX_RESPONSE_SIZE,
                now=datetime.now(UTC),
            )
        except ResponseTooLarge as exc:
            raise MalformedCollateral(f"AMD KDS answer for {url} is too large") from exc
        except Retry as exc:
            wait = exc.retry_after
            if wait is not None and wait <= self._retry.max_retry_after:
                # Every later request of this client waits too: KDS limits the caller, not the URL.
                self._blocked_until = max(self._blocked_until, self._clock() + wait)
            raise
        status = response.status_code
        if status == 200:
            return response.content
        if status == 404:
            raise CollateralUnavailable(f"AMD KDS has nothing at {url} (HTTP 404)")
        raise CollateralUnavailable(f"AMD KDS refused {url} (HTTP {status})")

    def _wait_if_blocked(self) -> None:
        remaining = self._blocked_until - self._clock()
        if remaining > 0:
            self._sleep(remaining)

    # --- cache ----------------------------------------------------------------------------------
    def _index_path(self, url: str) -> Path | None:
        if self._cache is None:
            return None
        return self._cache / "index" / (hashlib.sha256(url.encode()).hexdigest() + ".json")

    def _cache_read(self, url: str) -> bytes | None:
        index = self._index_path(url)
        if index is None or self._cache is None:
            return None
        # Bounded, FIFO-safe reads: whatever sits in the cache directory, a bad entry only costs
        # a refetch, never a hang or an unbounded allocation.
        try:
            entry = json.loads(
                read_limited(index, "KDS cache index", limit=MAX_INDEX_SIZE, error=ConfigError)
            )
            digest = str(entry["sha256"])
            if entry.get("url") != url or len(digest) != 64:
                return None
            blob = read_limited(
                self._cache / "blobs" / digest,
                "KDS cache blob",
                limit=MAX_RESPONSE_SIZE,
                error=ConfigError,
            )
        except (ConfigError, ValueError, KeyError, TypeError):
            return None
        if hashlib.sha256(blob).hexdigest() != digest:
            with contextlib.suppress(OSError):
                (self._cache / "blobs" / digest).unlink()
            return None
        return blob

    def _cache_write(self, url: str, body: bytes) -> None:
        index = self._index_path(url)
        if index is None or self._cache is None:
            return
        digest = hashlib.sha256(body).hexdigest()
        try:
            for sub in ("blobs", "index"):
                (self._cache / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self._cache / "blobs" / digest, body)
            entry = {"url": url, "sha256": digest, "stored_at": int(time.time())}
            write_atomic(index, json.dumps(entry).encode())
        except OSError:
            return  # a cache that cannot be written only costs a refetch


def _check_vcek(body: bytes) -> None:
    amd.parse_endorsement_key(amd.load_certificate(body, role="VCEK"))


def _check_chain(body: bytes) -> None:
    certs = amd.load_chain(body)
    if not any(c.self_issued for c in certs) or len(certs) < 2:
        raise ValueError("expected the ASK (or ASVK) and the ARK")


def _check_crl(body: bytes) -> None:
    _crl_next_update(body)


def _crl_fresh(body: bytes, now: datetime) -> bool:
    try:
        return _crl_next_update(body) > now
    except ValueError:
        return False


def _crl_next_update(body: bytes) -> datetime:
    try:
        crl = x509.load_der_x509_crl(body)
    except ValueError:
        crl = x509.load_pem_x509_crl(body)
    if crl.next_update_utc is None:
        raise ValueError("CRL has no nextUpdate")
    return crl.next_update_utc
