"""``sealpod volume``: create, mount, unmount, fsck, info, rekey, export and import volumes.

Rendering only: each command parses options, calls :mod:`sealpod.volume` and prints. Keys come
from key files (mode 0600; 32 raw bytes or 64 hex digits), never from argv. Version counters
(rollback protection across restarts) are kept in ``$SEALPOD_HOME/volume-counters`` unless
``--counter-dir`` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sealpod.cli._common import (
    JsonOption,
    byte_columns,
    command,
    emit_json,
    err,
    human_size,
    is_interactive,
    out,
    overhead_text,
    progress,
)
from sealpod.errors import VolumeCorrupt, VolumeError

if TYPE_CHECKING:
    from sealpod.volume import Freshness

# The volume library (cryptography, pydantic settings, rich tables) is imported inside each
# command, so that registering these commands costs nothing at CLI startup.

MOUNT_TIMEOUT_SECS = 60

volume_app = typer.Typer(
    name="volume",
    help="Encrypted, authenticated, rollback-protected volumes (and FUSE mounts).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

DirArg = Annotated[Path, typer.Argument(help="The volume's directory on the host.")]
KeyFileOption = Annotated[
    Path, typer.Option("--key-file", help="Key file: 32 random bytes or 64 hex digits, mode 0600.")
]
CounterDirOption = Annotated[
    Path | None,
    typer.Option(
        "--counter-dir",
        help="Where version counters live (default: $SEALPOD_HOME/volume-counters).",
    ),
]
UnsafeOption = Annotated[
    bool,
    typer.Option(
        "--unsafe-no-rollback-check",
        help="Do not check or record the version counter (no rollback protection).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``sealpod volume`` to the root app."""
    app.add_typer(volume_app, name="volume")


def _freshness(counter_dir: Path | None, unsafe: bool) -> Freshness:
    from sealpod.settings import sealpod_home
    from sealpod.volume import LocalFreshness, UnsafeNoFreshness

    if unsafe:
        return UnsafeNoFreshness()
    return LocalFreshness(counter_dir or sealpod_home(create=True) / "volume-counters")


@contextmanager
def _progress(
    json_mode: bool, total: int, label: str
) -> Iterator[tuple[Callable[[int], None] | None, Callable[[str], None] | None]]:
    """(advance by N bytes, name the current phase) for a labelled bar, or (None, None)."""
    if not is_interactive(json_mode):
        yield None, None
        return
    # plain-text labels (a file name is never markup), IEC units
    with progress(*byte_columns()[:3]) as bar:
        task = bar.add_task(label, total=total)

        def phase(name: str) -> None:
            bar.update(task, description=f"{label}: {name}")

        yield (lambda n: bar.advance(task, n)), phase


@command(volume_app, "create")
def create_cmd(
    directory: DirArg,
    key_file: KeyFileOption,
    new_key: Annotated[
        bool, typer.Option("--new-key", help="Generate the key file (mode 0600) first.")
    ] = False,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Create an empty volume in DIRECTORY."""
    from sealpod.volume import create_volume, generate_key_file, load_key_file

    key = generate_key_file(key_file) if new_key else load_key_file(key_file)
    volume_id = create_volume(directory, key, counter=_freshness(counter_dir, unsafe))
    if json_output:
        emit_json({"ok": True, "volume_id": volume_id, "path": str(directory)})
    else:
        out.print(f"created volume {volume_id} in {directory}", markup=False)


@command(volume_app, "info")
def info_cmd(
    directory: DirArg,
    key_file: KeyFileOption,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Show a volume's id, counter, contents and storage overhead."""
    from rich.table import Table

    from sealpod.volume import load_key_file, open_volume

    key = load_key_file(key_file)
    with open_volume(directory, key, counter=_freshness(counter_dir, unsafe), readonly=True) as vol:
        info = vol.info()
    overhead = (
        (info.storage_bytes - info.logical_bytes) / info.logical_bytes
        if info.logical_bytes
        else None
    )
    if json_output:
        emit_json(
            {
                "ok": True,
                "path": info.path,
                "volume_id": info.volume_id,
                "format_version": info.format_version,
                "counter": info.counter,
                "freshness_counter": info.freshness_counter,
                "files": info.files,
                "directories": info.directories,
                "symlinks": info.symlinks,
                "logical_bytes": info.logical_bytes,
                "storage_bytes": info.storage_bytes,
                "overhead": overhead,
            }
        )
        return
    table = Table(show_header=False, box=None)
    table.add_row("volume id", info.volume_id)
    table.add_row("path", info.path)
    table.add_row("format version", str(info.format_version))
    table.add_row("counter", f"{info.counter} (recorded: {info.freshness_counter})")
    table.add_row("contents", f"{info.files} files, {info.directories} dirs, "
                  f"{info.symlinks} symlinks")  # fmt: skip
    table.add_row("logical size", f"{human_size(info.logical_bytes)} ({info.logical_bytes} bytes)")
    overhead_note = overhead_text(info.logical_bytes, info.storage_bytes)
    table.add_row("host storage", f"{human_size(info.storage_bytes)} ({overhead_note})")
    out.print(table)


@command(volume_app, "fsck")
def fsck_cmd(
    directory: DirArg,
    key_file: KeyFileOption,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Check every header slot, file and node; list everything corrupt (exit 15 if any)."""
    from rich.table import Table

    from sealpod.volume import load_key_file
    from sealpod.volume.fsck import fsck

    report = fsck(directory, load_key_file(key_file), counter=_freshness(counter_dir, unsafe))
    if json_output:
        emit_json(report.to_dict())
    else:
        out.print(f"volume {report.volume_id}  counter {report.counter}", markup=False)
        for position, status in enumerate(report.header_slots):
            out.print(f"header slot {position}: {status}", markup=False)
        out.print(f"journal: {report.journal}", markup=False)
        out.print(
            f"checked {report.files_checked} files, {report.nodes_checked} nodes", markup=False
        )
        if report.stray_host_files:
            out.print(
                f"{len(report.stray_host_files)} stray host files (removed on the next "
                "writable open)",
                markup=False,
            )
        if report.problems:
            table = Table("path", "node", "problem")
            for p in report.problems:
                table.add_row(p.path, p.node, p.message)
            out.print(table)
        out.print("clean" if report.ok else f"{len(report.problems)} problems", markup=False)
    if not report.ok:
        raise typer.Exit(VolumeCorrupt.exit_code)


@command(volume_app, "rekey")
def rekey_cmd(
    directory: DirArg,
    key_file: KeyFileOption,
    new_key_file: Annotated[Path, typer.Option("--new-key-file", help="The new key file.")],
    generate: Annotated[
        bool, typer.Option("--generate", help="Generate the new key file (mode 0600) first.")
    ] = False,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Re-wrap the volume key under a new key; the data is not re-encrypted."""
    from sealpod.volume import generate_key_file, load_key_file, open_volume

    key = load_key_file(key_file)
    with open_volume(directory, key, counter=_freshness(counter_dir, unsafe)) as vol:
        new_key = generate_key_file(new_key_file) if generate else load_key_file(new_key_file)
        vol.rekey(new_key)
        volume_id, counter = vol.volume_id, vol.counter
    if json_output:
        emit_json({"ok": True, "volume_id": volume_id, "counter": counter})
    else:
        out.print(f"volume {volume_id} now opens with {new_key_file} only", markup=False)


@command(volume_app, "export")
def export_cmd(
    directory: DirArg,
    dest: Annotated[Path, typer.Argument(help="New directory, or a .tar / .tar.gz file.")],
    key_file: KeyFileOption,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Write the volume's plaintext to a directory or tar archive (for migration)."""
    from sealpod.volume import load_key_file, open_volume
    from sealpod.volume.transfer import export_volume, total_bytes

    key = load_key_file(key_file)
    with open_volume(directory, key, counter=_freshness(counter_dir, unsafe), readonly=True) as vol:
        with _progress(json_output, total_bytes(vol), "export") as (progress, _):
            stats = export_volume(vol, dest, progress=progress)
    _report_transfer("exported", stats.to_dict(), dest, json_output)


@command(volume_app, "import")
def import_cmd(
    directory: DirArg,
    src: Annotated[Path, typer.Argument(help="A host directory or a tar archive.")],
    key_file: KeyFileOption,
    into: Annotated[str, typer.Option("--into", help="Directory inside the volume.")] = "",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace files and symlinks that already exist in the volume."
        ),
    ] = False,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Copy plaintext files from a host directory or tar archive into the volume."""
    from sealpod.volume import load_key_file, open_volume
    from sealpod.volume.transfer import import_tree

    key = load_key_file(key_file)
    size = _tree_size(src)
    with open_volume(directory, key, counter=_freshness(counter_dir, unsafe)) as vol:
        with _progress(json_output, size, "import") as (progress, phase):
            stats = import_tree(
                vol, src, into=into, overwrite=overwrite, progress=progress, phase=phase
            )
    _report_transfer("imported", stats.to_dict(), src, json_output)


def _tree_size(src: Path) -> int:
    if src.is_file():
        return src.stat().st_size
    return sum((Path(root) / f).lstat().st_size for root, _, files in os.walk(src) for f in files)


def _report_transfer(verb: str, stats: dict[str, int], where: Path, json_output: bool) -> None:
    if json_output:
        emit_json({"ok": True, **stats})
    else:
        out.print(
            f"{verb} {stats['files']} files, {stats['directories']} directories, "
            f"{stats['symlinks']} symlinks, {stats['bytes']} bytes ({where})"
            + (f"; skipped {stats['skipped']} special files" if stats["skipped"] else ""),
            markup=False,
        )


@command(volume_app, "mount")
def mount_cmd(
    directory: DirArg,
    mountpoint: Annotated[Path, typer.Argument(help="An existing empty directory.")],
    key_file: KeyFileOption,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Serve in this process until unmounted.")
    ] = False,
    allow_other: Annotated[
        bool, typer.Option("--allow-other", help="Let other users access the mount.")
    ] = False,
    commit_interval: Annotated[
        float, typer.Option("--commit-interval", help="Seconds between background commits.")
    ] = 5.0,
    rollback_window_ms: Annotated[
        int,
        typer.Option(
            "--rollback-window-ms",
            min=0,
            max=60_000,
            help="Let fsync return before the counter store records the commit, for at most"
            " this many ms of synced writes (0: never; see docs/runtime.md).",
        ),
    ] = 0,
    counter_dir: CounterDirOption = None,
    unsafe: UnsafeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Mount the volume with FUSE (in the background unless --foreground)."""
    from sealpod.volume import load_key_file, open_volume
    from sealpod.volume.fuse import mount, unavailable_reason, unmount

    reason = unavailable_reason()
    if reason is not None:
        raise VolumeError(f"cannot mount: {reason}")
    if not mountpoint.is_dir():
        raise VolumeError(f"mount point {mountpoint} is not a directory")
    key = load_key_file(key_file)
    vol = open_volume(
        directory,
        key,
        counter=_freshness(counter_dir, unsafe),
        rollback_window=rollback_window_ms / 1000,
    )
    del key
    report = {"ok": True, "volume": str(directory), "mountpoint": str(mountpoint)}
    if foreground:

        def say_mounted() -> None:
            if json_output:
                emit_json({**report, "pid": os.getpid()})
            else:
                err.print(f"mounted {directory} at {mountpoint}")

        mount(vol, mountpoint, allow_other=allow_other, commit_interval=commit_interval,
              ready=say_mounted)  # fmt: skip
        return
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the daemon: owns the volume (and its lock) from here on
        os.close(read_fd)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        code = 0

        def ready() -> None:
            os.write(write_fd, b"ok")
            os.close(write_fd)

        try:
            mount(vol, mountpoint, allow_other=allow_other, commit_interval=commit_interval,
                  ready=ready)  # fmt: skip
        except VolumeError as exc:
            os.write(write_fd, exc.message.encode()[:4000])
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        readable, _, _ = select.select([read_fd], [], [], MOUNT_TIMEOUT_SECS)
        if not readable:
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(VolumeError):
                unmount(mountpoint, lazy=True, timeout_secs=5)
            raise VolumeError(f"the mount did not come up within {MOUNT_TIMEOUT_SECS} s")
        message = os.read(read_fd, 4096).decode(errors="replace")
    finally:
        os.close(read_fd)
    if message != "ok":
        raise VolumeError(message or "the mount process exited without mounting")
    if json_output:
        emit_json({**report, "pid": pid})
    else:
        out.print(f"mounted {directory} at {mountpoint} (pid {pid})")


@command(volume_app, "unmount")
def unmount_cmd(
    mountpoint: Annotated[Path, typer.Argument(help="Where the volume is mounted.")],
    lazy: Annotated[
        bool, typer.Option("--lazy", help="Detach now even if files are still open.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Unmount and wait until the volume is committed and released."""
    from sealpod.volume.fuse import unmount

    unmount(mountpoint, lazy=lazy)
    if json_output:
        emit_json({"ok": True, "mountpoint": str(mountpoint)})
    else:
        out.print(f"unmounted {mountpoint}", markup=False)
