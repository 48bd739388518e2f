"""The composition root: the one place that picks adapters from settings.

Monolith mode is not a different program, only a different set of adapters (SQLite for
queue and store instead of Redis and PostgreSQL) behind the same ports (ARCH-01).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudvote.adapters.polls_file import load_polls_file
from cloudvote.application.draining import DrainSettings, DrainTracer, VoteDrainer
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
from cloudvote.observability.tracing import StreamBatchTracer, Tracing
from cloudvote.ports.queue import QueueUnavailable, VoteSource
from cloudvote.ports.store import TallyChanges, VoteStore

if TYPE_CHECKING:
    from cloudvote.adapters.redis_streams import RedisVoteQueue


def load_catalog(settings: Settings) -> PollCatalog:
    if settings.polls_file:
        return load_polls_file(settings.polls_file)
    return PollCatalog.default_catalog(settings.option_a, settings.option_b)


@dataclass(kw_only=True)
class Shape:
    """What every shape has, whatever its adapters: the settings and catalog it was built
    from, its readiness checks, its tracer and the connections to close when it stops."""

    settings: Settings
    catalog: PollCatalog
    # The builders below make it from settings; a shape made by hand (tests) gets ids and
    # sampling but no exporter.
    tracing: Tracing = field(default_factory=Tracing.unexported)
    # name -> check that raises when that dependency is not ready
    readiness: dict[str, Callable[[], None]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)
    # Set when the process is asked to stop; long-lived answers (SSE) end when they see it.
    stopping: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


@dataclass(kw_only=True)
class VoteService(Shape):
    """The vote service: casts ballots onto the queue."""

    caster: VoteCaster


@dataclass(kw_only=True)
class ResultService(Shape):
    """The result service: tallies from the store, live."""

    live: LiveResults


@dataclass(kw_only=True)
class Worker(Shape):
    """The worker: drains the queue into the store."""

    drainer: VoteDrainer


@dataclass(kw_only=True)
class Monolith(Shape):
    """All three roles in one process, over one SQLite file."""

    caster: VoteCaster
    live: LiveResults
    drainer: VoteDrainer


@dataclass
class _Wiring:
    """The readiness checks and closers collected while a shape's adapters are made."""

    readiness: dict[str, Callable[[], None]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def tracing(self, settings: Settings, service: str, max_links: int = 0) -> Tracing:
        """The shape's tracer, flushed last when the shape closes (closers run in reverse)."""
        tracing = Tracing.from_settings(settings, service, max_links)
        self.closers.append(tracing.shutdown)
        return tracing


def _redis_queue(
    settings: Settings, wiring: _Wiring, tracing: Tracing | None = None
) -> RedisVoteQueue:
    from cloudvote.adapters.redis_streams import RedisVoteQueue, connect_redis

    client = connect_redis(settings.require_redis_url(), settings.redis_password)
    wiring.closers.append(client.close)
    queue = RedisVoteQueue(
        client,
        stream=settings.stream,
        group=settings.consumer_group,
        # Pod name in Kubernetes, container id in Docker: unique per worker instance.
        consumer=f"{socket.gethostname()}-{os.getpid()}",
        dead_letter_stream=settings.dead_letter_stream,
        tracing=tracing,
    )
    wiring.readiness["redis"] = queue.ping
    return queue


def _postgres_store(settings: Settings, wiring: _Wiring, service: str) -> VoteStore:
    from cloudvote.adapters.postgres import PostgresVoteStore, create_pool

    pool = create_pool(
        settings.require_database_url(),
        settings.database_password,
        settings.database_pool_size,
        application_name=f"cloudvote-{service}",
    )
    wiring.closers.append(pool.close)
    store = PostgresVoteStore(pool)
    wiring.readiness["postgres"] = store.ping
    return store


def build_vote_service(settings: Settings, catalog: PollCatalog | None = None) -> VoteService:
    """`catalog` is the one the caller already loaded and checked, if any."""
    catalog = load_catalog(settings) if catalog is None else catalog
    wiring = _Wiring()
    tracing = wiring.tracing(settings, "vote")
    queue = _redis_queue(settings, wiring, tracing)
    return VoteService(
        settings=settings,
        catalog=catalog,
        tracing=tracing,
        readiness=wiring.readiness,
        closers=wiring.closers,
        caster=VoteCaster(catalog, queue, settings.instance_name()),
    )


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


def build_result_service(settings: Settings, catalog: PollCatalog | None = None) -> ResultService:
    from cloudvote.adapters.postgres import PostgresTallyChanges, conninfo_with_password

    catalog = load_catalog(settings) if catalog is None else catalog
    wiring = _Wiring()
    tracing = wiring.tracing(settings, "result")
    store = _postgres_store(settings, wiring, "result")
    changes = PostgresTallyChanges(
        conninfo_with_password(settings.require_database_url(), settings.database_password)
    )
    live = _live_results(settings, ResultsView(catalog, store), changes, store)
    wiring.closers.append(live.stop)
    return ResultService(
        settings=settings,
        catalog=catalog,
        tracing=tracing,
        readiness=wiring.readiness,
        closers=wiring.closers,
        live=live,
    )


def build_worker(settings: Settings, catalog: PollCatalog | None = None) -> Worker:
    catalog = load_catalog(settings) if catalog is None else catalog
    wiring = _Wiring()
    # One span of each batch links the batch's other messages: up to a batch's worth.
    tracing = wiring.tracing(settings, "worker", max_links=settings.batch_size)
    source = _redis_queue(settings, wiring, tracing)
    store = _postgres_store(settings, wiring, "worker")
    # Redis may come up after the worker: the drain loop recreates a missing group on
    # NOGROUP, so the worker then waits with backoff instead of crash-looping at start.
    with contextlib.suppress(QueueUnavailable):
        source.ensure_group()
    return Worker(
        settings=settings,
        catalog=catalog,
        tracing=tracing,
        readiness=wiring.readiness,
        closers=wiring.closers,
        drainer=_drainer(
            settings,
            catalog,
            source,
            store,
            StreamBatchTracer(tracing, settings.stream, db_system="postgresql"),
        ),
    )


def _drainer(
    settings: Settings,
    catalog: PollCatalog,
    source: VoteSource,
    store: VoteStore,
    tracer: DrainTracer | None = None,
) -> VoteDrainer:
    return VoteDrainer(
        catalog,
        source,
        store,
        DrainSettings(batch_size=settings.batch_size, claim_idle_ms=settings.claim_idle_ms),
        observers=[PrometheusDrainObserver()],
        name=_worker_name(settings),
        tracer=tracer,
    )


def _worker_name(settings: Settings) -> str:
    """A pod runs one worker; outside Kubernetes several may share a host, so the process
    id tells them apart."""
    return settings.pod_name or f"{socket.gethostname()}:{os.getpid()}"


def build_monolith(settings: Settings, catalog: PollCatalog | None = None) -> Monolith:
    from cloudvote.adapters.sqlite import SqliteDatabase, SqliteVoteQueue, SqliteVoteStore

    catalog = load_catalog(settings) if catalog is None else catalog
    wiring = _Wiring()
    # Requests get SERVER spans; the SQLite queue carries no trace context, so the drain
    # thread's batches are not traced.
    tracing = wiring.tracing(settings, "cloudvote")
    database = SqliteDatabase(settings.resolved_data_dir() / "cloudvote.db")
    wiring.closers.append(database.close)
    queue = SqliteVoteQueue(database)
    queue.release_claims()
    store = SqliteVoteStore(database)
    # SQLite cannot announce commits, so the one feed thread re-reads what is watched.
    live = _live_results(settings, ResultsView(catalog, store), PollingTallyChanges(), store)
    wiring.closers.append(live.stop)
    wiring.readiness["sqlite"] = store.ping
    return Monolith(
        settings=settings,
        catalog=catalog,
        tracing=tracing,
        readiness=wiring.readiness,
        closers=wiring.closers,
        caster=VoteCaster(catalog, queue, settings.instance_name()),
        live=live,
        drainer=_drainer(settings, catalog, queue, store),
    )
