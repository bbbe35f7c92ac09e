"""Evidence from Linux configfs-tsm (``/sys/kernel/config/tsm/report``): TDX and SEV-SNP guests.

The kernel ABI (Documentation/ABI/testing/configfs-tsm-report, Linux >= 6.7):

1. ``mkdir report/$name`` creates a report entry (``ENXIO`` when no TSM provider is registered);
2. ``provider`` (RO) names the format of ``outblob``: ``tdx_guest`` (a DCAP v4/v5 quote) or
   ``sev_guest`` (an SNP attestation report);
3. ``generation`` (RO) counts writes to ``inblob`` and options. Read it before writing, and
   check after reading ``outblob`` that it moved by exactly our writes: otherwise another writer
   raced us on the same entry and the outblob may be theirs, so we retry;
4. ``privlevel`` (WO, SNP only): the VMPL the report is requested for (floor in
   ``privlevel_floor``, max 3);
5. ``inblob`` (WO): up to 64 bytes of report data;
6. ``outblob`` (RO): reading it generates the evidence; ``auxblob`` (RO): for ``sev_guest`` the
   GHCB certificate table (VCEK, ASK, ARK) when the host supplied one;
7. ``rmdir report/$name`` removes the entry.

The entry's mkdir/rmdir go through :class:`ConfigfsOps` so that tests can run this exact code
against :mod:`sealpod.testing.fake_tsm`, whose pseudo-files are FIFOs served by a thread.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Protocol

from sealpod.crypto import pem
from sealpod.errors import CertificateError, EvidenceGenerationError, TeeUnavailable
from sealpod.tee._pseudofile import read_attribute, write_attribute
from sealpod.tee.base import Evidence, normalize_report_data
from sealpod.tee.snp_certs import parse_cert_table
from sealpod.verify.claims import TeeKind

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
PROVIDERS: dict[str, TeeKind] = {"tdx_guest": TeeKind.TDX, "sev_guest": TeeKind.SNP}
PRIVLEVEL_MAX = 3
OUTBLOB_MAX = 32 * 1024  # TSM_REPORT_OUTBLOB_MAX
DEFAULT_ATTEMPTS = 3

# DCAP quote v4/v5 (Intel TDX DCAP Quoting Library API, appendix "Quote format").
_QUOTE_HEADER_SIZE = 48
_TD10_BODY_SIZE = 584
_TD_REPORT_DATA_OFFSET = 520  # within the TD report body
_TDX_TEE_TYPE = 0x81
# SEV-SNP ABI spec, table "ATTESTATION_REPORT structure".
SNP_REPORT_SIZE = 0x4A0
_SNP_REPORT_DATA_OFFSET = 0x50


class ConfigfsOps(Protocol):
    """How report entries are created and removed (the kernel does this on real configfs)."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...


class RealConfigfs:
    """Plain ``mkdir``/``rmdir``: on configfs the kernel populates and frees the entry."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)


def _read(path: Path, what: str, limit: int = OUTBLOB_MAX) -> bytes:
    absent = (
        f"the report entry has no {what!r} attribute ({path} is missing); the kernel's TSM "
        "support is too old or incomplete"
    )
    return read_attribute(path, what=what, limit=limit, source="configfs-tsm", absent=absent)


def _write(path: Path, data: bytes, what: str) -> None:
    absent = f"the report entry has no {what!r} attribute ({path} is missing)"
    write_attribute(path, data, what=what, source="configfs-tsm", absent=absent)


def _generation(entry: Path) -> int:
    text = _read(entry / "generation", "generation", 64).strip()
    if not text.isdigit():
        raise EvidenceGenerationError(
            f"configfs-tsm: generation is {text[:20]!r}, expected a decimal counter"
        )
    return int(text)


def _check_tdx_quote(out: bytes, report_data: bytes) -> None:
    minimum = _QUOTE_HEADER_SIZE + _TD10_BODY_SIZE + 4
    if len(out) < minimum:
        raise EvidenceGenerationError(
            f"configfs-tsm: outblob is {len(out)} bytes, expected at least {minimum} for a TDX "
            "quote"
        )
    version = int.from_bytes(out[0:2], "little")
    tee_type = int.from_bytes(out[4:8], "little")
    if version not in (4, 5) or tee_type != _TDX_TEE_TYPE:
        raise EvidenceGenerationError(
            f"configfs-tsm: outblob is quote version {version} tee_type {tee_type:#x}, expected "
            "version 4 or 5 with tee_type 0x81 (TDX)"
        )
    body = _QUOTE_HEADER_SIZE + (6 if version == 5 else 0)  # v5: body_type u16 + size u32
    start = body + _TD_REPORT_DATA_OFFSET
    if out[start : start + 64] != report_data:
        raise EvidenceGenerationError(
            "configfs-tsm: the quote carries other report data than we wrote (a concurrent "
            "writer on the same entry?)"
        )


def _check_snp_report(out: bytes, report_data: bytes) -> None:
    if len(out) < SNP_REPORT_SIZE:
        raise EvidenceGenerationError(
            f"configfs-tsm: outblob is {len(out)} bytes, expected {SNP_REPORT_SIZE} for an SNP "
            "attestation report"
        )
    start = _SNP_REPORT_DATA_OFFSET
    if out[start : start + 64] != report_data:
        raise EvidenceGenerationError(
            "configfs-tsm: the report carries other report data than we wrote (a concurrent "
            "writer on the same entry?)"
        )


def snp_certificates_pem(auxblob: bytes) -> bytes | None:
    """VCEK (or VLEK), ASK, ARK from a GHCB certificate table, as PEM; None if empty.

    Raises:
        EvidenceGenerationError: a malformed table or certificate.
    """
    if not auxblob.strip(b"\x00"):
        return None
    from sealpod.verify import amd  # the verifier's X.509 stack: only for an SNP auxblob

    table = parse_cert_table(auxblob, error=EvidenceGenerationError)
    pems = []
    for name in ("vcek", "vlek", "ask", "ark"):
        if name in table:
            # AMD's loader, not cryptography's: a VCEK's serial number is 0, on which
            # cryptography warns (and means to raise).
            try:
                if pem.is_pem(table[name]):  # the loader reads PEM too; the table holds DER
                    raise CertificateError("PEM, not DER", step="auxblob")
                amd.load_certificate(table[name], role=f"auxblob {name}")
            except CertificateError as exc:
                raise EvidenceGenerationError(
                    f"configfs-tsm: auxblob entry {name!r} is not a DER certificate"
                ) from exc
            pems.append(pem.encode_certificate(table[name]).encode("ascii"))
    return b"".join(pems) or None


class TsmBackend:
    """Evidence through configfs-tsm; the report directory is a parameter (tests use a fake)."""

    def __init__(
        self,
        root: Path = TSM_REPORT_ROOT,
        *,
        privlevel: int | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        ops: ConfigfsOps | None = None,
    ) -> None:
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise ValueError(f"privlevel is {privlevel}, expected 0..{PRIVLEVEL_MAX}")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._root = root
        self._privlevel = privlevel
        self._attempts = attempts
        self._ops: ConfigfsOps = ops or RealConfigfs()

    @property
    def name(self) -> str:
        return "tsm"

    def describe(self) -> dict[str, object]:
        return {
            "backend": "tsm",
            "root": str(self._root),
            "available": self._root.is_dir(),
            "privlevel": self._privlevel,
        }

    def provider(self) -> str:
        """The registered provider's name, read through a short-lived entry.

        Raises:
            TeeUnavailable: no report directory or no provider.
        """
        entry = self._make_entry()
        try:
            text = _read(entry / "provider", "provider", 64).decode("ascii", "replace").strip()
        except BaseException:
            self._remove_entry(entry, quiet=True)
            raise
        self._remove_entry(entry)
        return text

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Generate a TDX quote or SNP report binding ``report_data`` (see module docstring).

        Raises:
            ConfigError: report data longer than 64 bytes.
            TeeUnavailable: no configfs-tsm, no or an unsupported provider, missing attributes.
            EvidenceGenerationError: the kernel refused, another writer kept racing, or the
                outblob is short or carries other report data.
        """
        data = normalize_report_data(report_data)
        raced = 0
        for _ in range(self._attempts):
            entry = self._make_entry()
            try:
                result = self._attempt(entry, data)
            except BaseException:
                self._remove_entry(entry, quiet=True)  # keep the original error
                raise
            self._remove_entry(entry)
            if result is not None:
                return result
            raced += 1
        raise EvidenceGenerationError(
            f"configfs-tsm: another writer changed the report entry during each of {raced} "
            "attempts (generation moved by more than our writes)"
        )

    def _make_entry(self) -> Path:
        if not self._root.is_dir():
            raise TeeUnavailable(
                f"configfs-tsm: {self._root} is absent (needs Linux >= 6.7 with "
                "CONFIG_TSM_REPORTS, configfs mounted, inside a TDX or SEV-SNP guest)"
            )
        entry = self._root / f"sealpod-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self._ops.mkdir(entry)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise TeeUnavailable(
                    "configfs-tsm: no TSM provider is registered (the tdx_guest or sev_guest "
                    "driver is not loaded, or this is not a confidential VM)"
                ) from exc
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise TeeUnavailable(
                    f"configfs-tsm: permission denied creating a report entry in {self._root}"
                ) from exc
            raise EvidenceGenerationError(f"configfs-tsm: mkdir failed: {exc}") from exc
        return entry

    def _remove_entry(self, entry: Path, *, quiet: bool = False) -> None:
        try:
            self._ops.rmdir(entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if quiet:
                return
            raise EvidenceGenerationError(
                f"configfs-tsm: could not remove report entry {entry.name}: {exc}"
            ) from exc

    def _attempt(self, entry: Path, report_data: bytes) -> Evidence | None:
        provider = _read(entry / "provider", "provider", 64).decode("ascii", "replace").strip()
        kind = PROVIDERS.get(provider)
        if kind is None:
            raise TeeUnavailable(
                f"configfs-tsm: provider is {provider!r}, expected one of "
                f"{', '.join(sorted(PROVIDERS))}"
            )
        before = _generation(entry)
        writes = 0
        if kind is TeeKind.SNP and self._privlevel is not None:
            _write(entry / "privlevel", f"{self._privlevel}\n".encode(), "privlevel")
            writes += 1
        _write(entry / "inblob", report_data, "inblob")
        writes += 1
        out = _read(entry / "outblob", "outblob")
        aux = b""
        if kind is TeeKind.SNP and (entry / "auxblob").exists():
            aux = _read(entry / "auxblob", "auxblob")
        after = _generation(entry)
        if after != before + writes:
            return None  # raced: the outblob may answer someone else's inblob
        if kind is TeeKind.TDX:
            _check_tdx_quote(out, report_data)
            return Evidence(tee=kind, raw=out, source="tsm")
        _check_snp_report(out, report_data)
        return Evidence(
            tee=kind, raw=out, certificates=snp_certificates_pem(aux),
            source="tsm",
        )  # fmt: skip
