"""A fork server for KMS crash trials: imports sealpod once, then forks real
``sealpod kms serve`` processes on request, so that dozens of kill -9 / restart cycles fit in
seconds instead of paying the interpreter's import time on every restart.

Protocol on stdin/stdout, one line each:
    serve <log-file> <arg> <arg> ...   ->  <pid>      (a child running `sealpod <args>`)
    reap                               ->  ok         (collect exited children)
    quit                               ->  (exits)

Each child is a genuine server process: the same ``sealpod.cli.main.main()`` the console
script runs, with its own uvicorn, engine and connections, its output in <log-file>.
"""

from __future__ import annotations

import os
import sys


def _child(log_file: str, args: list[str]) -> None:
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.argv = ["sealpod", *args]
    code = 0
    try:
        from sealpod.cli.main import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run() -> None:
    # Import everything the server needs before the first fork.
    import sealpod.cli.main
    import sealpod.kms.server
    import sealpod.kms.verifier  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        if parts[0] == "reap":
            _reap()
            print("ok", flush=True)
        elif parts[0] == "serve":
            _reap()
            pid = os.fork()
            if pid == 0:
                _child(parts[1], parts[2:])
            print(pid, flush=True)
    _reap()


if __name__ == "__main__":
    run()
