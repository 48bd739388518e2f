"""The real `cloudvote` command: the monolith keeps its votes, and bad setup fails fast.

Every test runs the installed console script as a subprocess, exactly as `make run` does,
and talks to it over HTTP. Every process started here is killed at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import requests

from cloudvote.adapters.sqlite import SqliteDatabase, SqliteVoteQueue
from cloudvote.domain.votes import Ballot
from tests.support.servers import free_port

CLOUDVOTE = Path(sys.executable).parent / "cloudvote"
# Variables that would change what the command under test does; each test sets its own.
_CONFIG_VARIABLES = (
    "PORT",
    "REDIS_URL",
    "DATABASE_URL",
    "REDIS_PASSWORD_FILE",
    "DATABASE_PASSWORD_FILE",
    "OPTION_A",
    "OPTION_B",
    "WEB_CONCURRENCY",
    "PROMETHEUS_MULTIPROC_DIR",
)
STARTUP_SECONDS = 30.0
DRAIN_SECONDS = 20.0
STOP_SECONDS = 10.0
HTTP_TIMEOUT = 5.0


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _CONFIG_VARIABLES and not key.startswith(("CLOUDVOTE_", "WORKER_"))
    }
    # The vote/result commands make a metrics directory under TMPDIR; keep it in tmp_path.
    env["TMPDIR"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Monolith:
    """One `cloudvote dev` process on a free port, over a data directory that outlives it."""

    def __init__(self, data_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.env = env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.data_dir / "cloudvote.db"

    def start(self) -> None:
        for _attempt in range(3):
            self.port = free_port()
            self._launch()
            if self._wait_until_healthy():
                return
            self._reap()
            if "Address already in use" not in _log_tail(self.log_path):
                break  # a real failure, not a lost race for the port
        pytest.fail(f"cloudvote dev did not start; log:\n{_log_tail(self.log_path)}")

    def _launch(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(CLOUDVOTE),
                "dev",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )

    def _wait_until_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(requests.ConnectionError):
                response = requests.get(f"{self.url}/healthz", timeout=HTTP_TIMEOUT)
                if response.status_code == 200:
                    return True
            time.sleep(0.05)
        return False

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_SECONDS + 5)
        finally:
            elapsed = time.monotonic() - started
            self._reap()
        return code, elapsed

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets a chance to finish."""
        assert self.proc is not None
        self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self._reap()


@pytest.fixture
def monolith(tmp_path: Path) -> Iterator[Callable[[], Monolith]]:
    """Make monoliths that share one data directory; all are killed at teardown."""
    data_dir = tmp_path / "data"
    made: list[Monolith] = []

    def make() -> Monolith:
        server = Monolith(data_dir, tmp_path / f"monolith-{len(made)}.log", _environment(tmp_path))
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.close()


def vote(session: requests.Session, base_url: str, option: str) -> None:
    response = session.post(
        f"{base_url}/", data={"vote": option}, allow_redirects=False, timeout=HTTP_TIMEOUT
    )
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == "/"


def results(base_url: str) -> dict[str, object]:
    response = requests.get(f"{base_url}/api/polls/default/results", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def wait_for_counts(base_url: str, counts: dict[str, int]) -> dict[str, object]:
    """Poll the result API until it shows `counts`; returns the last answer either way."""
    deadline = time.monotonic() + DRAIN_SECONDS
    body = results(base_url)
    while body["counts"] != counts and time.monotonic() < deadline:
        time.sleep(0.1)
        body = results(base_url)
    return body


def test_votes_are_counted_and_kept_across_a_clean_restart(
    monolith: Callable[[], Monolith],
) -> None:
    first = monolith()
    with requests.Session() as alice, requests.Session() as bob:
        vote(alice, first.url, "a")
        vote(bob, first.url, "a")
        vote(alice, first.url, "b")  # a revote replaces alice's first vote

    body = wait_for_counts(first.url, {"a": 1, "b": 1})
    assert body == {"poll": "default", "counts": {"a": 1, "b": 1}, "total": 2}

    code, seconds = first.terminate()
    assert code == 0
    assert seconds < STOP_SECONDS

    second = monolith()
    assert results(second.url) == {"poll": "default", "counts": {"a": 1, "b": 1}, "total": 2}


def test_sigterm_exits_zero_within_ten_seconds_while_a_results_stream_is_open(
    monolith: Callable[[], Monolith],
) -> None:
    server = monolith()
    with requests.get(
        f"{server.url}/api/polls/default/results/stream", stream=True, timeout=HTTP_TIMEOUT
    ) as stream:
        assert stream.status_code == 200
        first_bytes = stream.raw.read(16)
        assert first_bytes.startswith(b"retry: ")

        code, seconds = server.terminate()

    assert code == 0
    assert seconds < STOP_SECONDS


def test_votes_accepted_before_a_sigkill_are_all_counted_after_restart(
    monolith: Callable[[], Monolith],
) -> None:
    voters = 40
    server = monolith()
    voter_ids: list[str] = []
    for _ in range(voters):
        with requests.Session() as session:
            vote(session, server.url, "a")
            vote(session, server.url, "b")  # the last accepted vote, the one that must win
            voter_ids.append(session.cookies["voter_id"])

    server.kill()

    # At the moment of the crash each last vote is either applied or still queued.
    with contextlib.closing(sqlite3.connect(server.database)) as db:
        stored = {v for (v,) in db.execute("SELECT voter_id FROM votes WHERE option_id = 'b'")}
        queued = {v for (v,) in db.execute("SELECT voter FROM queue WHERE option = 'b'")}
    assert set(voter_ids) <= stored | queued

    restarted = monolith()
    body = wait_for_counts(restarted.url, {"a": 0, "b": voters})
    assert body == {"poll": "default", "counts": {"a": 0, "b": voters}, "total": voters}


def test_votes_a_killed_run_left_queued_or_half_processed_are_drained_after_restart(
    tmp_path: Path, monolith: Callable[[], Monolith]
) -> None:
    """The deterministic half of the crash test above, whose timing decides how many votes
    are still queued at the kill: here the queue file is left exactly as a run killed
    mid-batch leaves it, some votes claimed by its worker and some not yet received."""
    database = SqliteDatabase(tmp_path / "data" / "cloudvote.db")
    try:
        queue = SqliteVoteQueue(database)
        for n in range(10):
            queue.enqueue(Ballot("default", "a", f"{n:032x}"))
        for n in range(10):
            queue.enqueue(Ballot("default", "b" if n % 2 else "a", f"{n:032x}"))
        assert len(queue.receive(15, 0)) == 15  # the dead run's worker held these
    finally:
        database.close()

    server = monolith()

    body = wait_for_counts(server.url, {"a": 5, "b": 5})
    assert body == {"poll": "default", "counts": {"a": 5, "b": 5}, "total": 10}


# -- configuration errors: exit non-zero at start, naming what is wrong --------------------


def test_the_monolith_answers_errors_in_its_own_words_and_logs_json_without_colour(
    monolith: Callable[[], Monolith],
) -> None:
    """werkzeug colours its request lines for a terminal and answers an oversized header
    line with its own page; the monolith logs fields and answers in cloudvote's words."""
    server = monolith()
    missing = requests.get(f"{server.url}/nowhere", timeout=HTTP_TIMEOUT)
    refused = requests.post(
        f"{server.url}/", data={"vote": "a"}, headers={"X-Tracking": "x" * 10_000}, timeout=5
    )
    # Past http.server's 64 KiB a line, the request never reaches the app.
    unparsed = requests.get(f"{server.url}/", headers={"X-Tracking": "x" * 70_000}, timeout=5)
    server.terminate()

    assert missing.status_code == 404 and "there is nothing at /nowhere" in missing.text
    assert refused.status_code == 431 and "8 KiB limit" in refused.text
    assert unparsed.status_code == 431
    assert "8 KiB limit" in unparsed.json()["error"]
    log = server.log_path.read_text()
    assert "\x1b[" not in log
    requests_logged = [
        json.loads(line) for line in log.splitlines() if '"event":"http.request"' in line
    ]
    assert {(r["method"], r["status"]) for r in requests_logged if r["path"] == "/nowhere"} == {
        ("GET", 404)
    }
    # One refused by the app, one by the parser: both logged as fields.
    assert [r["status"] for r in requests_logged if r["path"] == "/"] == [431, 431]


def run_cloudvote(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLOUDVOTE), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_environment(tmp_path, **env),
        timeout=60,
        check=False,
    )


def test_vote_without_redis_url_exits_non_zero_naming_redis_url(tmp_path: Path) -> None:
    result = run_cloudvote(tmp_path, "vote", "--port", str(free_port()))

    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_result_without_database_url_exits_non_zero_naming_database_url(tmp_path: Path) -> None:
    result = run_cloudvote(tmp_path, "result", "--port", str(free_port()))

    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_worker_without_database_url_exits_non_zero_naming_database_url(tmp_path: Path) -> None:
    result = run_cloudvote(
        tmp_path, "worker", "--port", str(free_port()), REDIS_URL="redis://127.0.0.1:1/0"
    )

    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def test_an_unreadable_password_file_exits_non_zero_naming_the_variable(tmp_path: Path) -> None:
    result = run_cloudvote(
        tmp_path,
        "vote",
        "--port",
        str(free_port()),
        REDIS_URL="redis://127.0.0.1:1/0",
        REDIS_PASSWORD_FILE=str(tmp_path / "not-mounted"),
    )

    assert result.returncode != 0
    assert "REDIS_PASSWORD_FILE" in result.stderr


def test_a_non_integer_port_exits_non_zero_naming_port(tmp_path: Path) -> None:
    result = run_cloudvote(tmp_path, "dev", "--data-dir", str(tmp_path / "data"), PORT="http")

    assert result.returncode != 0
    assert "PORT" in result.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("missing.yaml", None),
        ("broken.yaml", "polls: [unclosed\n"),
        ("no-polls.yaml", "questions: []\n"),
        ("one-option.yaml", "polls:\n  - id: lunch\n    options: [{id: pizza}]\n"),
    ],
)
def test_a_bad_polls_file_exits_non_zero_naming_the_file(
    tmp_path: Path, name: str, content: str | None
) -> None:
    polls_file = tmp_path / name
    if content is not None:
        polls_file.write_text(content)

    result = run_cloudvote(
        tmp_path,
        "dev",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "data"),
        CLOUDVOTE_POLLS_FILE=str(polls_file),
    )

    assert result.returncode != 0
    assert str(polls_file) in result.stderr
