"""``sealpod kms recovery-keys`` and ``sealpod kms recover``: disaster recovery of the master
key with threshold shares (see :mod:`sealpod.kms.recovery`). Both work on the database
directly, like ``init`` and ``rekey``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, out
from sealpod.cli.kms._shared import (
    CurrentKeyFileOption,
    CurrentShareFileOption,
    DbOption,
    _print_shares,
    _say_printed,
    kms_app,
)
from sealpod.cli.kms.rekey import current_key, read_shares
from sealpod.errors import ConfigError

if TYPE_CHECKING:
    from sealpod.kms.shamir import Share

SharesOption = Annotated[
    int, typer.Option("--shares", min=2, max=255, help="Split the recovery key in N shares.")
]
ThresholdOption = Annotated[
    int, typer.Option("--threshold", min=2, max=255, help="Shares needed to recover.")
]


@command(kms_app, "recovery-keys")
def recovery_keys_cmd(
    shares: SharesOption,
    threshold: ThresholdOption,
    db: DbOption = None,
    master_key_file: CurrentKeyFileOption = None,
    share_file: CurrentShareFileOption = None,
    shares_dir: Annotated[
        Path | None,
        typer.Option("--shares-dir", help="Write each recovery share to DIR/recovery-N.txt."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Create (or replace) recovery shares: any THRESHOLD of them give the master key back
    with `sealpod kms recover` if its file or the unseal shares are lost. New recovery shares
    make the old ones useless; a rekey drops them unless --keep-recovery-keys. The shares are
    written (fsynced) or printed before the commit."""
    from sealpod.kms.keyfiles import claim_share_files, write_shares
    from sealpod.kms.recovery import create_recovery_shares, shares_in_force
    from sealpod.kms.settings import KmsSettings
    from sealpod.kms.shamir import check_parameters
    from sealpod.kms.store import Store

    settings = KmsSettings(db_url=db) if db else KmsSettings()
    store = Store.open(settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous)
    created: list[Path] = []
    handed: list[tuple[Share, ...]] = []
    try:
        with store.read() as tx:
            meta = tx.all_meta()
        if "initialized" not in meta:
            raise ConfigError("the KMS database is not initialised; run `sealpod kms init`")
        master, _ = current_key(meta, master_key_file, share_file)
        check_parameters(shares=shares, threshold=threshold)
        if shares_dir is None and json_output:
            raise ConfigError(
                "recovery shares must be stored before the commit: give --shares-dir with --json"
            )
        if shares_dir is not None:
            created = claim_share_files(shares_dir, shares, "recovery")

        def store_shares(parts: tuple[Share, ...]) -> None:
            # Before the commit: if the shares cannot be written or shown, nothing changes.
            handed.append(parts)
            if shares_dir is not None:
                write_shares(shares_dir, "recovery", parts)
                return
            _print_shares(
                f"recovery key: {shares} shares, {threshold} recover the master key:",
                parts,
                "give them to custodians other than the unseal-share holders, kept offline",
            )

        try:
            result = create_recovery_shares(
                store, master, shares=shares, threshold=threshold, before_commit=store_shares
            )
        except BaseException:
            # Did the commit happen (its answer lost)? Then the new shares are the only working
            # ones: keep them. Only a known "no" removes the files.
            committed = shares_in_force(store, master, handed[0]) if handed else False
            if committed is False:
                for path in created:
                    path.unlink(missing_ok=True)
                created = []
            if handed and shares_dir is None:
                _say_printed(committed, "recovery shares")
            raise
    finally:
        store.close()
    summary: dict[str, object] = {
        "ok": True,
        "key_id": master.key_id,
        "shares": len(result.shares),
        "threshold": result.threshold,
        "replaced": result.replaced,
        "at": result.at,
    }
    if shares_dir is not None:
        summary["share_files"] = [str(p) for p in created]
    if json_output:
        emit_json(summary)
        return
    for path in created:
        out.print(f"recovery share written to {path}")
    verb = "replaced (the old recovery shares open nothing now)" if result.replaced else "created"
    out.print(f"recovery key {verb}")
    out.print("give the shares to custodians other than the unseal-share holders, kept offline")


@command(kms_app, "recover")
def recover_cmd(
    db: DbOption = None,
    share_file: Annotated[
        list[Path] | None,
        typer.Option("--share-file", help="A recovery share (repeatable; else stdin or prompts)."),
    ] = None,
    master_key_file: Annotated[
        Path | None,
        typer.Option("--master-key-file", help="Write the recovered key to this new file (0600)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Give the master key back from recovery shares, into a new key file; then start the
    server with it, or run `sealpod kms rekey` to move to a fresh key."""
    from sealpod.kms.keys import write_master_key_file
    from sealpod.kms.recovery import recover_master_key, recovery_info
    from sealpod.kms.settings import KmsSettings, kms_home
    from sealpod.kms.store import Store

    settings = KmsSettings(db_url=db) if db else KmsSettings()
    target = master_key_file or kms_home() / "master.key"
    if target.exists():
        raise ConfigError(
            f"{target} already exists; give --master-key-file for a new file to write the key to"
        )
    store = Store.open(settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous)
    try:
        info = recovery_info(store)
        if info is None:
            raise ConfigError("this KMS has no recovery key (`sealpod kms recovery-keys`)")
        parts = read_shares(share_file, info.threshold, "recovery share")
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create {target.parent}: {exc.strerror}") from exc
        master = recover_master_key(store, parts)
    finally:
        store.close()
    write_master_key_file(target, master)
    summary = {"ok": True, "key_id": master.key_id, "master_key": str(target)}
    if json_output:
        emit_json(summary)
        return
    out.print(f"master key {master.key_id} recovered into {target} (mode 600)")
    out.print("start the server with it, or run `sealpod kms rekey` to move to a fresh key")
