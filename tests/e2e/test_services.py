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

from tests.support.servers import PostgresServer, RedisServer
from tests.support.services import Deployment, ServiceProcess, migrated_deployment
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

POLLS = {
    "polls": [
        {"id": "default", "question": "Cats or Dogs?", "options": [{"id": "a"}, {"id": "b"}]},
        *(
            {"id": poll, "options": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
            for poll in (
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
        ),
    ]
}
DRAIN_SECONDS = 20.0
HTTP_TIMEOUT = 10.0


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("services")
    with migrated_deployment(
        directory, redis_server, postgres_server, "services", POLLS
    ) as deployment:
        yield deployment


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


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


def cast(
    http: requests.Session,
    vote: ServiceProcess,
    poll: str,
    option: str,
    voter: str | None = None,
    **headers: str,
) -> requests.Response:
    """Vote through the JSON API as `voter` (a new voter by default)."""
    return http.post(
        f"{vote.url}/api/polls/{poll}/votes",
        json={"option": option},
        cookies={"voter_id": voter or new_voter()},
        headers=headers,
        timeout=HTTP_TIMEOUT,
    )


def counts(http: requests.Session, result: ServiceProcess, poll: str) -> dict[str, object]:
    response = http.get(f"{result.url}/api/polls/{poll}/results", timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def wait_for_counts(
    http: requests.Session, result: ServiceProcess, poll: str, expected: dict[str, int]
) -> dict[str, object]:
    return wait_until(
        lambda: counts(http, result, poll),
        lambda body: body["counts"] == expected and not body.get("stale"),
        timeout=DRAIN_SECONDS,
        what=f"results of {poll} == {expected}",
    )


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
    http: requests.Session, vote: ServiceProcess, result: ServiceProcess, worker: ServiceProcess
) -> None:
    page = http.get(f"{vote.url}/", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    assert "voter_id" in http.cookies  # the page handed this browser a voter id

    first = http.post(
        f"{vote.url}/", data={"vote": "a"}, allow_redirects=False, timeout=HTTP_TIMEOUT
    )
    assert first.status_code == 303
    assert first.headers["Location"] == "/"
    wait_for_counts(http, result, "default", {"a": 1, "b": 0})

    # Same cookie, new choice: the vote is replaced, not added.
    second = http.post(
        f"{vote.url}/", data={"vote": "b"}, allow_redirects=False, timeout=HTTP_TIMEOUT
    )
    assert second.status_code == 303
    body = wait_for_counts(http, result, "default", {"a": 0, "b": 1})
    assert body == {"poll": "default", "counts": {"a": 0, "b": 1}, "total": 1}


def test_api_votes_are_accepted_and_counted_exactly(
    http: requests.Session, vote: ServiceProcess, result: ServiceProcess, worker: ServiceProcess
) -> None:
    expected = Counter({"a": 0, "b": 0, "c": 0})
    for option in "abcab":
        response = cast(http, vote, "api", option)
        assert response.status_code == 202
        assert response.json() == {"poll": "api", "option": option, "status": "accepted"}
        expected[option] += 1

    body = wait_for_counts(http, result, "api", dict(expected))
    assert body["total"] == 5


def test_traceparent_follows_the_vote_into_the_store(
    http: requests.Session,
    vote: ServiceProcess,
    worker: ServiceProcess,
    database: psycopg.Connection[Any],
) -> None:
    trace_id, parent_span = secrets.token_hex(16), secrets.token_hex(8)
    voter = new_voter()

    response = cast(
        http, vote, "tracing", "a", voter, traceparent=f"00-{trace_id}-{parent_span}-01"
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
    request: pytest.FixtureRequest, http: requests.Session, service: str
) -> None:
    process: ServiceProcess = request.getfixturevalue(service)

    health = http.get(f"{process.url}/healthz", timeout=HTTP_TIMEOUT)
    ready = http.get(f"{process.url}/readyz", timeout=HTTP_TIMEOUT)
    metrics = http.get(f"{process.url}/metrics", timeout=HTTP_TIMEOUT)

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
    http: requests.Session,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    for option in "abc":
        assert cast(http, vote, "metrics", option).status_code == 202
    wait_for_counts(http, result, "metrics", {"a": 1, "b": 1, "c": 1})

    vote_metrics = http.get(f"{vote.url}/metrics", timeout=HTTP_TIMEOUT).text
    worker_metrics = http.get(f"{worker.url}/metrics", timeout=HTTP_TIMEOUT).text

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
    http: requests.Session, redis_server: RedisServer, vote: ServiceProcess, header_bytes: int
) -> None:
    """Past 8 KiB the app answers; past 16 KiB in one field gunicorn refuses the request
    before the app sees it, and its worker class answers in the same words."""
    depth = queue_depth(redis_server)
    response = http.post(
        f"{vote.url}/api/polls/api/votes",
        json={"option": "a"},
        headers={"X-Tracking": "x" * header_bytes},
        timeout=HTTP_TIMEOUT,
    )

    assert response.status_code == 431
    assert response.headers["Content-Type"] == "application/json"
    assert "the request headers are larger than the 8 KiB limit" in response.json()["error"]
    assert queue_depth(redis_server) == depth


def test_redis_outage_answers_503_and_loses_no_accepted_vote(
    http: requests.Session,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    expected = Counter({"a": 0, "b": 0, "c": 0})
    # Paused, the worker leaves the accepted votes in Redis for the whole outage.
    worker.send(signal.SIGSTOP)
    try:
        for option in "aab":
            assert cast(http, vote, "redis-outage", option).status_code == 202
            expected[option] += 1
        assert queue_depth(redis_server) >= 3

        redis_server.stop()
        try:
            refused = cast(http, vote, "redis-outage", "c")
            assert refused.status_code == 503
            assert refused.headers["Retry-After"].isdigit()
            assert "unavailable" in refused.json()["error"]
            form = http.post(
                f"{vote.url}/", data={"vote": "a"}, allow_redirects=False, timeout=HTTP_TIMEOUT
            )
            assert form.status_code == 503
            assert "Retry-After" in form.headers
            assert http.get(f"{vote.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 503
            assert http.get(f"{vote.url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        finally:
            redis_server.start()
    finally:
        worker.send(signal.SIGCONT)

    wait_until(
        lambda: http.get(f"{vote.url}/readyz", timeout=HTTP_TIMEOUT).status_code,
        lambda status: status == 200,
        timeout=10,
        what="vote ready again",
    )
    assert cast(http, vote, "redis-outage", "c").status_code == 202
    expected["c"] += 1
    wait_for_counts(http, result, "redis-outage", dict(expected))
    assert worker.running
    assert http.get(f"{worker.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 200


def test_full_redis_answers_503_and_a_worker_still_drains_it(
    http: requests.Session,
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
    expected = Counter({"a": 0, "b": 0, "c": 0})
    # The shared worker sits this one out, so a crash here cannot spoil later tests.
    worker.send(signal.SIGSTOP)
    try:
        for option in "abb":
            assert cast(http, vote, "redis-full", option).status_code == 202
            expected[option] += 1
        with redis_server.client() as admin:
            admin.config_set("maxmemory", "1")
            try:
                refused = cast(http, vote, "redis-full", "c")
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
    finally:
        worker.send(signal.SIGCONT)

    assert refused.status_code == 503
    assert "Retry-After" in refused.headers
    wait_for_counts(http, result, "redis-full", dict(expected))
    assert cast(http, vote, "redis-full", "c").status_code == 202


def test_worker_survives_a_redis_outage_and_resumes(
    http: requests.Session,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    before = counts(http, result, "redis-outage")["counts"]
    assert isinstance(before, dict)
    redis_server.stop()
    try:
        time.sleep(2.5)  # several failed reads and backoffs in the worker
        assert worker.running, worker.log_tail()
        assert http.get(f"{worker.url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        assert http.get(f"{worker.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 503
    finally:
        redis_server.start()

    wait_until(
        lambda: cast(http, vote, "redis-outage", "b").status_code,
        lambda status: status == 202,
        timeout=10,
        what="a vote accepted after the restart",
    )
    wait_for_counts(http, result, "redis-outage", {**before, "b": before["b"] + 1})


def test_result_keeps_serving_while_the_worker_is_down_and_catches_up_after(
    http: requests.Session,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    """Fault isolation (ARCH-04): losing the worker delays results, it breaks nothing."""
    cast(http, vote, "worker-down", "a")
    wait_for_counts(http, result, "worker-down", {"a": 1, "b": 0, "c": 0})
    worker.kill()
    try:
        accepted = [cast(http, vote, "worker-down", "b").status_code for _ in range(5)]
        assert accepted == [202] * 5
        time.sleep(1.0)  # a working worker would have applied them by now
        body = counts(http, result, "worker-down")
        assert body["counts"] == {"a": 1, "b": 0, "c": 0}
        assert http.get(f"{result.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 200
        assert http.get(f"{vote.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 200
        assert queue_depth(redis_server) >= 5
    finally:
        worker.start().wait_healthy()
    wait_for_counts(http, result, "worker-down", {"a": 1, "b": 5, "c": 0})


def test_worker_started_while_redis_is_down_waits_for_it_instead_of_crashing(
    http: requests.Session,
    deployment: Deployment,
    redis_server: RedisServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    """After a node reboot the worker may start before Redis does."""
    worker.send(signal.SIGSTOP)  # so the late starter is the only one draining
    late: ServiceProcess | None = None
    try:
        redis_server.stop()
        try:
            late = deployment.start("worker", wait=False)
            time.sleep(3)  # start-up plus a few failed attempts
            assert late.running, late.log_tail()
            late.wait_healthy(timeout=10)
            assert http.get(f"{late.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 503
        finally:
            redis_server.start()
        wait_until(
            lambda: cast(http, vote, "late-worker", "a").status_code,
            lambda status: status == 202,
            timeout=10,
            what="a vote accepted after the restart",
        )
        wait_for_counts(http, result, "late-worker", {"a": 1, "b": 0, "c": 0})
        assert late.running
    finally:
        if late is not None:
            late.close()  # one worker again, for the tests that read its metrics
        worker.send(signal.SIGCONT)


def test_postgres_outage_keeps_votes_queued_and_results_stale_until_it_returns(
    http: requests.Session,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    vote: ServiceProcess,
    result: ServiceProcess,
    worker: ServiceProcess,
) -> None:
    poll = "postgres-outage"
    expected = Counter({"a": 1, "b": 1, "c": 0})
    for option in "ab":
        assert cast(http, vote, poll, option).status_code == 202
    last_fresh = wait_for_counts(http, result, poll, dict(expected))
    for _ in range(6):  # let both result processes remember the last counts
        with requests.Session() as fresh_connection:
            counts(fresh_connection, result, poll)

    postgres_server.stop()
    try:
        for option in "cccab":
            assert cast(http, vote, poll, option).status_code == 202  # vote needs only Redis
            expected[option] += 1
        # The worker cannot commit, so it must not acknowledge: the votes stay queued
        # through the next seconds (each probe below waits out a pool checkout).
        depths = [queue_depth(redis_server)]
        assert http.get(f"{worker.url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200
        assert http.get(f"{worker.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 503
        depths.append(queue_depth(redis_server))
        assert http.get(f"{result.url}/readyz", timeout=HTTP_TIMEOUT).status_code == 503
        depths.append(queue_depth(redis_server))
        for _ in range(2):
            stale = http.get(f"{result.url}/api/polls/{poll}/results", timeout=HTTP_TIMEOUT)
            if stale.status_code == 200:
                assert stale.json() == {**last_fresh, "stale": True}
            else:
                assert stale.status_code == 503
                assert "Retry-After" in stale.headers
            depths.append(queue_depth(redis_server))
        assert min(depths) >= 5, depths
        assert worker.running, worker.log_tail()
    finally:
        postgres_server.start()

    wait_for_counts(http, result, poll, dict(expected))
    wait_until(
        lambda: queue_depth(redis_server),
        lambda depth: depth == 0,
        timeout=DRAIN_SECONDS,
        what="queue drained",
    )
    assert worker.running


# -- poison messages -------------------------------------------------------------------------


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_going(
    http: requests.Session,
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
    assert cast(http, vote, "poison", "c").status_code == 202

    wait_for_counts(http, result, "poison", {"a": 0, "b": 0, "c": 1})

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
    worker_metrics = http.get(f"{worker.url}/metrics", timeout=HTTP_TIMEOUT).text
    assert metric(worker_metrics, "cloudvote_votes_dead_lettered_total") >= 3


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["vote", "result", "worker"])
def test_sigterm_stops_the_service_with_exit_code_zero_within_ten_seconds(
    deployment: Deployment, http: requests.Session, service: str
) -> None:
    process = deployment.start(service)
    stream: requests.Response | None = None
    if service == "result":
        # An open live-results stream must not hold the shutdown back.
        stream = http.get(
            f"{process.url}/api/polls/default/results/stream", stream=True, timeout=HTTP_TIMEOUT
        )
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
