"""What the agent imports before it forks pods: every module a ``sealpod run`` may import on
its way to the workload, for any backend and with volumes, so that a child imports nothing.

Names only; a test imports each (a renamed module must not silently fall off the list) and
the e2e test checks that a start through the agent loads no module the agent had not.
"""

from __future__ import annotations

import importlib

MODULES = (
    "sealpod.cli.run",
    "sealpod.runtime.run",
    "sealpod.runtime.volumes",
    "sealpod.runtime.kms",
    "sealpod.runtime.backends",
    "sealpod.kms.serverinfo",
    "sealpod.kms.transport",
    "sealpod.kms.tokens",  # a volume's counter reads sign a proof
    "sealpod.kms.models",  # and parse the answer
    "sealpod.tee.sim",
    "sealpod.tee.detect",
    "sealpod.ratls.issue",
    "sealpod.volume",
    "sealpod.volume.store",
    "sealpod.volume.fuse",
    "sealpod.gramine.launch",
    "sealpod.evidence.envelope",
    # Imported inside functions by the modules above or their libraries:
    "pyseccomp",
    "cryptography.hazmat.backends.openssl.backend",
    "encodings.ascii",
)


def preload() -> None:
    """Import :data:`MODULES`.

    Raises:
        Nothing: a module whose optional dependency is missing (the ``fuse`` extra's volume
            modules) is skipped; a start that needs it fails there as a cold one would.
    """
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
