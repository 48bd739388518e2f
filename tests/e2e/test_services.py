"""The microservices shape end to end: `cloudvote vote|result|worker|migrate` as real
processes, configured by environment and password files, over real Redis and PostgreSQL.

Each test votes in a poll of its own (see POLLS), so the shared processes can serve
every test while each still checks exact counts.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import Client
from tests.support.servers import PostgresServer, RedisServer
from tests.support.services import Deployment, ServiceProcess, deployment_fixture, polls_file
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

POLLS = polls_file(
    "api",
    "tracing",
    "metrics",
    "redis-outage",
    "worker-down",
    "redis-full",
    "late-worker",
    "shutdown",
    "postgres-outage",
    "poison",
)
DRAIN_SECONDS = 20.0


# -- fixtures --------------------------------------------------------------------------------


deployment = deployment_fixture("services", POLLS)


@pytest.fixture
def database(deployment: Deployment) -> Iterator[psycopg.Connection[Any]]:
    with deployment.connect(autocommit=True) as conn:
        yield conn


@pytest.fixture
def ballot(http: Client, vote: ServiceProcess) -> Client:
    """The visitor at the vote service."""
    return http.at(vote.url)


@pytest.fixture
def results(http: Client, result: ServiceProcess) -> Client:
    """The same visitor at the result service."""
    return http.at(result.url)


# -- helpers ---------------------------------------------------------------------------------


def new_voter() -> str:
    return secrets.token_hex(16)


def queue_depth(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        return int(client.xlen("votes"))


def wait_for_empty_queue(redis_server: RedisServer) -> None:
    wait_until(
        lambda: queue_depth(redis_server),
        lambda depth: depth == 0,
        timeout=DRAIN_SECONDS,
        what="queue drained",
    )


def vote_all(ballot: Client, poll: str, options: str) -> None:
    """One vote per letter of `options`, each by a new voter, each accepted."""
    for option in options:
        response = ballot.vote(option, poll)
        assert response.status_code == 202
        assert response.json() == {"poll": poll, "option": option, "status": "accepted"}


def counts(options: str) -> dict[str, int]:
    """A poll's a-b-c counts after one vote per letter of `options`."""
    return {option: options.count(option) for option in "abc"}


def metric(text: str, name: str, *, missing_ok: bool = False, **labels: str) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert found or missing_ok, f"no sample {name}{labels} in:\n{text}"
    return sum(found)


# -- voting and results ----------------------------------------------------------------------


def test_form_vote_redirects_and_is_counted_in_the_results(
    ballot: Client, results: Client, worker: ServiceProcess
) -> None:
    page = ballot.get("/")
    assert page.status_code == 200
    assert "voter_id" in ballot.cookies  # the page handed this browser a voter id

    first = ballot.form_vote("a")
    assert first.status_code == 303
    assert first.headers["Location"] == "/"
    results.wait_for_counts("default", {"a": 1, "b": 0})

    # Same cookie, new choice: the vote is replaced, not added.
    second = ballot.form_vote("b")
    assert second.status_code == 303
    body = results.wait_for_counts("default", {"a": 0, "b": 1})
    assert body == {"poll": "default", "counts": {"a": 0, "b": 1}, "total": 1}


def test_api_votes_are_accepted_and_counted_exactly(
    ballot: Client, results: Client, worker: ServiceProcess
) -> None:
    vote_all(ballot, "api", "abcab")
    assert results.wait_for_counts("api", counts("abcab"))["total"] == 5


def test_traceparent_follows_the_vote_into_the_store(
    ballot: Client, worker: ServiceProcess, database: psycopg.Connection[Any]
) -> None:
    trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)
    voter = new_voter()

    response = ballot.vote("a", "tracing", voter, traceparent=f"00-{trace_id}-{parent_span}-01")

    assert response.status_code == 202
    assert response.headers["traceparent"].startswith(f"00-{trace_id}-")
    stored = wait_until(
        lambda: database.execute(
            "SELECT trace_id FROM votes WHERE poll_id = 'tracing' AND voter_id = %s", (voter,)
        ).fetchall(),
        timeout=DRAIN_SECONDS,
        what="the traced vote in the votes table",
    )
    assert stored == [(trace_id,)]


# -- health, readiness, metrics --------------------------------------------------------------


@pytest.mark.parametrize("service", ["vote", "result", "worker"])
def test_every_service_reports_health_readiness_and_metrics(
    request: pytest.FixtureRequest, http: Client, service: str
) -> None:
    process: ServiceProcess = request.getfixturevalue(service)

    health = http.get(f"{process.url}/healthz")
    ready = http.get(f"{process.url}/readyz")
    metrics = http.get(f"{process.url}/metrics")

    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    # The health request above was counted and timed by the same process.
    healthz = partial(metric, metrics.text, service=service, endpoint="/healthz")
    assert healthz("cloudvote_http_requests_total", status="200") >= 1
    assert healthz("cloudvote_http_request_duration_seconds_count") >= 1


def test_metrics_show_votes_accepted_applied_batches_and_queue_depth(
    http: Client, ballot: Client, results: Client, worker: ServiceProcess
) -> None:
    vote_all(ballot, "metrics", "abc")
    results.wait_for_counts("metrics", counts("abc"))

    vote_metrics = ballot.get("/metrics").text
    worker_metrics = http.get(f"{worker.url}/metrics").text

    # Summed over both gunicorn workers, whichever one took each vote.
    assert metric(vote_metrics, "cloudvote_votes_accepted_total", poll="metrics") == 3
    assert metric(worker_metrics, "cloudvote_votes_applied_total") >= 3
    assert metric(worker_metrics, "cloudvote_worker_batch_size_count") >= 1
    assert metric(worker_metrics, "cloudvote_worker_batch_size_sum") >= 3
    assert metric(worker_metrics, "cloudvote_queue_depth") == 0


# -- dependency outages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_bytes",
    [10_000, 20_000],
    ids=["over-the-apps-8-kib", "over-gunicorns-16-kib-field"],
)
def test_headers_too_large_get_cloudvotes_431_from_gunicorn_and_store_nothing(
    ballot: Client, redis_server: RedisServer, header_bytes: int
) -> None:
    """Past 8 KiB the app answers; past 16 KiB in one field gunicorn refuses the request
    before the app sees it, and its worker class answers in the same words."""
    depth = queue_depth(redis_server)
    response = ballot.post(
        "/api/polls/api/votes",
        json={"option": "a"},
        headers={"X-Tracking": "x" * header_bytes},
    )

    assert response.status_code == 431
    assert response.headers["Content-Type"] == "application/json"
    assert "the request headers are larger than the 8 KiB limit" in response.json()["error"]
    assert queue_depth(redis_server) == depth


def test_redis_outage_answers_503_and_loses_no_accepted_vote(
    http: Client, ballot: Client, results: Client, redis_server: RedisServer, worker: ServiceProcess
) -> None:
    # Paused, the worker leaves the accepted votes in Redis for the whole outage.
    with worker.paused():
        vote_all(ballot, "redis-outage", "aab")
        assert queue_depth(redis_server) >= 3

        with redis_server.down():
            refused = ballot.vote("c", "redis-outage")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"].isdigit()
            assert "unavailable" in refused.json()["error"]
            form = ballot.post("/", data={"vote": "a"})
            assert form.status_code == 503
            assert "Retry-After" in form.headers
            assert ballot.get("/readyz").status_code == 503
            assert ballot.get("/healthz").status_code == 200

    wait_until(
        lambda: ballot.get("/readyz").status_code,
        lambda status: status == 200,
        timeout=10,
        what="vote ready again",
    )
    vote_all(ballot, "redis-outage", "c")
    results.wait_for_counts("redis-outage", counts("aabc"))
    assert worker.running
    assert http.get(f"{worker.url}/readyz").status_code == 200


def test_full_redis_answers_503_and_a_worker_still_drains_it(
    deployment: Deployment,
    ballot: Client,
    results: Client,
    redis_server: RedisServer,
    worker: ServiceProcess,
) -> None:
    """A backlog that reached maxmemory (the worker or PostgreSQL was down for long):
    Redis still answers, but refuses every write. Votes must get 503, and a worker must
    drain the backlog, which is what frees the memory."""
    wait_for_empty_queue(redis_server)
    # The shared worker sits this one out, so a crash here cannot spoil later tests.
    with worker.paused(), redis_server.client() as admin, contextlib.ExitStack() as undo:
        vote_all(ballot, "redis-full", "abb")
        admin.config_set("maxmemory", "1")
        undo.callback(admin.config_set, "maxmemory", "0")
        refused = ballot.vote("c", "redis-full")
        drainer = deployment.start("worker", wait=False)
        undo.callback(drainer.close)
        drained = wait_until(
            lambda: queue_depth(redis_server) == 0 or not drainer.running,
            timeout=DRAIN_SECONDS,
            what="the backlog drained (or the worker dead)",
        )
        assert drained and drainer.running, drainer.log_tail()

    assert refused.status_code == 503
    assert "Retry-After" in refused.headers
    results.wait_for_counts("redis-full", counts("abb"))
    vote_all(ballot, "redis-full", "c")


def vote_once_redis_is_back(ballot: Client, poll: str, option: str) -> None:
    wait_until(
        lambda: ballot.vote(option, poll).status_code,
        lambda status: status == 202,
        timeout=10,
        what="a vote accepted after the restart",
    )


def queue_retries(process: ServiceProcess) -> float:
    """How often the worker has waited for its queue: each is a failed read and a backoff."""
    text = Client(process.url).get("/metrics").text
    # No sample at all before the first wait: the counter's label is created on first use.
    return metric(text, "cloudvote_dependency_retries_total", missing_ok=True, dependency="queue")


def wait_for_queue_retries(process: ServiceProcess, more_than: float) -> None:
    """Several failed reads and backoffs, seen on the worker's own metrics."""
    wait_until(
        lambda: queue_retries(process),
        lambda retries: retries >= more_than + 3,
        timeout=15,
        what=f"three more queue retries by worker {process.pid}",
    )


def test_worker_survives_a_redis_outage_and_resumes(
    http: Client, ballot: Client, results: Client, redis_server: RedisServer, worker: ServiceProcess
) -> None:
    before = results.results("redis-outage")["counts"]
    retries = queue_retries(worker)
    with redis_server.down():
        wait_for_queue_retries(worker, retries)
        assert worker.running, worker.log_tail()
        assert http.get(f"{worker.url}/healthz").status_code == 200
        assert http.get(f"{worker.url}/readyz").status_code == 503

    vote_once_redis_is_back(ballot, "redis-outage", "b")
    results.wait_for_counts("redis-outage", {**before, "b": before["b"] + 1})


def test_result_keeps_serving_while_the_worker_is_down_and_catches_up_after(
    ballot: Client, results: Client, redis_server: RedisServer, worker: ServiceProcess
) -> None:
    """Fault isolation (ARCH-04): losing the worker delays results, it breaks nothing."""
    vote_all(ballot, "worker-down", "a")
    results.wait_for_counts("worker-down", counts("a"))
    worker.kill()
    try:
        vote_all(ballot, "worker-down", "bbbbb")
        time.sleep(1.0)  # a working worker would have applied them by now
        assert results.results("worker-down")["counts"] == counts("a")
        assert results.get("/readyz").status_code == 200
        assert ballot.get("/readyz").status_code == 200
        assert queue_depth(redis_server) >= 5
    finally:
        worker.start().wait_healthy()
    results.wait_for_counts("worker-down", counts("abbbbb"))


def test_worker_started_while_redis_is_down_waits_for_it_instead_of_crashing(
    http: Client,
    deployment: Deployment,
    ballot: Client,
    results: Client,
    redis_server: RedisServer,
    worker: ServiceProcess,
) -> None:
    """After a node reboot the worker may start before Redis does."""
    # The shared worker paused, so the late starter is the only one draining.
    with worker.paused(), contextlib.ExitStack() as undo:
        with redis_server.down():
            late = deployment.start("worker", wait=False)
            undo.callback(late.close)  # one worker again, for the tests that read its metrics
            late.wait_healthy(timeout=10)
            # Not a pause that hopes for the best: its metrics count the failed reads.
            wait_for_queue_retries(late, 0)
            assert late.running, late.log_tail()
            assert http.get(f"{late.url}/readyz").status_code == 503
        vote_once_redis_is_back(ballot, "late-worker", "a")
        results.wait_for_counts("late-worker", counts("a"))
        assert late.running


def test_postgres_outage_keeps_votes_queued_and_results_stale_until_it_returns(
    http: Client,
    ballot: Client,
    results: Client,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    worker: ServiceProcess,
) -> None:
    poll = "postgres-outage"
    vote_all(ballot, poll, "ab")
    last_fresh = results.wait_for_counts(poll, counts("ab"))
    for _ in range(6):  # let both result processes remember the last counts
        with Client(results.base_url) as fresh_connection:
            fresh_connection.results(poll)

    with postgres_server.down():
        vote_all(ballot, poll, "cccab")  # vote needs only Redis
        # The worker cannot commit, so it must not acknowledge: the votes stay queued
        # through the next seconds (each probe below waits out a pool checkout).
        depths = [queue_depth(redis_server)]
        assert http.get(f"{worker.url}/healthz").status_code == 200
        assert http.get(f"{worker.url}/readyz").status_code == 503
        depths.append(queue_depth(redis_server))
        assert results.get("/readyz").status_code == 503
        depths.append(queue_depth(redis_server))
        for _ in range(2):
            stale = results.get(f"/api/polls/{poll}/results")
            if stale.status_code == 200:
                assert stale.json() == {**last_fresh, "stale": True}
            else:
                assert stale.status_code == 503
                assert "Retry-After" in stale.headers
            depths.append(queue_depth(redis_server))
        assert min(depths) >= 5, depths
        assert worker.running, worker.log_tail()

    results.wait_for_counts(poll, counts("abcccab"))
    wait_for_empty_queue(redis_server)
    assert worker.running


# -- poison messages -------------------------------------------------------------------------


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(
    http: Client, ballot: Client, results: Client, redis_server: RedisServer, worker: ServiceProcess
) -> None:
    with redis_server.client(decode_responses=True) as client:
        unknown_poll = client.xadd(
            "votes", {"poll": "no-such-poll", "option": "a", "voter": new_voter(), "trace": ""}
        )
        missing_voter = client.xadd("votes", {"poll": "poison", "option": "a"})
        # Valid to the domain, refused by PostgreSQL (text cannot hold NUL).
        refused_by_store = client.xadd(
            "votes", {"poll": "poison", "option": "b", "voter": new_voter(), "trace": "x\x00y"}
        )
    vote_all(ballot, "poison", "c")

    results.wait_for_counts("poison", counts("c"))

    def dead_letters() -> dict[str, dict[str, str]]:
        with redis_server.client(decode_responses=True) as client:
            return {fields["original_id"]: fields for _, fields in client.xrange("votes:dead")}

    parked = wait_until(
        dead_letters,
        lambda found: {unknown_poll, missing_voter, refused_by_store} <= set(found),
        timeout=DRAIN_SECONDS,
        what="three dead letters",
    )
    assert "no-such-poll" in parked[unknown_poll]["reason"]
    assert "voter" in parked[missing_voter]["reason"]
    assert "store refused" in parked[refused_by_store]["reason"]
    assert queue_depth(redis_server) == 0
    assert worker.running
    worker_metrics = http.get(f"{worker.url}/metrics").text
    assert metric(worker_metrics, "cloudvote_votes_dead_lettered_total") >= 3


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["vote", "result", "worker"])
def test_sigterm_stops_the_service_with_exit_code_zero_within_ten_seconds(
    deployment: Deployment, http: Client, service: str
) -> None:
    process = deployment.start(service)
    with contextlib.ExitStack() as undo:
        if service == "result":
            # An open live-results stream must not hold the shutdown back.
            stream = http.get(f"{process.url}/api/polls/default/results/stream", stream=True)
            undo.callback(stream.close)
            assert stream.status_code == 200
            assert next(stream.iter_lines())  # the stream is really flowing
        try:
            code, seconds = process.terminate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{service} still running 10 s after SIGTERM:\n{process.log_tail()}")
        assert code == 0, process.log_tail()
        assert seconds < 10


def test_sigterm_lets_a_busy_worker_finish_and_acknowledge_its_batch(
    deployment: Deployment, redis_server: RedisServer, worker: ServiceProcess
) -> None:
    busy = deployment.start("worker")
    with redis_server.client(decode_responses=True) as client:
        pipe = client.pipeline(transaction=False)
        for _ in range(5_000):
            pipe.xadd("votes", {"poll": "shutdown", "option": "a", "voter": new_voter()})
        pipe.execute()
        # A consumer shows up in the group once it has read something: busy is busy.
        consumer = wait_until(
            lambda: [
                c["name"]
                for c in client.xinfo_consumers("votes", "workers")
                if c["name"].endswith(f"-{busy.pid}")
            ],
            timeout=10,
            interval=0.01,
            what="the new worker reading from the queue",
        )[0]

        assert busy.terminate(timeout=10)[0] == 0, busy.log_tail()

        # It left nothing pending: whatever it had received, it committed and acknowledged.
        pending = {c["name"]: c["pending"] for c in client.xinfo_consumers("votes", "workers")}
        assert pending[consumer] == 0
    wait_for_empty_queue(redis_server)


def test_two_migrations_at_once_both_succeed(
    deployment: Deployment, postgres_server: PostgresServer
) -> None:
    url = postgres_server.new_database("e2e_services_migrate_race")
    racers = [deployment.spawn("migrate", DATABASE_URL=url) for _ in range(2)]
    codes = [racer.wait(timeout=60) for racer in racers]

    assert codes == [0, 0], "\n".join(racer.log_tail() for racer in racers)
    with psycopg.connect(url, password=postgres_server.password) as conn:
        rows = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
    shipped = resources.files("cloudvote.adapters.postgres_migrations").iterdir()
    assert rows == sorted((script.name,) for script in shipped if script.name.endswith(".sql"))


@pytest.mark.parametrize(
    ("command", "unset"),
    [("vote", "REDIS_URL"), ("result", "DATABASE_URL"), ("worker", "DATABASE_URL")],
)
def test_missing_required_setting_stops_the_service_and_names_it(
    deployment: Deployment, command: str, unset: str
) -> None:
    process = deployment.spawn(command, **{unset: ""})
    assert process.wait(timeout=30) != 0
    assert unset in Path(process.log_path).read_text()
