"""Draining the queue into the store: the worker's whole job.

The order of steps is the no-loss guarantee:
1. receive a batch (it stays pending in the queue),
2. write it to the store in one transaction,
3. acknowledge it only after the commit.
A crash anywhere before step 3 leaves the batch pending; another worker claims it after
an idle timeout and writes it again, which changes nothing because the store ignores a
vote whose version is not newer than the stored one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.polls import PollCatalog
from cloudvote.domain.votes import AcceptedVote, InvalidVote, decode_vote, latest_per_voter
from cloudvote.ports.queue import Delivery, QueueUnavailable, VoteSource
from cloudvote.ports.store import StoreUnavailable, VoteStore

log = logging.getLogger("cloudvote.worker")


class DrainObserver(Protocol):
    def batch_applied(self, size: int, changed: int, seconds: float) -> None: ...
    def dead_lettered(self, reason: str) -> None: ...
    def retried(self, dependency: str) -> None: ...
    def depth_measured(self, depth: int) -> None: ...


class TracedBatch(Protocol):
    def storing(self, size: int) -> AbstractContextManager[None]:
        """Open while the batch's `size` votes are written to the store."""
        ...


class DrainTracer(Protocol):
    """Traces what the worker does with each batch (observability.tracing has the real one).

    The store's write belongs to many votes' traces at once, so the tracer, not the loop,
    decides how the batch's spans hang together.
    """

    def batch(self, deliveries: Sequence[Delivery]) -> AbstractContextManager[TracedBatch]:
        """Open from the batch's receipt until it is acknowledged (or has failed)."""
        ...


class _UntracedBatch:
    def storing(self, size: int) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


class Untraced:
    """No spans: the monolith's queue carries no trace context, and tests need none."""

    def batch(self, deliveries: Sequence[Delivery]) -> AbstractContextManager[TracedBatch]:
        return contextlib.nullcontext(_UntracedBatch())


@dataclass
class DrainStats:
    """Counters kept in the process, served as JSON for the Kubernetes adapter container."""

    batches: int = 0
    votes_received: int = 0
    votes_changed: int = 0
    dead_letters: int = 0
    retries: int = 0
    last_batch_size: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    # Read by the loop, so /stats and /metrics never wait on the queue themselves.
    queue_depth: int | None = None
    oldest_waiting_at: float | None = None

    def batch_applied(self, size: int, changed: int, seconds: float) -> None:
        self.batches += 1
        self.votes_received += size
        self.votes_changed += changed
        self.last_batch_size = size

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters += 1

    def retried(self, dependency: str) -> None:
        self.retries += 1

    def depth_measured(self, depth: int) -> None:
        self.queue_depth = depth


@dataclass(frozen=True)
class DrainSettings:
    batch_size: int = 2000
    block_ms: int = 1000
    # A message pending this long belongs to a consumer presumed dead.
    claim_idle_ms: int = 15_000
    claim_every_s: float = 5.0
    # How often the loop reads the queue's depth for /stats, /metrics and its report to
    # the store (the results page's pipeline panel).
    depth_every_s: float = 1.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0


class VoteDrainer:
    def __init__(
        self,
        catalog: PollCatalog,
        source: VoteSource,
        store: VoteStore,
        settings: DrainSettings | None = None,
        observers: Sequence[DrainObserver] = (),
        stop_event: threading.Event | None = None,
        name: str = "worker",
        tracer: DrainTracer | None = None,
    ) -> None:
        self.catalog = catalog
        # How this worker signs its reports: its pod or host name.
        self.name = name
        self.source = source
        self.store = store
        self.settings = settings or DrainSettings()
        self.stats = DrainStats()
        self.observers: list[DrainObserver] = [self.stats, *observers]
        self.stop_event = stop_event or threading.Event()
        self.tracer: DrainTracer = tracer or Untraced()
        self._next_claim = 0.0
        self._next_depth = 0.0

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Drain until stop_event is set; the batch in hand is always finished first."""
        log.info("worker.started", extra={"batch_size": self.settings.batch_size})
        backoff = self.settings.backoff_initial_s
        while not self.stop_event.is_set():
            try:
                self.drain_once()
                backoff = self.settings.backoff_initial_s
            except (QueueUnavailable, StoreUnavailable) as error:
                dependency = "queue" if isinstance(error, QueueUnavailable) else "store"
                if dependency == "queue":
                    # Unknown now; /stats must not show stale figures, and the results
                    # page must hear that this worker is alive but cannot see the queue.
                    self.stats.queue_depth = None
                    self.stats.oldest_waiting_at = None
                    self._report_queue_down()
                for observer in self.observers:
                    observer.retried(dependency)
                log.warning(
                    "worker.dependency_down",
                    extra={"dependency": dependency, "error": str(error), "retry_in_s": backoff},
                )
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)
        log.info("worker.stopped")

    def drain_once(self) -> int:
        """Process one batch (stale claims first); returns how many messages it handled."""
        self.stats.last_progress = time.monotonic()
        if time.monotonic() >= self._next_depth:
            self._measure_and_report()
        deliveries: list[Delivery] = []
        now = time.monotonic()
        if now >= self._next_claim:
            deliveries = self.source.claim_stale_votes(
                self.settings.claim_idle_ms, self.settings.batch_size
            )
            self._next_claim = now + self.settings.claim_every_s
            if deliveries:
                log.info("worker.claimed_stale", extra={"count": len(deliveries)})
        if not deliveries:
            # Block no longer than the next report is due, so reports come once a second.
            block_ms = min(
                self.settings.block_ms,
                max(1, int((self._next_depth - time.monotonic()) * 1000)),
            )
            deliveries = self.source.receive(self.settings.batch_size, block_ms)
        if deliveries:
            self.process(deliveries)
        self.stats.last_progress = time.monotonic()
        return len(deliveries)

    def _measure_and_report(self) -> None:
        """Measure the queue and tell the store, once per `depth_every_s`.

        Before the batch, not after it: a worker that starts on a backlog reports what it
        found (and signs its first batch with that), instead of a queue it never measured.
        Here, off every request path: a hung queue stalls this loop (which the liveness
        check watches for), never a probe.
        """
        depth = self.source.depth()
        self.stats.oldest_waiting_at = self.source.oldest_waiting()
        self._next_depth = time.monotonic() + self.settings.depth_every_s
        for observer in self.observers:
            observer.depth_measured(depth)
        self.store.record_report(self._report())

    def _report_queue_down(self) -> None:
        """While the queue does not answer, say so (depth unknown) once per interval; a
        worker that went silent instead would look dead, and its votes safely queued."""
        if time.monotonic() < self._next_depth:
            return
        self._next_depth = time.monotonic() + self.settings.depth_every_s
        # Both down: nothing to tell anyone, and the loop retries anyway.
        with contextlib.suppress(StoreUnavailable):
            self.store.record_report(self._report())

    def process(self, deliveries: Sequence[Delivery]) -> None:
        with self.tracer.batch(deliveries) as traced:
            self._process(deliveries, traced)

    def _process(self, deliveries: Sequence[Delivery], traced: TracedBatch) -> None:
        votes: list[AcceptedVote] = []
        message_ids: list[str] = []
        for delivery in deliveries:
            try:
                votes.append(decode_vote(self.catalog, delivery.fields, delivery.version))
                message_ids.append(delivery.message_id)
            except InvalidVote as error:
                self._dead_letter(delivery, str(error))
        started = time.perf_counter()
        newest = latest_per_voter(votes)
        with traced.storing(len(newest)):
            try:
                changed = self.store.apply(newest, self._report(batch_size=len(votes)))
            except StoreUnavailable:
                raise
            except Exception:
                # The store refused the data itself, not the connection. Find the culprits
                # one by one so that a single bad message cannot block the whole queue.
                log.exception("worker.batch_refused", extra={"size": len(newest)})
                changed = self._apply_one_by_one(newest, deliveries)
        elapsed = time.perf_counter() - started
        # Only now, with the transaction committed, may the messages leave the queue.
        self.source.acknowledge(message_ids)
        for observer in self.observers:
            observer.batch_applied(len(votes), changed, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            for vote in newest:
                log.debug(
                    "vote.applied",
                    extra={
                        "poll": vote.poll_id,
                        "option": vote.option_id,
                        "trace_id": vote.trace_id,
                    },
                )
        log.info(
            "worker.batch_committed",
            extra={"size": len(votes), "changed": changed, "seconds": round(elapsed, 4)},
        )

    def _report(self, batch_size: int = 0) -> WorkerReport:
        return WorkerReport(
            self.name, self.stats.queue_depth, self.stats.oldest_waiting_at, batch_size
        )

    def _apply_one_by_one(
        self, votes: Sequence[AcceptedVote], deliveries: Sequence[Delivery]
    ) -> int:
        by_key: dict[tuple[str, str], list[Delivery]] = {}
        for delivery in deliveries:
            poll, voter = delivery.fields.get("poll", ""), delivery.fields.get("voter", "")
            by_key.setdefault((poll, voter), []).append(delivery)
        changed = 0
        for vote in votes:
            try:
                # Each vote is now a batch of its own, committed with its own report.
                changed += self.store.apply([vote], self._report(batch_size=1))
            except StoreUnavailable:
                raise
            except Exception as error:  # noqa: BLE001 - any refusal of the data is final
                for delivery in by_key.get(vote.key, []):
                    self._dead_letter(delivery, f"store refused the vote: {error}")
        return changed

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.source.dead_letter(delivery, reason)
        for observer in self.observers:
            observer.dead_lettered(reason)
        log.error(
            "vote.dead_lettered",
            extra={"message_id": delivery.message_id, "reason": reason, "fields": delivery.fields},
        )
