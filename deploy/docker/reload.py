"""Run a command and restart it whenever a source file changes (the dev image's code reload).

    python reload.py --watch /src/src -- cloudvote dev --host 0.0.0.0

Polling mtimes once a second works on every bind mount (Docker Desktop's file sharing
does not always deliver inotify events), needs nothing beyond the standard library, and
restarts any command: the monolith, or `cloudvote vote` in compose.dev.yaml. Production
images never run this.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

WATCHED_SUFFIXES = {".py", ".html", ".css", ".js", ".sql", ".yaml", ".yml", ".json"}
POLL_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 10.0


def snapshot(roots: list[Path]) -> dict[str, float]:
    mtimes: dict[str, float] = {}
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            for name in files:
                if Path(name).suffix in WATCHED_SUFFIXES:
                    path = os.path.join(directory, name)
                    try:
                        mtimes[path] = os.stat(path).st_mtime
                    except FileNotFoundError:
                        continue  # removed between listing and stat
    return mtimes


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watch", action="append", required=True, help="directory to watch")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    roots = [Path(p) for p in args.watch]

    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # As PID 1 we must handle SIGTERM ourselves (`docker stop`), and pass it on.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    seen = snapshot(roots)
    child = subprocess.Popen(command)
    while not stopping:
        time.sleep(POLL_SECONDS)
        current = snapshot(roots)
        if current != seen:
            changed = sorted(set(current.items()) ^ set(seen.items()))
            print(f"reload: {changed[0][0]} changed; restarting", file=sys.stderr, flush=True)
            seen = current
            stop(child)
            child = subprocess.Popen(command)
        elif child.poll() is not None:
            # A crash (say, a syntax error just saved) waits for the next edit, not a loop.
            print(
                f"reload: exited with {child.returncode}; waiting for a change",
                file=sys.stderr,
                flush=True,
            )
            while not stopping and snapshot(roots) == seen:
                time.sleep(POLL_SECONDS)
            seen = snapshot(roots)
            if not stopping:
                child = subprocess.Popen(command)
    stop(child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
