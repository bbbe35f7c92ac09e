"""A fake Gramine ``/dev/attestation`` tree, served by a thread (usually backed by the simulator).

``FakeGramine(root, quote=..., report=..., my_target_info=...)`` creates ``root`` with
``attestation_type`` and ``my_target_info`` as plain files, ``user_report_data`` and
``target_info`` as input FIFOs, and ``quote`` and ``report`` as output FIFOs whose contents are
computed when read, from the last report data (and target info) written — as Gramine's
pseudo-files behave. Because the tree is made of ordinary FIFOs it also serves other processes,
e.g. ``sealpod attest --tee sgx --gramine-root ROOT`` run as a subprocess.

:func:`sealpod.testing.sim_fakes.sim_gramine` builds one whose quotes and reports come from a
:class:`~sealpod.tee.sim.SimPlatform`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from sealpod.tee.gramine import GramineBackend
from sealpod.testing._fifo import FifoServedFake, FifoServer

#: ``quote(report_data) -> quote bytes``
QuoteProducer = Callable[[bytes], bytes]
#: ``report(target_info, report_data) -> 432-byte SGX REPORT``
ReportProducer = Callable[[bytes, bytes], bytes]


class FakeGramine(FifoServedFake):
    """The fake tree and its serving thread (use as a context manager)."""

    def __init__(
        self,
        root: Path,
        *,
        quote: QuoteProducer,
        report: ReportProducer | None = None,
        my_target_info: bytes = bytes(512),
        attestation_type: str = "dcap",
    ) -> None:
        self.root = root
        self._quote = quote
        self._report = report
        self._lock = threading.Lock()
        self.user_report_data = bytes(64)
        self.target_info = bytes(512)
        self.quotes_served = 0
        self._server = FifoServer()
        root.mkdir(parents=True, exist_ok=True)
        (root / "attestation_type").write_text(attestation_type)
        (root / "my_target_info").write_bytes(my_target_info)
        self._server.add_input(root / "user_report_data", self._on_report_data)
        self._server.add_input(root / "target_info", self._on_target_info)
        self._server.add_output(root / "quote", self._on_quote)
        self._server.add_output(root / "report", self._on_report)

    def backend(self) -> GramineBackend:
        return GramineBackend(self.root)

    def _on_report_data(self, data: bytes) -> None:
        with self._lock:
            self.user_report_data = data[:64].ljust(64, b"\x00")

    def _on_target_info(self, data: bytes) -> None:
        with self._lock:
            self.target_info = data[:512].ljust(512, b"\x00")

    def _on_quote(self) -> bytes:
        with self._lock:
            self.quotes_served += 1
            return self._quote(self.user_report_data)

    def _on_report(self) -> bytes:
        if self._report is None:
            return b""
        with self._lock:
            return self._report(self.target_info, self.user_report_data)
