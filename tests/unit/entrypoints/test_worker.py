"""The worker process's side port: health that follows the drain loop, readiness, stats."""

from __future__ import annotations

import time

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.bootstrap import Worker
from cloudvote.config import Settings
from cloudvote.entrypoints.worker import STUCK_AFTER_SECONDS, create_worker_app
from tests.support.fakes import CATALOG


def _worker() -> tuple[Worker, InMemoryVoteQueue]:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    drainer = VoteDrainer(CATALOG, queue, store, DrainSettings(block_ms=0))
    worker = Worker(
        settings=Settings(pod_name="worker-0"),
        catalog=CATALOG,
        readiness={"queue": queue.ping, "store": store.ping},
        drainer=drainer,
    )
    return worker, queue


def test_liveness_follows_the_drain_loop_and_fails_once_it_is_stuck() -> None:
    worker, _ = _worker()
    client = create_worker_app(worker).test_client()
    worker.drainer.stats.last_progress = time.monotonic()

    assert client.get("/healthz").get_json() == {"status": "ok", "service": "worker"}
    worker.drainer.stats.last_progress = time.monotonic() - STUCK_AFTER_SECONDS - 1
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "stuck", "service": "worker"}


def test_readiness_names_the_dependency_that_is_down() -> None:
    worker, queue = _worker()
    client = create_worker_app(worker).test_client()
    queue.available = False

    response = client.get("/readyz")
    assert response.status_code == 503
    assert list(response.get_json()["failing"]) == ["queue"]


def test_stats_report_the_counters_and_seconds_since_progress() -> None:
    worker, _ = _worker()
    worker.drainer.stats.last_progress = time.monotonic() - 2
    body = create_worker_app(worker).test_client().get("/stats").get_json()

    assert "last_progress" not in body
    assert 1.5 < body["seconds_since_progress"] < 10
    assert body["retries"] == 0
