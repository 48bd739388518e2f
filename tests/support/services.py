"""Run cloudvote's own processes (`cloudvote vote|result|worker|migrate`) for e2e tests.

The processes are the real console script, configured only through the environment the
way a container would be: URLs without passwords, passwords in files. Each one runs in
its own process group with its output in a log file, so a failing test can show what
the service said, and teardown can stop it together with any children (gunicorn workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

import psycopg
import pytest
import requests

from tests.support.servers import HOST, PostgresServer, RedisServer, free_port, group_alive

CLOUDVOTE = Path(sys.executable).parent / "cloudvote"
# Variables from the developer's shell that would change what the services do.
_FOREIGN_PREFIXES = ("PG", "REDIS_", "DATABASE_", "PROMETHEUS_", "CLOUDVOTE_", "WORKER_", "RESULT_")
_FOREIGN_NAMES = {"PORT", "WEB_CONCURRENCY", "OPTION_A", "OPTION_B", "LOG_LEVEL"}
STOP_SECONDS = 10.0


class ServiceFailed(AssertionError):
    """A service exited early or never became healthy; the message has its log tail."""


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the shell's cloudvote settings, plus ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_FOREIGN_PREFIXES) and key not in _FOREIGN_NAMES
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env | settings


class ServiceProcess:
    """One `cloudvote <command> [args]` process in its own process group, and its log."""

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.port = port
        self.args = list(args)
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.command} has no port"
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Start, or start again after a kill: the log is appended to, never replaced."""
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(CLOUDVOTE), self.command, *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches pytest, which then stops the group
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 30.0, path: str = "/healthz") -> Self:
        """Block until GET ``path`` answers 200; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        with requests.Session() as session:
            while True:
                if not self.running:
                    raise ServiceFailed(
                        f"cloudvote {self.command} exited with {self.returncode} while "
                        f"starting; log {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(requests.RequestException):
                    if session.get(f"{self.url}{path}", timeout=1).status_code == 200:
                        return self
                if time.monotonic() > deadline:
                    raise ServiceFailed(
                        f"cloudvote {self.command} not healthy after {timeout}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if it is still running."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def send(self, sig: signal.Signals) -> None:
        """Signal the main process only, as `docker stop` or the kubelet does."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    @contextlib.contextmanager
    def paused(self) -> Iterator[Self]:
        """SIGSTOP for the block, SIGCONT after it: alive, holding its work, doing nothing."""
        self.send(signal.SIGSTOP)
        try:
            yield self
        finally:
            self.send(signal.SIGCONT)

    def terminate(self, timeout: float = STOP_SECONDS + 5) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took (killed, and raises, past timeout)."""
        started = time.monotonic()
        self.send(signal.SIGTERM)
        try:
            code = self.wait(timeout)
        finally:
            elapsed = time.monotonic() - started
            self.kill()
        return code, elapsed

    def kill(self) -> None:
        """SIGKILL the whole group: a crash, with no chance to finish or acknowledge."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        deadline = time.monotonic() + 10
        while group_alive(self.proc.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            time.sleep(0.05)

    def close(self) -> None:
        """Stop whatever is left of the process and its children; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGCONT first: a paused process ignores everything but SIGKILL.
            for sig in (signal.SIGCONT, signal.SIGTERM):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_SECONDS)
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


class Monolith(ServiceProcess):
    """`cloudvote dev` on a free loopback port, over a data directory that outlives it."""

    def __init__(self, data_dir: Path, log_path: Path, **settings: str) -> None:
        super().__init__("dev", clean_environment(**settings), log_path)
        self.data_dir = data_dir

    @property
    def database(self) -> Path:
        return self.data_dir / "cloudvote.db"

    def start(self) -> Self:
        """Start on a new free port and wait until ready; another port if one was taken."""
        for _attempt in range(5):
            self.port = free_port()
            self.args = ["--host", HOST, "--port", str(self.port), "--data-dir", str(self.data_dir)]
            super().start()
            try:
                return self.wait_healthy(path="/readyz")
            except ServiceFailed:
                self.close()
                if "Address already in use" not in self.log_tail(10):
                    raise  # a real failure, not a lost race for the port
        raise ServiceFailed(f"cloudvote dev found no free port; log:\n{self.log_tail()}")


class Deployment:
    """The microservices shape against the test servers: env, password files, processes.

    Everything it starts is tracked and stopped by `close()`, even if a test fails
    half-way.
    """

    def __init__(
        self,
        directory: Path,
        redis_server: RedisServer,
        postgres_server: PostgresServer,
        database_url: str,
        **settings: str,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis_server = redis_server
        self.postgres_server = postgres_server
        self.database_url = database_url
        self.settings = settings
        self.processes: list[ServiceProcess] = []
        self._count = 0
        secrets_dir = self.directory / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        self.redis_password_file = secrets_dir / "redis-password"
        self.redis_password_file.write_text(redis_server.password + "\n")
        self.database_password_file = secrets_dir / "database-password"
        self.database_password_file.write_text(postgres_server.password + "\n")

    def env(self, **overrides: str) -> dict[str, str]:
        base = {
            "REDIS_URL": self.redis_server.url,
            "DATABASE_URL": self.database_url,
            "REDIS_PASSWORD_FILE": str(self.redis_password_file),
            "DATABASE_PASSWORD_FILE": str(self.database_password_file),
            "WEB_CONCURRENCY": "2",
        }
        return clean_environment(**base | self.settings | overrides)

    def _next_log(self, command: str) -> Path:
        self._count += 1
        return self.directory / f"{self._count:02d}-{command}.log"

    def start(self, command: str, *, wait: bool = True, **overrides: str) -> ServiceProcess:
        """Start `cloudvote <command>` on a free port and (by default) wait until healthy."""
        port = free_port()
        env = self.env(PORT=str(port), **overrides)
        if command in ("vote", "result"):
            # Its own empty metrics directory, so no run leaves files behind in /tmp.
            metrics_dir = self.directory / f"metrics-{self._count + 1:02d}"
            metrics_dir.mkdir()
            env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        process = ServiceProcess(command, env, self._next_log(command), port)
        self.processes.append(process)
        process.start()
        if wait:
            process.wait_healthy()
        return process

    def spawn(self, command: str, **overrides: str) -> ServiceProcess:
        """Start a one-shot command (migrate) without a port, and return at once."""
        process = ServiceProcess(command, self.env(**overrides), self._next_log(command))
        self.processes.append(process)
        return process.start()

    def run(self, command: str, timeout: float = 60.0, **overrides: str) -> ServiceProcess:
        """Run a one-shot command (migrate) to completion and return it."""
        process = self.spawn(command, **overrides)
        try:
            process.wait(timeout)
        finally:
            process.close()
        return process

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """An authenticated connection to its database; the caller must close it."""
        return psycopg.connect(self.database_url, password=self.postgres_server.password, **kwargs)

    def close(self) -> None:
        for process in reversed(self.processes):
            process.close()


def polls_file(*own_polls: str) -> dict[str, object]:
    """The default Cats-or-Dogs poll, and an a-b-c poll for each test that counts its own."""
    default = {"id": "default", "question": "Cats or Dogs?", "options": [{"id": "a"}, {"id": "b"}]}
    own = [{"id": poll, "options": [{"id": o} for o in "abc"]} for poll in own_polls]
    return {"polls": [default, *own]}


def deployment_fixture(name: str, polls: Mapping[str, object], **settings: str) -> Any:
    """A module's `deployment` fixture, shared by the module's tests (tests/e2e/conftest.py
    starts the processes on it): its own directory, an empty Redis, a new migrated database
    `e2e_<name>` and `polls` in a polls file. Every process it started is stopped after."""

    @pytest.fixture(scope="module")
    def deployment(
        tmp_path_factory: pytest.TempPathFactory,
        redis_server: RedisServer,
        postgres_server: PostgresServer,
    ) -> Iterator[Deployment]:
        directory = tmp_path_factory.mktemp(name)
        redis_server.flush()
        polls_path = directory / "polls.json"
        polls_path.write_text(json.dumps(polls))
        database_url = postgres_server.new_database(f"e2e_{name}")
        deployment = Deployment(
            directory,
            redis_server,
            postgres_server,
            database_url,
            CLOUDVOTE_POLLS_FILE=str(polls_path),
            **settings,
        )
        try:
            migrate = deployment.run("migrate")
            assert migrate.returncode == 0, migrate.log_tail()
            yield deployment
        finally:
            deployment.close()

    return deployment
