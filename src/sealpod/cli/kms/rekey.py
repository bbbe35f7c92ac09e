"""``sealpod kms rekey``: replace the master key of a stopped KMS (see :mod:`sealpod.kms.rekey`).

Where the new key goes, and in which order, so that no crash loses it:

* ``--new-master-key-file F``: F is created (0600, fsynced) before the database commits; on a
  failure it is removed again.
* in place (the current key came from a key file, no other destination given): the new key is
  staged in ``F.new`` before the commit and renamed over ``F`` after it. A crash between the
  two leaves ``F.new`` holding the key the database is under; running ``rekey`` again finishes
  the rename (and a ``F.new`` from a rekey that never committed is discarded).
* ``--shares N --threshold K``: files in ``--shares-dir`` are created empty before the commit
  and filled after it; without ``--shares-dir`` the shares are printed once, after the commit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod.cli._common import JsonOption, command, emit_json, err, is_interactive, out
from sealpod.cli.kms._shared import DbOption, _read_text, _write_private, kms_app
from sealpod.errors import ConfigError

if TYPE_CHECKING:
    from sealpod.kms.keys import MasterKey
    from sealpod.kms.shamir import Share
    from sealpod.kms.store import Store


@command(kms_app, "rekey")
def rekey_cmd(
    db: DbOption = None,
    master_key_file: Annotated[
        Path | None,
        typer.Option(
            "--master-key-file",
            help="The current key file (default: $SEALPOD_KMS_MASTER_KEY, else kms/master.key).",
        ),
    ] = None,
    share_file: Annotated[
        list[Path] | None,
        typer.Option(
            "--share-file", help="A current Shamir share (repeatable; else stdin or a prompt)."
        ),
    ] = None,
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
    json_output: JsonOption = False,
) -> None:
    """Replace the master key: rewrap every secret's data key and the KMS's own keys, and
    re-MAC the (verified) audit log, in one transaction.

    Stop every server on the database first: one left running seals itself at its next write
    and answers 503 until it is restarted with the new key. By default the new key replaces
    the current key file, or, for a KMS under Shamir shares, is split into as many new shares
    as before; --new-master-key-file or --shares/--threshold send it elsewhere (one of them is
    needed when the current key came from $SEALPOD_KMS_MASTER_KEY).
    """
    from sealpod.kms.keys import MasterKey, load_master_key_file
    from sealpod.kms.rekey import rekey
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
        old, old_file = current_key(meta, master_key_file, share_file)
        if not shares and new_master_key_file is None and old_file is None:
            if meta.get("mode") == "shamir":  # new shares, as many as before
                shares, threshold = int(meta.get("shares", "0")), int(meta.get("threshold", "0"))
        if shares_dir is not None and not shares:
            raise ConfigError("--shares-dir needs --shares and --threshold")
        staged = _staged_path(old_file) if old_file is not None else None
        if old_file is not None and staged is not None and staged.exists():
            if _finish_interrupted(store, old_file, staged, json_output):
                return
        target = new_master_key_file
        if target is None and not shares:
            if staged is None:
                raise ConfigError(
                    "say where the new key goes: --new-master-key-file FILE, or "
                    "--shares N --threshold K (the current key came from the environment)"
                )
            target = staged
        in_place = target is not None and target == staged
        new = MasterKey.generate()
        created = _prepare_outputs(target, new, shares, shares_dir)
        try:
            with _progress_bar(json_output) as bar:
                result = rekey(store, old, new, shares=shares, threshold=threshold, progress=bar)
        except BaseException:
            # Remove the new key's files only once the database is known to be under the old
            # key still: a commit whose answer was lost must not take its key with it.
            if _still_under(store, old):
                for path in created:
                    path.unlink(missing_ok=True)
            raise
    finally:
        store.close()
    summary = result.summary()
    if in_place and old_file is not None and target is not None:
        try:
            os.replace(target, old_file)
            fsync_dir(old_file.parent)
        except OSError as exc:
            raise ConfigError(
                f"the database is now under the key in {target}, which could not replace "
                f"{old_file} ({exc.strerror}): move it there, or run `sealpod kms rekey` again"
            ) from exc
        load_master_key_file(old_file)  # what is there now must read back
        summary["master_key"] = str(old_file)
    else:
        if target is not None:
            summary["master_key"] = str(target)
        if old_file is not None:
            summary["old_key_file"] = str(old_file)  # left in place; it opens nothing now
    share_lines = [s.to_text() for s in result.shares]
    if share_lines and shares_dir is not None:
        for s in result.shares:
            _write_private(shares_dir / f"share-{s.index}.txt", (s.to_text() + "\n").encode())
        share_lines = [str(p) for p in created]
        summary["share_files"] = share_lines
    elif share_lines:
        summary["shares"] = share_lines  # the only time they are shown: hand them out now
    _render(summary, share_lines, json_output)


def current_key(
    meta: dict[str, str], key_file: Path | None, share_files: list[Path] | None
) -> tuple[MasterKey, Path | None]:
    """The current master key, and the file it came from (None: env or shares)."""
    from sealpod.kms.keys import MasterKey, load_master_key_env, load_master_key_file
    from sealpod.kms.settings import kms_home
    from sealpod.kms.shamir import combine

    if meta.get("mode") == "shamir" and key_file is None:
        threshold = int(meta.get("threshold", "0"))
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


def _still_under(store: Store, key: MasterKey) -> bool:
    from sealpod.kms.state import SealState

    try:
        SealState(store).check_key(key)
    except Exception:  # unknown means "keep the new key's files"
        return False
    return True


def _staged_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".new")


def _finish_interrupted(store: Store, key_file: Path, staged: Path, json_output: bool) -> bool:
    """A ``F.new`` exists: finish its rename if the database is under it (True), else drop it."""
    from sealpod.kms.keys import load_master_key_file
    from sealpod.kms.state import SealState

    try:
        staged_key = load_master_key_file(staged)
        SealState(store).check_key(staged_key)
    except ConfigError:
        staged.unlink()  # left by a rekey that never committed: the database is not under it
        return False
    os.replace(staged, key_file)
    fsync_dir(key_file.parent)
    summary: dict[str, object] = {
        "ok": True,
        "completed": "interrupted rekey",
        "new_key_id": staged_key.key_id,
        "master_key": str(key_file),
    }
    if json_output:
        emit_json(summary)
    else:
        out.print(
            f"finished an interrupted rekey: {key_file} now holds key {staged_key.key_id}, "
            "which the database is under; run rekey again for another new key"
        )
    return True


def _prepare_outputs(
    target: Path | None, new: MasterKey, shares: int, shares_dir: Path | None
) -> list[Path]:
    """Create what the new key goes to before the commit (a key that cannot be written
    afterwards would be lost with the database under it)."""
    from sealpod.kms.keys import write_master_key_file

    created: list[Path] = []
    if target is not None:
        write_master_key_file(target, new)
        created.append(target)
    if shares and shares_dir is not None:
        try:
            shares_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            for index in range(1, shares + 1):
                path = shares_dir / f"share-{index}.txt"
                if path.exists():
                    raise ConfigError(f"share file {path} already exists")
                _write_private(path, b"")
                created.append(path)
        except OSError as exc:
            for path in created:
                path.unlink(missing_ok=True)
            raise ConfigError(f"cannot create {shares_dir}: {exc.strerror}") from exc
        except ConfigError:
            for path in created:
                path.unlink(missing_ok=True)
            raise
    return created


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _progress_bar(json_output: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not is_interactive(json_output):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    ) as bar:
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


def _render(summary: dict[str, object], share_lines: list[str], json_output: bool) -> None:
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
    if summary["mode"] == "shamir":
        out.print(
            f"new key split into {summary['share_count']} shares, {summary['threshold']} needed:"
        )
        for line in share_lines:
            out.print(f"  {line}")
        out.print("hand each share to a different custodian; the key itself was not kept")
    out.print("start the servers again with the new key")
