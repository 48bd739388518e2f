"""Start the servers a benchmark needs: real Redis and PostgreSQL, and cloudvote services."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from tests.support.servers import PostgresServer, RedisServer, free_port

from cloudvote.adapters.postgres import conninfo_with_password, migrate

CLOUDVOTE = str(Path(sys.executable).with_name("cloudvote"))


@dataclass
class Stack:
    redis: RedisServer
    postgres: PostgresServer
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        secrets_dir = self.workdir / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        (secrets_dir / "redis").write_text(self.redis.password)
        (secrets_dir / "postgres").write_text(self.postgres.password)
        return {
            **os.environ,
            "REDIS_URL": self.redis.url,
            "REDIS_PASSWORD_FILE": str(secrets_dir / "redis"),
            "DATABASE_URL": self.postgres.url,
            "DATABASE_PASSWORD_FILE": str(secrets_dir / "postgres"),
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def migrate(self) -> None:
        migrate(conninfo_with_password(self.postgres.url, self.postgres.password))

    def start(self, service: str, launcher: Sequence[str] = (CLOUDVOTE,), **extra: str) -> str:
        """Start `cloudvote <service>` and return its base URL once /readyz answers 200.

        A /readyz slower than one probe's timeout (the first request a new gunicorn worker
        serves, on a busy machine) counts as "not yet", not as a failure. `launcher` runs
        something else in the console script's place, with the same arguments.
        """
        port = free_port()
        process = subprocess.Popen(
            [*launcher, service, "--port", str(port)],
            env=self.env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"{service}-{port}.log", "wb"),  # noqa: SIM115
        )
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{service} exited with {process.returncode}")
            try:
                if requests.get(f"{base}/readyz", timeout=3).status_code == 200:
                    return base
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{service} did not become ready")

    def pid_of(self, base: str) -> int:
        """The server process (gunicorn's master) behind a URL that `start` returned."""
        port = int(base.rsplit(":", 1)[1])
        for process in self.processes:
            if str(port) in process.args:
                return process.pid
        raise KeyError(base)

    def stop_all(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def reset_data(self) -> None:
        self.redis.flush()
        with self.postgres.connect() as conn:
            conn.execute("TRUNCATE votes, tallies")


@contextmanager
def running_stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="cloudvote-bench-") as tmp:
        workdir = Path(tmp)
        with RedisServer(workdir / "redis") as redis, PostgresServer(workdir / "pg") as pg:
            stack = Stack(redis, pg, workdir)
            stack.migrate()
            try:
                yield stack
            finally:
                stack.stop_all()
