"""Launch real Redis and PostgreSQL servers from the local Debian binaries.

The tests and the benchmark harness both need servers that behave exactly like production
ones (AOF fsync, password auth, crash recovery), so nothing here is mocked: each class runs
the real binary on a free loopback port in its own directory. Install the binaries with
``scripts/install-test-deps``.

Every server runs in its own session/process group, so Ctrl-C in the terminal reaches pytest
(which then tears the servers down) and not the servers directly. Anything still running when
the interpreter exits is stopped by an ``atexit`` hook, so a crashed test run leaves no strays.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Self

import psycopg
import redis
from psycopg import sql

INSTALL_HINT = "run scripts/install-test-deps (`make test` does this for you)"
REDIS_BINARY = Path("/usr/bin/redis-server")
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
HOST = "127.0.0.1"
# Postgres must not run as root; Debian's package creates this system user for it.
POSTGRES_OS_USER = "postgres"
# sockaddr_un.sun_path is 108 bytes; stay well below it for "<dir>/.s.PGSQL.<port>".
_MAX_SOCKET_DIR_LEN = 80


class ServerBinaryMissing(RuntimeError):
    """The Debian package providing a server is not installed."""


class ServerFailed(RuntimeError):
    """A server exited or never became ready; the message carries its log tail."""


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago.

    Another process may grab it before the server binds; the servers detect that case
    ("Address already in use") on their first start and retry with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# Servers started and not yet stopped, for the atexit fallback.
_RUNNING: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    """Last-resort teardown when fixtures did not get to run their finalizers."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.close()


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def processes() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgrp) of every process, from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process exited while we were looking
            continue
        # Fields after "(comm)" are: state ppid pgrp ...; comm itself may contain spaces.
        state, ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        yield int(stat.parent.name), state, int(ppid), int(pgrp)


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in process group ``pgid``.

    ``os.killpg(pgid, 0)`` is not enough: orphans are reparented to PID 1, which in a
    container often does not reap them, and zombies still count as group members.
    """
    return any(pgrp == pgid and state != "Z" for _, state, _, pgrp in processes())


class _Server:
    """Process bookkeeping shared by both servers: start, wait, stop, kill, log."""

    name = "server"

    def __init__(self, log_path: Path, port: int | None) -> None:
        self.host = HOST
        self.port = port if port is not None else free_port()
        self._port_chosen_by_us = port is None
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_once = False

    # -- hooks for subclasses -------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ping(self) -> bool:
        """One readiness probe; True when the server answers authenticated requests."""
        raise NotImplementedError

    def _prepare_first_start(self) -> None:
        """Create config/data before the very first start (new port on retry)."""

    def _after_first_start(self) -> None:
        """One-off setup that needs a running server."""

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (again) and block until it answers; same port, same data."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        first = not self._started_once
        attempts = 5 if first and self._port_chosen_by_us else 1
        for attempt in range(attempts):
            if first:
                self._prepare_first_start()
            try:
                self._launch_and_wait(timeout)
                break
            except ServerFailed:
                lost_port_race = "Address already in use" in _log_tail(self.log_path, 10)
                if attempt + 1 == attempts or not lost_port_race:
                    raise
                self.port = free_port()  # lost the race for the port: pick another
        self._started_once = True
        if first:
            self._after_first_start()

    def _launch_and_wait(self, timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: see module docstring
            **self._popen_kwargs(),
        )
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and time.monotonic() < deadline:
            if self._ping():
                return
            time.sleep(0.05)
        if self._proc.poll() is None:
            problem = f"not ready after {timeout}s"
            self.kill()
        else:
            problem = f"exited with {self._proc.returncode} while starting"
            self._reap()
        tail = _log_tail(self.log_path)
        raise ServerFailed(f"{self.name} {problem}; log {self.log_path}:\n{tail}")

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def _reap(self) -> None:
        """Wait out leftover children, close the log, forget the process."""
        proc = self._proc
        if proc is not None:
            proc.wait()
            deadline = time.monotonic() + 10
            while group_alive(proc.pid):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.05)
        if self._log is not None:
            self._log.close()
        self._proc = None
        self._log = None
        _RUNNING.discard(self)

    def kill(self) -> None:
        """SIGKILL the server: a crash, no chance to flush anything it has not fsynced."""
        self._signal_and_wait(signal.SIGKILL, timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """A clean shutdown, each server's own way."""
        raise NotImplementedError

    @contextlib.contextmanager
    def down(self) -> Iterator[Self]:
        """An outage for the block: stopped, then started again on the same port and data."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def close(self) -> None:
        """Stop the server and remove whatever it keeps outside the caller's directory."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(_Server):
    """A password-protected redis-server with an fsync-always AOF, like production.

    ``url`` deliberately has no password in it: the app reads the password separately
    (``REDIS_PASSWORD_FILE``), and the tests should exercise that path.
    """

    name = "redis-server"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        binary: Path = REDIS_BINARY,
        appendonly: bool = True,
    ) -> None:
        """``appendonly=False`` runs with no AOF at all: not production, for bench/peer only."""
        if not os.access(binary, os.X_OK):
            raise ServerBinaryMissing(f"{binary} not found: {INSTALL_HINT}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        super().__init__(self.directory / "redis.log", port)
        self.binary = binary
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.config_path = self.directory / "redis.conf"
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _prepare_first_start(self) -> None:
        settings = [
            f"port {self.port}",
            f"bind {self.host}",
            f"dir {self.directory}",
            "daemonize no",
            'logfile ""',
            # Durable like production: every write is fsynced before the reply
            # (appendfsync only applies while appendonly is yes).
            "appendonly yes" if self.appendonly else "appendonly no",
            "appendfsync always",
            # No RDB snapshots: the AOF alone must be enough to survive a crash.
            'save ""',
            f"requirepass {self.password}",
        ]
        self.config_path.write_text("\n".join(settings) + "\n")

    def _command(self) -> list[str]:
        return [str(self.binary), str(self.config_path)]

    def _popen_kwargs(self) -> dict[str, Any]:
        return {"cwd": self.directory}

    def client(self, **kwargs: Any) -> redis.Redis:
        """An authenticated client; the caller must close it (``with server.client() as r``)."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def _ping(self) -> bool:
        try:
            with self.client(socket_connect_timeout=1, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:  # refused, or still loading the AOF
            return False

    def flush(self) -> None:
        """Delete every key in every database (FLUSHALL) between tests."""
        with self.client() as client:
            client.flushall()

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM): Redis fsyncs the AOF and exits."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def close(self) -> None:
        self.stop()


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and postgres."""
    candidates = [
        Path(p)
        for p in glob.glob(POSTGRES_BIN_GLOB)
        if os.access(Path(p) / "initdb", os.X_OK) and os.access(Path(p) / "postgres", os.X_OK)
    ]
    if not candidates:
        raise ServerBinaryMissing(f"no PostgreSQL in {POSTGRES_BIN_GLOB}: {INSTALL_HINT}")

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(candidates, key=version)


class PostgresServer(_Server):
    """A throwaway PostgreSQL cluster with a password-protected superuser.

    ``url`` has no password (the app reads ``DATABASE_PASSWORD_FILE``); pass ``password=``
    to psycopg. When the tests run as root, the cluster runs as the ``postgres`` OS user
    and lives in a private ``/tmp/cloudvote-pg-*`` directory, because pytest's temp dirs
    are ``0700 root`` and the ``postgres`` user could not reach a cluster inside them.
    Logs stay in ``directory`` either way.
    """

    name = "postgres"

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        user: str = "cloudvote",
        password: str | None = None,
        database: str = "cloudvote",
        bin_dir: Path | None = None,
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else postgres_bin_dir()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        super().__init__(self.directory / "postgres.log", port)
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.database = database

        self._os_user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._os_user = pwd.getpwnam(POSTGRES_OS_USER)
            except KeyError:
                raise ServerBinaryMissing(
                    f"running as root but there is no '{POSTGRES_OS_USER}' user: {INSTALL_HINT}"
                ) from None
        self._private_dir: Path | None = None
        if self._os_user is not None or len(str(self.directory)) > _MAX_SOCKET_DIR_LEN:
            self._private_dir = Path(tempfile.mkdtemp(prefix="cloudvote-pg-"))
            self.cluster_dir = self._private_dir
            self._chown(self.cluster_dir)
        else:
            self.cluster_dir = self.directory / "cluster"
            self.cluster_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir = self.cluster_dir / "data"
        self.socket_dir = self.cluster_dir

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str | None = None, **kwargs: Any) -> psycopg.Connection[Any]:
        """An authenticated connection; the caller must close it (``with server.connect()``)."""
        return psycopg.connect(
            self.url_for(database or self.database), password=self.password, **kwargs
        )

    def _popen_kwargs(self) -> dict[str, Any]:
        # PG* variables from the developer's shell (PGDATA, PGPORT...) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        kwargs: dict[str, Any] = {"cwd": self.cluster_dir, "env": env}
        if self._os_user is not None:
            kwargs |= {"user": self._os_user.pw_uid, "group": self._os_user.pw_gid}
            kwargs["extra_groups"] = []  # drop root's supplementary groups too
            env["HOME"] = self._os_user.pw_dir
        return kwargs

    def _chown(self, path: Path) -> None:
        if self._os_user is not None:
            os.chown(path, self._os_user.pw_uid, self._os_user.pw_gid)

    def _prepare_first_start(self) -> None:
        if not self.data_dir.exists():
            self._initdb()
        # Rewritten on every first-start attempt because the port may have changed.
        settings = [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            # Durable like production, so kill() tests really test crash recovery.
            "fsync = on",
            "synchronous_commit = on",
            "full_page_writes = on",
            "password_encryption = 'scram-sha-256'",
        ]
        auto_conf = self.data_dir / "postgresql.auto.conf"
        auto_conf.write_text("\n".join(settings) + "\n")
        self._chown(auto_conf)

    def _initdb(self) -> None:
        pwfile = self.cluster_dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={self.user}",
                    f"--pwfile={pwfile}",
                    # Password auth everywhere, so the app's password handling is exercised.
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    # Only initdb's own writes skip fsync (saves seconds); the server fsyncs.
                    "--no-sync",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                **self._popen_kwargs(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerFailed(
                f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# Written by tests/support/servers.py: password auth only.\n"
            "local all all scram-sha-256\n"
            f"host all all {self.host}/32 scram-sha-256\n"
        )

    def _command(self) -> list[str]:
        return [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]

    def _ping(self) -> bool:
        # The maintenance database exists from initdb on; ours may not exist yet.
        try:
            with self.connect("postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:  # refused, or "the database system is starting up"
            return False

    def _after_first_start(self) -> None:
        self._create_database(self.database)

    def _create_database(self, name: str) -> None:
        with self.connect("postgres", autocommit=True) as conn:
            # template0: guaranteed pristine even if something wrote to template1.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )

    def new_database(self, name: str) -> str:
        """Create a fresh, empty database and return its url (no password in it).

        One database per test module keeps modules isolated without a cluster each.
        Fails if ``name`` already exists, rather than silently reusing someone's data.
        """
        self._create_database(name)
        return self.url_for(name)

    def stop(self, timeout: float = 60.0) -> None:
        """Clean shutdown with a checkpoint.

        SIGINT ("fast") rather than SIGTERM ("smart"): smart shutdown waits for every
        client to disconnect, so an app's idle connection pool would make it hang.
        """
        self._signal_and_wait(signal.SIGINT, timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster, like an OOM kill; the next start() runs crash recovery.

        Its children notice the postmaster died and exit on their own; ``_reap`` waits for
        that (a live old backend would keep the shared memory busy and block the restart).
        """
        super().kill()
        # postgres would also detect the stale pid file, unless the pid was reused by then.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None
