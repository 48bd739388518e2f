"""Liveness and readiness probes while a dependency hangs instead of going away.

A stopped server refuses connections at once; a frozen one (SIGSTOP: a GC pause, a stuck
disk, a partitioned node) accepts them and never answers, which is where a probe that
touches a dependency hangs. `/healthz` must never touch one, or the kubelet restarts every
healthy pod; `/readyz` must say 503 in time, or the probe times out instead of reporting.

The dependencies are the session's shared servers, so every freeze is undone in a
`finally` (SIGCONT), and each test waits for readiness to return before it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from functools import partial

import pytest

from tests.support.client import Client
from tests.support.probes import Answer, ProbeRun, probe_latencies, timed_get
from tests.support.servers import PostgresServer, RedisServer, processes
from tests.support.services import Deployment, ServiceProcess, deployment_fixture
from tests.support.sse_crowd import ThreadedSseCrowd
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

POLLS = {"polls": [{"id": "default", "options": [{"id": "a"}, {"id": "b"}]}]}
DRAIN_SECONDS = 20.0
PROBE_BOUND = 0.1
# /readyz gives up on a hung dependency after ~2 s; 3 s leaves room for a busy machine.
READY_BOUND = 3.0
RECOVERY_SECONDS = 20.0


# -- fixtures --------------------------------------------------------------------------------


deployment = deployment_fixture("probes", POLLS)


@pytest.fixture(scope="module")
def result(deployment: Deployment) -> ServiceProcess:
    # One process: the one holding the open streams is then surely the one the API test
    # asks, so it must have the last counts (another process may never have read them).
    return deployment.start("result", WEB_CONCURRENCY="1")


# -- freezing --------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(pid: int, with_children: bool = False) -> Iterator[list[int]]:
    """SIGSTOP a server (and its children) for the block; SIGCONT whatever happens.

    Every PostgreSQL child calls setsid(), so the postmaster's process group holds only
    the postmaster: its children are found and stopped one by one, after it, so it cannot
    fork new ones in between.
    """
    stopped: list[int] = []
    try:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        children = [c for c, _, ppid, _ in processes() if ppid == pid] if with_children else []
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)
                stopped.append(child)
        yield stopped
    finally:
        for each in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGCONT)


def healthz(process: ServiceProcess) -> ProbeRun:
    return probe_latencies(f"{process.url}/healthz", calls=20, stop_after_slow=2)


def readyz(process: ServiceProcess) -> Answer:
    # Long enough to tell "answered late" from "hung", short enough to keep a freeze brief.
    return timed_get(f"{process.url}/readyz", timeout=READY_BOUND + 2)


def wait_ready(*services: ServiceProcess) -> None:
    for service in services:
        wait_until(
            partial(readyz, service),
            lambda answer: answer.status == "200",
            timeout=RECOVERY_SECONDS,
            what=f"{service.command} ready again",
        )


# -- tests -----------------------------------------------------------------------------------


def test_frozen_redis_leaves_healthz_fast_and_readyz_reports_503_in_time(
    redis_server: RedisServer, vote: ServiceProcess, worker: ServiceProcess
) -> None:
    """Old worker: /healthz refreshed the queue depth from Redis before every request, so
    it hung until the probe timed out; old vote and worker /readyz hung ~5 s."""
    wait_ready(vote, worker)
    assert redis_server.pid is not None
    with frozen(redis_server.pid):
        vote_health, worker_health = healthz(vote), healthz(worker)
        vote_ready, worker_ready = readyz(vote), readyz(worker)
    wait_ready(vote, worker)

    assert vote_health.p99 < PROBE_BOUND, vote_health.describe()
    assert worker_health.p99 < PROBE_BOUND, worker_health.describe()
    assert (vote_ready.status, vote_ready.seconds < READY_BOUND) == ("503", True), vote_ready
    assert (worker_ready.status, worker_ready.seconds < READY_BOUND) == ("503", True), worker_ready


def test_frozen_postgres_leaves_healthz_fast_readyz_503_and_results_still_served(
    postgres_server: PostgresServer,
    vote: ServiceProcess,
    worker: ServiceProcess,
    result: ServiceProcess,
) -> None:
    """Old result: /readyz and the results API hung on the frozen store; the streams'
    threads hung with them."""
    wait_ready(vote, worker, result)
    ballot = Client(vote.url, keep_alive=False)
    for option in "aab":
        assert ballot.vote(option).status_code == 202
    last_counts = {"a": 2, "b": 1}
    stream = f"{result.url}/api/polls/default/results/stream"
    with ThreadedSseCrowd(stream, 10, answer_timeout=5) as crowd:
        assert crowd.wait_for_total(3, timeout=DRAIN_SECONDS) == 10, crowd.summary()
        assert postgres_server.pid is not None
        with frozen(postgres_server.pid, with_children=True) as stopped:
            result_health, worker_health = healthz(result), healthz(worker)
            result_ready, worker_ready = readyz(result), readyz(worker)
            api = timed_get(f"{result.url}/api/polls/default/results", timeout=READY_BOUND + 2)
            during = crowd.streams()
        wait_ready(result, worker)
        # The change feed is back: a new vote reaches the streams that stayed open.
        assert ballot.vote("b").status_code == 202
        resumed = crowd.wait_for_total(4, timeout=DRAIN_SECONDS)
        summary = crowd.summary()

    assert len(stopped) > 3, f"only {stopped} stopped: not the postmaster and its children"
    assert result_health.p99 < PROBE_BOUND, result_health.describe()
    assert worker_health.p99 < PROBE_BOUND, worker_health.describe()
    assert (result_ready.status, result_ready.seconds < READY_BOUND) == ("503", True), result_ready
    assert (worker_ready.status, worker_ready.seconds < READY_BOUND) == ("503", True), worker_ready
    # The last counts are still served, at once; marked stale is allowed.
    assert (api.status, api.seconds < READY_BOUND) == ("200", True), api
    assert api.json()["counts"] == last_counts, api
    assert all(r.live for r in during), summary
    assert all(r.last_payload and r.last_payload["counts"] == last_counts for r in during)
    assert resumed == 10, summary
