"""The composition root: the one place that picks adapters from settings.

Monolith mode is not a different program, only a different set of adapters (SQLite for
queue and store instead of Redis and PostgreSQL) behind the same ports (ARCH-01).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudvote.adapters.polls_file import load_polls_file
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.application.live_results import LiveResults, PollingTallyChanges
from cloudvote.application.pipeline import PipelineView
from cloudvote.application.results import ResultsView
from cloudvote.application.voting import VoteCaster
from cloudvote.config import Settings
from cloudvote.domain.polls import PollCatalog
from cloudvote.observability.metrics import (
    PrometheusDrainObserver,
    PrometheusLiveResultsObserver,
)
from cloudvote.ports.queue import QueueUnavailable, VoteQueue, VoteSource
from cloudvote.ports.store import TallyChanges, VoteStore

if TYPE_CHECKING:
    from cloudvote.adapters.redis_streams import RedisVoteQueue


def load_catalog(settings: Settings) -> PollCatalog:
    if settings.polls_file:
        return load_polls_file(settings.polls_file)
    return PollCatalog.default_catalog(settings.option_a, settings.option_b)


@dataclass
class Components:
    """What the entrypoints need; which fields are set depends on the shape."""

    settings: Settings
    catalog: PollCatalog
    caster: VoteCaster | None = None
    results: ResultsView | None = None
    live: LiveResults | None = None
    drainer: VoteDrainer | None = None
    queue: VoteQueue | None = None
    store: VoteStore | None = None
    # name -> check that raises when that dependency is not ready
    readiness: dict[str, Callable[[], None]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def _redis_queue(settings: Settings, components: Components) -> RedisVoteQueue:
    from cloudvote.adapters.redis_streams import RedisVoteQueue, connect_redis

    client = connect_redis(settings.require_redis_url(), settings.redis_password)
    components.closers.append(client.close)
    queue = RedisVoteQueue(
        client,
        stream=settings.stream,
        group=settings.consumer_group,
        # Pod name in Kubernetes, container id in Docker: unique per worker instance.
        consumer=f"{socket.gethostname()}-{os.getpid()}",
        dead_letter_stream=settings.dead_letter_stream,
    )
    components.readiness["redis"] = queue.ping
    return queue


def _postgres_store(settings: Settings, components: Components, service: str) -> VoteStore:
    from cloudvote.adapters.postgres import PostgresVoteStore, create_pool

    pool = create_pool(
        settings.require_database_url(),
        settings.database_password,
        settings.database_pool_size,
        application_name=f"cloudvote-{service}",
    )
    components.closers.append(pool.close)
    store = PostgresVoteStore(pool)
    components.readiness["postgres"] = store.ping
    return store


def _drain_settings(settings: Settings) -> DrainSettings:
    return DrainSettings(batch_size=settings.batch_size, claim_idle_ms=settings.claim_idle_ms)


def build_vote_service(settings: Settings) -> Components:
    components = Components(settings, load_catalog(settings))
    queue = _redis_queue(settings, components)
    components.queue = queue
    components.caster = VoteCaster(components.catalog, queue, settings.instance_name())
    return components


def _live_results(
    settings: Settings, view: ResultsView, changes: TallyChanges, store: VoteStore
) -> LiveResults:
    return LiveResults(
        view,
        changes,
        max_streams=settings.max_streams,
        observer=PrometheusLiveResultsObserver(),
        pipeline=PipelineView(store),
    )


def build_result_service(settings: Settings) -> Components:
    from cloudvote.adapters.postgres import PostgresTallyChanges, conninfo_with_password

    components = Components(settings, load_catalog(settings))
    store = _postgres_store(settings, components, "result")
    components.store = store
    components.results = ResultsView(components.catalog, store)
    changes = PostgresTallyChanges(
        conninfo_with_password(settings.require_database_url(), settings.database_password)
    )
    components.live = _live_results(settings, components.results, changes, store)
    components.closers.append(components.live.stop)
    return components


def build_worker(settings: Settings) -> Components:
    components = Components(settings, load_catalog(settings))
    source = _redis_queue(settings, components)
    store = _postgres_store(settings, components, "worker")
    # Redis may come up after the worker: the drain loop recreates a missing group on
    # NOGROUP, so the worker then waits with backoff instead of crash-looping at start.
    with contextlib.suppress(QueueUnavailable):
        source.ensure_group()
    components.queue = source
    components.store = store
    components.drainer = VoteDrainer(
        components.catalog,
        source,
        store,
        _drain_settings(settings),
        observers=[PrometheusDrainObserver()],
        name=_worker_name(settings),
    )
    return components


def _worker_name(settings: Settings) -> str:
    """A pod runs one worker; outside Kubernetes several may share a host, so the process
    id tells them apart."""
    return settings.pod_name or f"{socket.gethostname()}:{os.getpid()}"


def build_monolith(settings: Settings) -> Components:
    from cloudvote.adapters.sqlite import SqliteDatabase, SqliteVoteQueue, SqliteVoteStore

    components = Components(settings, load_catalog(settings))
    database = SqliteDatabase(settings.resolved_data_dir() / "cloudvote.db")
    components.closers.append(database.close)
    queue = SqliteVoteQueue(database)
    queue.release_claims()
    store = SqliteVoteStore(database)
    source: VoteSource = queue
    components.queue = queue
    components.store = store
    components.caster = VoteCaster(components.catalog, queue, settings.instance_name())
    components.results = ResultsView(components.catalog, store)
    # SQLite cannot announce commits, so the one feed thread re-reads what is watched.
    components.live = _live_results(settings, components.results, PollingTallyChanges(), store)
    components.closers.append(components.live.stop)
    components.drainer = VoteDrainer(
        components.catalog,
        source,
        store,
        _drain_settings(settings),
        observers=[PrometheusDrainObserver()],
        name=_worker_name(settings),
    )
    components.readiness["sqlite"] = store.ping
    return components
