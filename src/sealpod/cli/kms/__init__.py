"""``sealpod kms``: initialise, unseal and serve the key broker; manage its secrets, policies,
users and audit log; fetch secrets as an attested workload.

Rendering only: each command parses options, calls :mod:`sealpod.kms` and prints. Secret values
come from files or environment variables (``--from-file``/``--from-env``), never from argv; the
admin token comes from ``$SEALPOD_KMS_TOKEN``, ``--token-file`` or
``$SEALPOD_HOME/kms/admin.token``.
The server is found by ``--url``, ``$SEALPOD_KMS_URL``, or the ``server.json`` that
``sealpod kms serve`` writes next to its database (which also names its TLS certificate).

Modules by job: :mod:`._shared` (apps, common options, helpers), :mod:`.server` (init, unseal,
status, serve, fetch), :mod:`.audit` (log, verify, checkpoints), :mod:`.rekey` (master key),
:mod:`.recovery` (recovery shares), :mod:`.rotate_key` (token-signing key, CA),
:mod:`.secrets`, :mod:`.policies`, :mod:`.users`.
Importing this package registers every command; the libraries they call are imported when a
command runs.
"""

from __future__ import annotations

import typer

# Imported for their side effect: each module adds its commands to the apps in ``_shared``, in
# the order ``sealpod kms --help`` lists them.
from sealpod.cli.kms import (
    audit,
    migrate,
    policies,
    recovery,
    rekey,
    rotate_key,
    secrets,
    server,
    users,
)
from sealpod.cli.kms._shared import MAX_VALUE_FILE, _read_value, kms_app

__all__ = [
    "MAX_VALUE_FILE",
    "_read_value",
    "audit",
    "kms_app",
    "migrate",
    "policies",
    "recovery",
    "register",
    "rekey",
    "rotate_key",
    "secrets",
    "server",
    "users",
]


def register(app: typer.Typer) -> None:
    """Add ``sealpod kms`` to the root app."""
    app.add_typer(kms_app, name="kms")
