"""The real `cloudvote` command: the monolith keeps its votes, and bad setup fails fast.

Every test runs the installed console script as a subprocess, exactly as `make run` does,
and talks to it over HTTP. Every process started here is killed at teardown.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudvote.adapters.sqlite import SqliteDatabase, SqliteVoteQueue
from cloudvote.domain.votes import Ballot
from tests.support.client import Client
from tests.support.servers import free_port
from tests.support.services import CLOUDVOTE, STOP_SECONDS, Monolith, clean_environment


@pytest.fixture
def monolith(tmp_path: Path) -> Iterator[Callable[[], Monolith]]:
    """Make monoliths that share one data directory; all are killed at teardown."""
    made: list[Monolith] = []

    def make() -> Monolith:
        # The vote/result commands make a metrics directory under TMPDIR; keep it here.
        log = tmp_path / f"monolith-{len(made)}.log"
        made.append(Monolith(tmp_path / "data", log, TMPDIR=str(tmp_path)))
        return made[-1].start()

    yield make
    for server in made:
        server.close()


def vote(visitor: Client, option: str) -> None:
    """A form vote, as the ballot page posts it: 303 back to the ballot."""
    response = visitor.form_vote(option)
    assert response.status_code == 303, response.text
    assert response.headers["Location"] == "/"


def test_votes_are_counted_and_kept_across_a_clean_restart(
    monolith: Callable[[], Monolith],
) -> None:
    first = monolith()
    with Client(first.url) as alice, Client(first.url) as bob:
        vote(alice, "a")
        vote(bob, "a")
        vote(alice, "b")  # a revote replaces alice's first vote

    body = Client(first.url).wait_for_counts("default", {"a": 1, "b": 1})
    assert body == {"poll": "default", "counts": {"a": 1, "b": 1}, "total": 2}

    code, seconds = first.terminate()
    assert code == 0
    assert seconds < STOP_SECONDS

    second = monolith()
    expected = {"poll": "default", "counts": {"a": 1, "b": 1}, "total": 2}
    assert Client(second.url).results() == expected


def test_sigterm_exits_zero_within_ten_seconds_while_a_results_stream_is_open(
    monolith: Callable[[], Monolith],
) -> None:
    server = monolith()
    with Client(server.url).get("/api/polls/default/results/stream", stream=True) as stream:
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
        with Client(server.url) as visitor:
            vote(visitor, "a")
            vote(visitor, "b")  # the last accepted vote, the one that must win
            voter_ids.append(visitor.cookies["voter_id"])

    server.kill()

    # At the moment of the crash each last vote is either applied or still queued.
    with contextlib.closing(sqlite3.connect(server.database)) as db:
        stored = {v for (v,) in db.execute("SELECT voter_id FROM votes WHERE option_id = 'b'")}
        queued = {v for (v,) in db.execute("SELECT voter FROM queue WHERE option = 'b'")}
    assert set(voter_ids) <= stored | queued

    restarted = monolith()
    body = Client(restarted.url).wait_for_counts("default", {"a": 0, "b": voters})
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

    body = Client(server.url).wait_for_counts("default", {"a": 5, "b": 5})
    assert body == {"poll": "default", "counts": {"a": 5, "b": 5}, "total": 10}


# -- configuration errors: exit non-zero at start, naming what is wrong --------------------


def test_the_monolith_answers_errors_in_its_own_words_and_logs_json_without_colour(
    monolith: Callable[[], Monolith],
) -> None:
    """werkzeug colours its request lines for a terminal and answers an oversized header
    line with its own page; the monolith logs fields and answers in cloudvote's words."""
    server = monolith()
    http = Client(server.url, timeout=5)
    missing = http.get("/nowhere")
    refused = http.post("/", data={"vote": "a"}, headers={"X-Tracking": "x" * 10_000})
    # Past http.server's 64 KiB a line, the request never reaches the app.
    unparsed = http.get("/", headers={"X-Tracking": "x" * 70_000})
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
        env=clean_environment(TMPDIR=str(tmp_path), **env),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "missing", "env"),
    [
        ("vote", "REDIS_URL", {}),
        ("result", "DATABASE_URL", {}),
        ("worker", "DATABASE_URL", {"REDIS_URL": "redis://127.0.0.1:1/0"}),
    ],
)
def test_a_service_without_its_url_exits_non_zero_naming_it(
    tmp_path: Path, command: str, missing: str, env: dict[str, str]
) -> None:
    result = run_cloudvote(tmp_path, command, "--port", str(free_port()), **env)

    assert result.returncode != 0
    assert missing in result.stderr


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
