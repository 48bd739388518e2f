"""The microservices shape end to end: `cloudvote vote|result|worker|migrate` as real
processes, configured by environment and password files, over real Redis and PostgreSQL.

Each test votes in a poll of its own (see POLLS), so the shared processes can serve
every test while each still checks exact counts.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
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
def database(
    deployment: Deployment, postgres_server: PostgresServer
) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(
        deployment.database_url, password=postgres_server.password, autocommit=True
    ) as conn:
        yield conn


# -- helpers ---------------------------------------------------------------------------------


def new_voter() -> str:
    return secrets.token_hex(16)


def queue_depth(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        return int(client.xlen("votes"))


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    found = [
        value
        for (sample, sample_labels), value in metric_samples(text).items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    ]
    assert found, f"no sample {name}{labels} in:\n{text}"
    return sum(found)


# -- voting and results ----------------------------------------------------------------------


def test_form_vote_redirects_and_is_counted_in_the_results(
    http: Client, vote: ServiceProcess, result: ServiceProcess, worker: ServiceProcess
) -> None:
    page = http.get(f"{vote.url}/")
    assert page.status_code == 200
    assert "voter_id" in http.cookies  # the page handed this browser a voter id

    first = http.post(f"{vote.url}/", data={"vote": "a"})
    assert first.status_code == 303
    assert first.headers["Location"] == "/"
    http.at(result.url).wait_for_counts("default", {"a": 1, "b": 0})

    # Same cookie, new choice: the vote is replaced, not added.
    second = http.post(f"{vote.url}/", data={"vote": "b"})
    assert second.status_code == 303
    body = http.at(result.url).wait_for_counts("default", {"a": 0, "b": 1})
    assert body == {"poll": "default", "counts": {"a": 0, "b": 1}, "total": 1}


def test_api_votes_are_accepted_and_counted_exactly(
    http: Client, vote: ServiceProcess, result: ServiceProcess, worker: ServiceProcess
) -> None:
    expected = Counter({"a": 0, "b": 0, "c": 0})
    for option in "abcab":
        response = http.at(vote.url).vote(option, "api")
        assert response.status_code == 202
        assert response.json() == {"poll": "api", "option": option, "status": "accepted"}
        expected[option] += 1

    body = http.at(result.url).wait_for_counts("api", dict(expected))
    assert body["total"] == 5


def test_traceparent_follows_the_vote_into_the_store(
    http: Client,
    vote: ServiceProcess,
    worker: ServiceProcess,
    database: psycopg.Connection[Any],
) -> None:
    trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)
    voter = new_voter()

    response = http.at(vote.url).vote(
        "a", "tracing", voter, traceparent=f"00-{trace_id}-{parent_span}-01"
    )

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
    assert (
        metric(
            metrics.text,
            "cloudvote_http_requests_total",
            service=service,
            endpoint="/healthz",
            status="200",
        )
        >= 1
    )
    assert (
        metric(
            metrics.text,
            "cloudvote_http_request_duration_seconds_count",
            service=service,
            endpoint="/healthz",
        )
        >= 1
    )


def test_metrics_show_votes_accepted_applied_batches_and_queue_depth(
    http: Client,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    for option in "abc":
        assert http.at(vote.url).vote(option, "metrics").status_code == 202
    http.at(result.url).wait_for_counts("metrics", {"a": 1, "b": 1, "c": 1})

    vote_metrics = http.get(f"{vote.url}/metrics").text
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
    http: Client, redis_server: RedisServer, vote: ServiceProcess, header_bytes: int
) -> None:
    """Past 8 KiB the app answers; past 16 KiB in one field gunicorn refuses the request
    before the app sees it, and its worker class answers in the same words."""
    depth = queue_depth(redis_server)
    response = http.post(
        f"{vote.url}/api/polls/api/votes",
        json={"option": "a"},
        headers={"X-Tracking": "x" * header_bytes},
    )

    assert response.status_code == 431
    assert response.headers["Content-Type"] == "application/json"
    assert "the request headers are larger than the 8 KiB limit" in response.json()["error"]
    assert queue_depth(redis_server) == depth


def test_redis_outage_answers_503_and_loses_no_accepted_vote(
    http: Client,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    ballot, expected = http.at(vote.url), Counter({"a": 0, "b": 0, "c": 0})
    # Paused, the worker leaves the accepted votes in Redis for the whole outage.
    with worker.paused():
        for option in "aab":
            assert ballot.vote(option, "redis-outage").status_code == 202
            expected[option] += 1
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
    assert ballot.vote("c", "redis-outage").status_code == 202
    expected["c"] += 1
    http.at(result.url).wait_for_counts("redis-outage", dict(expected))
    assert worker.running
    assert http.get(f"{worker.url}/readyz").status_code == 200


def test_full_redis_answers_503_and_a_worker_still_drains_it(
    http: Client,
    deployment: Deployment,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    """A backlog that reached maxmemory (the worker or PostgreSQL was down for long):
    Redis still answers, but refuses every write. Votes must get 503, and a worker must
    drain the backlog, which is what frees the memory."""
    wait_until(lambda: queue_depth(redis_server), lambda d: d == 0, timeout=DRAIN_SECONDS)
    ballot, expected = http.at(vote.url), Counter({"a": 0, "b": 0, "c": 0})
    # The shared worker sits this one out, so a crash here cannot spoil later tests.
    with worker.paused():
        for option in "abb":
            assert ballot.vote(option, "redis-full").status_code == 202
            expected[option] += 1
        with redis_server.client() as admin:
            admin.config_set("maxmemory", "1")
            try:
                refused = ballot.vote("c", "redis-full")
                drainer = deployment.start("worker", wait=False)
                drained = wait_until(
                    lambda: queue_depth(redis_server) == 0 or not drainer.running,
                    timeout=DRAIN_SECONDS,
                    what="the backlog drained (or the worker dead)",
                )
                assert drained and drainer.running, drainer.log_tail()
            finally:
                admin.config_set("maxmemory", "0")
                drainer.close()

    assert refused.status_code == 503
    assert "Retry-After" in refused.headers
    http.at(result.url).wait_for_counts("redis-full", dict(expected))
    assert ballot.vote("c", "redis-full").status_code == 202


def vote_once_redis_is_back(ballot: Client, poll: str, option: str) -> None:
    wait_until(
        lambda: ballot.vote(option, poll).status_code,
        lambda status: status == 202,
        timeout=10,
        what="a vote accepted after the restart",
    )


def queue_retries(process: ServiceProcess) -> float:
    """How often the worker has waited for its queue: each is a failed read and a backoff."""
    samples = metric_samples(Client(process.url).get("/metrics").text)
    # No sample at all before the first wait: the counter's label is created on first use.
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == "cloudvote_dependency_retries_total" and ("dependency", "queue") in labels
    )


def wait_for_queue_retries(process: ServiceProcess, more_than: float) -> None:
    """Several failed reads and backoffs, seen on the worker's own metrics."""
    wait_until(
        lambda: queue_retries(process),
        lambda retries: retries >= more_than + 3,
        timeout=15,
        what=f"three more queue retries by worker {process.pid}",
    )


def test_worker_survives_a_redis_outage_and_resumes(
    http: Client,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    before = http.at(result.url).results("redis-outage")["counts"]
    retries = queue_retries(worker)
    with redis_server.down():
        wait_for_queue_retries(worker, retries)
        assert worker.running, worker.log_tail()
        assert http.get(f"{worker.url}/healthz").status_code == 200
        assert http.get(f"{worker.url}/readyz").status_code == 503

    vote_once_redis_is_back(http.at(vote.url), "redis-outage", "b")
    http.at(result.url).wait_for_counts("redis-outage", {**before, "b": before["b"] + 1})


def test_result_keeps_serving_while_the_worker_is_down_and_catches_up_after(
    http: Client,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    """Fault isolation (ARCH-04): losing the worker delays results, it breaks nothing."""
    ballot, results = http.at(vote.url), http.at(result.url)
    ballot.vote("a", "worker-down")
    results.wait_for_counts("worker-down", {"a": 1, "b": 0, "c": 0})
    worker.kill()
    try:
        accepted = [ballot.vote("b", "worker-down").status_code for _ in range(5)]
        assert accepted == [202] * 5
        time.sleep(1.0)  # a working worker would have applied them by now
        assert results.results("worker-down")["counts"] == {"a": 1, "b": 0, "c": 0}
        assert results.get("/readyz").status_code == 200
        assert ballot.get("/readyz").status_code == 200
        assert queue_depth(redis_server) >= 5
    finally:
        worker.start().wait_healthy()
    results.wait_for_counts("worker-down", {"a": 1, "b": 5, "c": 0})


def test_worker_started_while_redis_is_down_waits_for_it_instead_of_crashing(
    http: Client,
    deployment: Deployment,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    """After a node reboot the worker may start before Redis does."""
    late: ServiceProcess | None = None
    # The shared worker paused, so the late starter is the only one draining.
    with worker.paused():
        try:
            with redis_server.down():
                late = deployment.start("worker", wait=False)
                late.wait_healthy(timeout=10)
                # Not a pause that hopes for the best: its metrics count the failed reads.
                wait_for_queue_retries(late, 0)
                assert late.running, late.log_tail()
                assert http.get(f"{late.url}/readyz").status_code == 503
            vote_once_redis_is_back(http.at(vote.url), "late-worker", "a")
            http.at(result.url).wait_for_counts("late-worker", {"a": 1, "b": 0, "c": 0})
            assert late.running
        finally:
            if late is not None:
                late.close()  # one worker again, for the tests that read its metrics


def test_postgres_outage_keeps_votes_queued_and_results_stale_until_it_returns(
    http: Client,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    poll, ballot, results = "postgres-outage", http.at(vote.url), http.at(result.url)
    expected = Counter({"a": 1, "b": 1, "c": 0})
    for option in "ab":
        assert ballot.vote(option, poll).status_code == 202
    last_fresh = results.wait_for_counts(poll, dict(expected))
    for _ in range(6):  # let both result processes remember the last counts
        with Client(result.url) as fresh_connection:
            fresh_connection.results(poll)

    with postgres_server.down():
        for option in "cccab":
            assert ballot.vote(option, poll).status_code == 202  # vote needs only Redis
            expected[option] += 1
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

    results.wait_for_counts(poll, dict(expected))
    wait_until(
        lambda: queue_depth(redis_server),
        lambda depth: depth == 0,
        timeout=DRAIN_SECONDS,
        what="queue drained",
    )
    assert worker.running


# -- poison messages -------------------------------------------------------------------------


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(
    http: Client,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
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
    assert http.at(vote.url).vote("c", "poison").status_code == 202

    http.at(result.url).wait_for_counts("poison", {"a": 0, "b": 0, "c": 1})

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
    stream: requests.Response | None = None
    if service == "result":
        # An open live-results stream must not hold the shutdown back.
        stream = http.get(f"{process.url}/api/polls/default/results/stream", stream=True)
        assert stream.status_code == 200
        assert next(stream.iter_lines())  # the stream is really flowing
    try:
        started = time.monotonic()
        process.send(signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{service} still running 10 s after SIGTERM:\n{process.log_tail()}")
        assert code == 0, process.log_tail()
        assert time.monotonic() - started < 10
    finally:
        if stream is not None:
            stream.close()


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

        busy.send(signal.SIGTERM)
        assert busy.wait(timeout=10) == 0, busy.log_tail()

        # It left nothing pending: whatever it had received, it committed and acknowledged.
        pending = {c["name"]: c["pending"] for c in client.xinfo_consumers("votes", "workers")}
        assert pending[consumer] == 0
    wait_until(lambda: queue_depth(redis_server), lambda d: d == 0, timeout=DRAIN_SECONDS)


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
