"""Run the peer as example-voting-app runs its vote service, with a Redis of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from tests.support.servers import RedisServer, free_port

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
REPO = Path(__file__).resolve().parents[2]
# example-voting-app's vote command line: 4 sync workers, no keep-alive.
WORKERS = 4
KEEP_ALIVE_SECONDS = 0


@dataclass(frozen=True)
class Peer:
    url: str
    redis: RedisServer
    # gunicorn's master (its workers are its children) and the peer's own Redis.
    server_pids: tuple[int, int]


@contextmanager
def running_peer(workdir: Path) -> Iterator[Peer]:
    """The peer under gunicorn and its Redis (no AOF), both stopped on exit."""
    with RedisServer(workdir / "peer-redis", appendonly=False) as redis:
        password_file = workdir / "peer-redis-password"
        password_file.write_text(redis.password)
        port = free_port()
        command = [
            GUNICORN,
            f"--workers={WORKERS}",
            "--worker-class=sync",
            f"--keep-alive={KEEP_ALIVE_SECONDS}",
            f"--bind=127.0.0.1:{port}",
            # Its command line also logs every request to stdout (here: to /dev/null,
            # which still costs the formatting and the write).
            "--access-logfile=-",
            "--log-level=warning",
            "--no-control-socket",
            "bench.peer.app:create_app()",
        ]
        env = {**os.environ, "REDIS_URL": redis.url, "REDIS_PASSWORD_FILE": str(password_file)}
        with open(workdir / f"peer-{port}.log", "wb") as log:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(process, url)
            yield Peer(url, redis, (process.pid, redis.pid or 0))
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bench.peer exited with {process.returncode}")
        try:
            if requests.get(f"{url}/", timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # still binding or booting
            pass
        time.sleep(0.1)
    raise RuntimeError("bench.peer did not become ready")
