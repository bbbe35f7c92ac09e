"""Evidence from Gramine's ``/dev/attestation`` pseudo-filesystem (inside an SGX enclave).

Gramine's attestation interface (Gramine docs, "Attestation and Secret Provisioning"):

* ``attestation_type`` (RO): ``none`` (gramine-direct, or ``sgx.remote_attestation = "none"``),
  ``epid`` or ``dcap``;
* ``user_report_data`` (WO): 64 bytes that go into REPORTDATA of the next report or quote;
* ``quote`` (RO): a DCAP quote (v3) over the enclave's report with that report data;
* ``my_target_info`` (RO): this enclave's 512-byte TARGETINFO;
* ``target_info`` (WO): another enclave's TARGETINFO, the target of the next local report;
* ``report`` (RO): a 432-byte SGX REPORT (body, key id, MAC) targeted at ``target_info``.

The files are process-wide, so requests are serialised with a lock per root, and the quote's
REPORTDATA is compared with what we wrote to catch any writer outside this process.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sealpod.errors import EvidenceGenerationError, TeeUnavailable
from sealpod.tee._pseudofile import read_attribute, write_attribute
from sealpod.tee.base import REPORT_DATA_SIZE, Evidence, normalize_report_data
from sealpod.verify.claims import TeeKind

GRAMINE_ROOT = Path("/dev/attestation")
TARGET_INFO_SIZE = 512
REPORT_SIZE = 432  # sgx_report_t: body 384, key id 32, MAC 16
QUOTE_MAX_SIZE = 64 * 1024
# DCAP quote v3 (Intel SGX ECDSA QuoteLibReference, "Quote format"): header 48, body 384.
_QUOTE_HEADER_SIZE = 48
_REPORT_DATA_OFFSET = 320  # within the SGX report body
_MIN_QUOTE_SIZE = _QUOTE_HEADER_SIZE + 384 + 4

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(root: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(root, threading.Lock())


class GramineBackend:
    """SGX DCAP quotes and local reports through Gramine's ``/dev/attestation``."""

    def __init__(self, root: Path = GRAMINE_ROOT) -> None:
        self._root = root

    @property
    def name(self) -> str:
        return "gramine"

    @property
    def root(self) -> Path:
        return self._root

    def describe(self) -> dict[str, object]:
        try:
            kind: str | None = self.attestation_type()
        except TeeUnavailable:
            kind = None
        return {"backend": "gramine", "root": str(self._root), "attestation_type": kind}

    def attestation_type(self) -> str:
        """``none``, ``epid`` or ``dcap``, as Gramine reports it.

        Raises:
            TeeUnavailable: not running under Gramine (no ``attestation_type`` file).
        """
        path = self._root / "attestation_type"
        try:
            with open(path, "rb") as f:  # bounded: whatever the path is, read 64 bytes at most
                raw = f.read(64)
            return raw.decode("ascii", "replace").strip()
        except FileNotFoundError as exc:
            raise TeeUnavailable(
                f"gramine: {path} is absent: not running inside a Gramine SGX enclave"
            ) from exc
        except OSError as exc:
            raise TeeUnavailable(f"gramine: cannot read {path}: {exc}") from exc

    def _require_dcap(self) -> None:
        kind = self.attestation_type()
        if kind == "dcap":
            return
        if kind == "none":
            raise TeeUnavailable(
                "gramine: attestation_type is 'none' (gramine-direct, or the manifest sets "
                "sgx.remote_attestation = \"none\"); expected 'dcap'"
            )
        if kind == "epid":
            raise TeeUnavailable(
                "gramine: attestation_type is 'epid' (Intel retired EPID attestation); set "
                'sgx.remote_attestation = "dcap"'
            )
        raise EvidenceGenerationError(f"gramine: attestation_type is {kind!r}, expected 'dcap'")

    def _write(self, name: str, data: bytes) -> None:
        path = self._root / name
        write_attribute(path, data, what=name, source="gramine", absent=f"{path} is absent")

    def _read(self, name: str, limit: int) -> bytes:
        path = self._root / name
        return read_attribute(
            path, what=name, limit=limit, source="gramine", absent=f"{path} is absent"
        )

    def get_evidence(self, report_data: bytes) -> Evidence:
        """Write ``user_report_data``, read ``quote``.

        Raises:
            ConfigError: report data longer than 64 bytes.
            TeeUnavailable: not under Gramine, or attestation is not DCAP.
            EvidenceGenerationError: a short quote, or one carrying other report data.
        """
        data = normalize_report_data(report_data)
        with _lock_for(self._root):
            self._require_dcap()
            self._write("user_report_data", data)
            quote = self._read("quote", QUOTE_MAX_SIZE)
        if len(quote) < _MIN_QUOTE_SIZE:
            raise EvidenceGenerationError(
                f"gramine: quote is {len(quote)} bytes, expected at least {_MIN_QUOTE_SIZE}"
            )
        version = int.from_bytes(quote[0:2], "little")
        if version != 3:
            raise EvidenceGenerationError(f"gramine: quote version is {version}, expected 3")
        start = _QUOTE_HEADER_SIZE + _REPORT_DATA_OFFSET
        if quote[start : start + REPORT_DATA_SIZE] != data:
            raise EvidenceGenerationError(
                "gramine: the quote carries other report data than we wrote (another writer "
                "of user_report_data?)"
            )
        return Evidence(tee=TeeKind.SGX, raw=quote, source="gramine")

    def my_target_info(self) -> bytes:
        """This enclave's TARGETINFO (512 bytes), for peers that want to target it.

        Raises:
            TeeUnavailable: not under Gramine.
            EvidenceGenerationError: a wrong-sized answer.
        """
        info = self._read("my_target_info", TARGET_INFO_SIZE)
        if len(info) != TARGET_INFO_SIZE:
            raise EvidenceGenerationError(
                f"gramine: my_target_info is {len(info)} bytes, expected {TARGET_INFO_SIZE}"
            )
        return info

    def local_report(self, target_info: bytes, report_data: bytes) -> bytes:
        """An SGX REPORT (432 bytes) for the enclave described by ``target_info``.

        Raises:
            ConfigError: report data longer than 64 bytes.
            TeeUnavailable: not under Gramine.
            EvidenceGenerationError: a wrong-sized target info or report.
        """
        if len(target_info) != TARGET_INFO_SIZE:
            raise EvidenceGenerationError(
                f"gramine: target_info is {len(target_info)} bytes, expected {TARGET_INFO_SIZE}"
            )
        data = normalize_report_data(report_data)
        with _lock_for(self._root):
            self.attestation_type()  # clear TeeUnavailable outside Gramine
            self._write("target_info", target_info)
            self._write("user_report_data", data)
            report = self._read("report", REPORT_SIZE)
        if len(report) != REPORT_SIZE:
            raise EvidenceGenerationError(
                f"gramine: report is {len(report)} bytes, expected {REPORT_SIZE}"
            )
        if report[_REPORT_DATA_OFFSET : _REPORT_DATA_OFFSET + REPORT_DATA_SIZE] != data:
            raise EvidenceGenerationError("gramine: the report carries other report data")
        return report
