"""``sealpod kms rekey``: replace the master key of a stopped KMS (see :mod:`sealpod.kms.rekey`).

Where the new key goes, and in which order, so that no crash loses it:

* ``--new-master-key-file F``: F is created (0600, fsynced) before the database commits; on a
  failure it is removed again.
* in place (the current key came from a key file, no other destination given): the new key is
  staged in ``F.new`` before the commit and renamed over ``F`` after it. A crash between the
  two leaves ``F.new`` holding the key the database is under; running ``rekey`` again finishes
  the rename (and a ``F.new`` from a rekey that never committed is discarded).
* ``--shares N --threshold K``: the shares are written to ``--shares-dir`` and fsynced, or
  printed, inside the transaction just before it commits; if that fails nothing changes. If the
  commit fails after the shares were printed, stderr says whether they are void or valid.

The file mechanics (claiming, staging, the lock beside the key file, finishing an interrupted
rename) are :mod:`sealpod.kms.keyfiles`; this module decides what goes where and says so.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err, is_interactive, out, progress
from sealpod.cli.kms._shared import (
    CurrentKeyFileOption,
    CurrentShareFileOption,
    DbOption,
    _print_shares,
    _read_text,
    _say_printed,
    kms_app,
)
from sealpod.errors import ConfigError

if TYPE_CHECKING:
    from sealpod.kms.keys import MasterKey
    from sealpod.kms.shamir import Share
    from sealpod.kms.store import Store


@command(kms_app, "rekey")
def rekey_cmd(
    db: DbOption = None,
    master_key_file: CurrentKeyFileOption = None,
    share_file: CurrentShareFileOption = None,
    new_master_key_file: Annotated[
        Path | None,
        typer.Option("--new-master-key-file", help="Write the new key to this new file."),
    ] = None,
    shares: Annotated[
        int, typer.Option("--shares", min=0, max=255, help="Split the new key in N shares.")
    ] = 0,
    threshold: Annotated[
        int, typer.Option("--threshold", min=0, max=255, help="New shares needed to unseal.")
    ] = 0,
    shares_dir: Annotated[
        Path | None,
        typer.Option("--shares-dir", help="Write each new share to DIR/share-N.txt."),
    ] = None,
    keep_recovery_keys: Annotated[
        bool,
        typer.Option(
            "--keep-recovery-keys",
            help="Re-escrow the new key under the existing recovery key (routine rotation "
            "only: it does not shut out whoever held the old key).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Replace the master key: rewrap every secret's data key and the KMS's own keys, and
    re-MAC the (verified) audit log, in one transaction.

    Stop every server on the database first: one left running seals itself at its next write
    and answers 503 until it is restarted with the new key. By default the new key replaces
    the current key file, or, for a KMS under Shamir shares, is split into as many new shares
    as before; --new-master-key-file or --shares/--threshold send it elsewhere (one of them is
    needed when the current key came from $SEALPOD_KMS_MASTER_KEY). New shares are written
    (--shares-dir) or printed before the commit. Recovery keys are dropped unless
    --keep-recovery-keys.
    """
    from sealpod.kms.settings import KmsSettings
    from sealpod.kms.store import Store

    if (shares == 0) != (threshold == 0):
        raise ConfigError("give both --shares and --threshold, or neither")
    if shares and new_master_key_file is not None:
        raise ConfigError("give either --new-master-key-file or --shares/--threshold, not both")
    settings = KmsSettings(db_url=db) if db else KmsSettings()
    store = Store.open(settings.resolved_db_url(), sqlite_synchronous=settings.sqlite_synchronous)
    try:
        with store.read() as tx:
            meta = tx.all_meta()
        if "initialized" not in meta:
            raise ConfigError("the KMS database is not initialised; run `sealpod kms init`")
        from sealpod.kms.keyfiles import key_file_lock

        locked = _key_file_of(meta, master_key_file)
        wait = f"waiting for another rekey of {locked} to finish…"
        with key_file_lock(locked, on_wait=lambda: err.print(wait, markup=False)):
            _rekey_locked(
                store, locked=locked, master_key_file=master_key_file, share_file=share_file,
                new_master_key_file=new_master_key_file, shares=shares, threshold=threshold,
                shares_dir=shares_dir, keep_recovery=keep_recovery_keys,
                json_output=json_output,
            )  # fmt: skip
    finally:
        store.close()


def _rekey_locked(
    store: Store,
    *,
    locked: Path | None,
    master_key_file: Path | None,
    share_file: list[Path] | None,
    new_master_key_file: Path | None,
    shares: int,
    threshold: int,
    shares_dir: Path | None,
    keep_recovery: bool,
    json_output: bool,
) -> None:
    """The rekey itself, under the lock: the current key is read only now, so a rekey that
    waited for another one reads the key that one left."""
    from sealpod.kms.shamir import check_parameters

    with store.read() as tx:  # read under the lock: another rekey may have changed it
        meta = tx.all_meta()
    if _key_file_of(meta, master_key_file) != locked:
        raise ConfigError(
            "another rekey changed where this KMS's key lives while this one waited; run "
            "`sealpod kms rekey` again"
        )
    old, old_file = current_key(meta, master_key_file, share_file)
    if not shares and new_master_key_file is None and old_file is None:
        if meta.get("mode") == "shamir":  # new shares, as many as before
            shares, threshold = _stored_int(meta, "shares"), _stored_int(meta, "threshold")
    if shares_dir is not None and not shares:
        raise ConfigError("--shares-dir needs --shares and --threshold")
    if shares:
        check_parameters(shares=shares, threshold=threshold)
    if shares and shares_dir is None and json_output:
        raise ConfigError(
            "new shares must be stored before the commit: give --shares-dir with --json"
        )
    plan = _Plan(
        old=old,
        old_file=old_file,
        target=new_master_key_file,
        shares=shares,
        threshold=threshold,
        shares_dir=shares_dir,
        keep_recovery=keep_recovery,
        json_output=json_output,
    )
    plan.run(store)


@dataclass(kw_only=True)
class _Plan:
    """One rekey from the CLI: where the new key goes, what is written before the commit and
    what after it."""

    old: MasterKey
    old_file: Path | None
    target: Path | None
    shares: int
    threshold: int
    shares_dir: Path | None
    keep_recovery: bool
    json_output: bool
    created: list[Path] = field(default_factory=list)
    printed: bool = False

    def run(self, store: Store) -> None:
        from sealpod.kms import keyfiles
        from sealpod.kms.keys import MasterKey
        from sealpod.kms.rekey import rekey

        if self.old_file is not None:
            finished = keyfiles.finish_interrupted(store, self.old_file)
            if finished is not None:
                _render_finished(self.old_file, finished, self.json_output)
                return
        staged = keyfiles.staged_path(self.old_file) if self.old_file is not None else None
        if self.target is None and not self.shares:
            if staged is None:
                raise ConfigError(
                    "say where the new key goes: --new-master-key-file FILE, or "
                    "--shares N --threshold K (the current key came from the environment)"
                )
            self.target = staged
        new = MasterKey.generate()
        self.created = _prepare_outputs(self.target, new, self.shares, self.shares_dir)
        try:
            with _progress_bar(self.json_output) as bar:
                result = rekey(
                    store, self.old, new, shares=self.shares, threshold=self.threshold,
                    keep_recovery=self.keep_recovery, before_commit=self._store_shares,
                    progress=bar,
                )  # fmt: skip
        except BaseException:
            # Remove the new key's files only once the database is known not to be under the
            # new key: a commit whose answer was lost must not take its key with it.
            committed = keyfiles.db_under(store, new)
            if committed is False:
                for path in self.created:
                    path.unlink(missing_ok=True)
            if self.printed:
                _say_printed(committed, "shares")
            raise
        summary = result.summary()
        if self.target is not None and self.target == staged and self.old_file is not None:
            keyfiles.replace_key_file(self.target, self.old_file)
            summary["master_key"] = str(self.old_file)
        else:
            if self.target is not None:
                summary["master_key"] = str(self.target)
            if self.old_file is not None:
                summary["old_key_file"] = str(self.old_file)  # left in place; opens nothing now
        if result.shares and self.shares_dir is not None:
            summary["share_files"] = [str(p) for p in self.created]
        _render(summary, self.json_output)

    def _store_shares(self, parts: tuple[Share, ...]) -> None:
        """Inside the transaction, before the commit: the new shares reach the files (fsynced)
        or the terminal now; if that fails, the rekey rolls back."""
        from sealpod.kms.keyfiles import write_shares

        if not parts:
            return
        if self.shares_dir is not None:
            write_shares(self.shares_dir, "share", parts)
            return
        self.printed = True
        _print_shares(
            f"new key split into {len(parts)} shares, {self.threshold} to unseal:",
            parts,
            "hand each share to a different custodian; the key itself is not kept",
        )


def _stored_int(meta: dict[str, str], key: str) -> int:
    try:
        return int(meta.get(key, "0"))
    except ValueError as exc:
        raise ConfigError(f"the database's {key!r} setting is damaged") from exc


def _key_file_of(meta: dict[str, str], key_file: Path | None) -> Path | None:
    """The key file :func:`current_key` will read (None: the key comes from shares or the
    environment, and no file is staged beside it)."""
    from sealpod.kms.keys import MASTER_KEY_ENV
    from sealpod.kms.settings import kms_home

    if key_file is not None:
        return key_file
    if meta.get("mode") == "shamir" or os.environ.get(MASTER_KEY_ENV):
        return None
    return kms_home() / "master.key"


def current_key(
    meta: dict[str, str], key_file: Path | None, share_files: list[Path] | None
) -> tuple[MasterKey, Path | None]:
    """The current master key, and the file it came from (None: env or shares)."""
    from sealpod.kms.keys import MasterKey, load_master_key_env, load_master_key_file
    from sealpod.kms.settings import kms_home
    from sealpod.kms.shamir import combine

    if meta.get("mode") == "shamir" and key_file is None:
        threshold = _stored_int(meta, "threshold")
        parts = read_shares(share_files, threshold, "current share")
        try:
            return MasterKey(combine(parts)), None
        except ConfigError as exc:
            raise ConfigError(f"shares do not combine: {exc.message}") from exc
    if share_files:
        raise ConfigError("this KMS is not under Shamir shares: give its key, not shares")
    if key_file is None:
        env_key = load_master_key_env()
        if env_key is not None:
            return env_key, None
        key_file = kms_home() / "master.key"
    return load_master_key_file(key_file), key_file


def read_shares(files: list[Path] | None, needed: int, label: str) -> list[Share]:
    """Shares from files, else standard input (one per line), else ``needed`` hidden prompts.

    Raises:
        ConfigError: unreadable or malformed shares, or fewer than ``needed``.
    """
    from sealpod.kms.shamir import Share

    texts = [_read_text(p, "share file", 4096) for p in files or []]
    if not texts:
        if sys.stdin.isatty():
            texts = [
                str(typer.prompt(f"{label} {i + 1}/{needed}", hide_input=True))
                for i in range(needed)
            ]
        else:
            texts = [line.strip() for line in sys.stdin if line.strip()]
    if len(texts) < needed:
        raise ConfigError(f"{len(texts)} share(s) given, {needed} needed")
    return [Share.from_text(t) for t in texts]


def _prepare_outputs(
    target: Path | None, new: MasterKey, shares: int, shares_dir: Path | None
) -> list[Path]:
    """Create what the new key goes to before the commit (a key that cannot be written
    afterwards would be lost with the database under it)."""
    from sealpod.kms.keyfiles import claim_share_files
    from sealpod.kms.keys import write_master_key_file

    created: list[Path] = []
    if target is not None:
        write_master_key_file(target, new)
        created.append(target)
    if shares and shares_dir is not None:
        try:
            created += claim_share_files(shares_dir, shares, "share")
        except ConfigError:
            for path in created:
                path.unlink(missing_ok=True)
            raise
    return created


@contextlib.contextmanager
def _progress_bar(json_output: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not is_interactive(json_output):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TaskID

    with progress(BarColumn(), MofNCompleteColumn()) as bar:
        tasks: dict[str, TaskID] = {}
        labels = {
            "audit": "verifying and re-MACing the audit log",
            "secrets": "rewrapping data keys",
        }

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def _render_finished(key_file: Path, key: MasterKey, json_output: bool) -> None:
    if json_output:
        emit_json({"ok": True, "completed": "interrupted rekey", "new_key_id": key.key_id,
                   "master_key": str(key_file)})  # fmt: skip
        return
    out.print(
        f"finished an interrupted rekey: {key_file} now holds key {key.key_id}, which the "
        "database is under; run rekey again for another new key"
    )


def _render(summary: dict[str, object], json_output: bool) -> None:
    summary = {"ok": True, **summary}
    if json_output:
        emit_json(summary)
        return
    out.print(
        f"master key replaced: {summary['old_key_id']} → {summary['new_key_id']} "
        f"({summary['versions_rewrapped']} secret versions rewrapped, "
        f"{summary['audit_records_remaced']} audit records re-MACed)"
    )
    if "master_key" in summary:
        out.print(f"new key in {summary['master_key']} (mode 600)")
    if summary.get("old_key_file"):
        out.print(f"the old key file {summary['old_key_file']} no longer opens anything")
    for line in summary.get("share_files", []) or []:  # type: ignore[attr-defined]
        out.print(f"new share written to {line}")
    if summary.get("recovery_keys") == "dropped":
        out.print(
            "the recovery shares open nothing now: make new ones with `sealpod kms recovery-keys`"
        )
    out.print("start the servers again with the new key")
