"""In-memory queue and store: the fakes the unit tests drive the application through.

They keep the same contracts as the real adapters (pending until acknowledged, newest
version wins) so a test that passes here says something about production behaviour.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from cloudvote.adapters.redis_streams import stream_fields
from cloudvote.domain.pipeline import (
    REPLICA_WINDOW_S,
    REPORTS_KEPT_S,
    PipelineStatus,
    WorkerReport,
    WorkerSeen,
)
from cloudvote.domain.votes import AcceptedVote, Ballot
from cloudvote.ports.queue import Delivery, QueueUnavailable
from cloudvote.ports.store import StoreUnavailable


class InMemoryVoteQueue:
    """A queue with a waiting list and a pending list, like one Redis consumer group."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._next_version = 1
        self._waiting: list[Delivery] = []
        self._pending: dict[str, Delivery] = {}
        self._accepted_at: dict[str, float] = {}
        self.dead_letters: list[tuple[Delivery, str]] = []
        self.available = True
        self.clock = clock

    def _check(self) -> None:
        if not self.available:
            raise QueueUnavailable("in-memory queue switched off")

    def enqueue(self, ballot: Ballot) -> str:
        # The same message a Redis stream carries, so decoding is tested as it runs.
        return self.enqueue_fields(stream_fields(ballot))

    def enqueue_fields(self, fields: dict[str, str]) -> str:
        """Queue raw fields, as a buggy or older producer might."""
        with self._lock:
            self._check()
            version = self._next_version
            self._next_version += 1
            delivery = Delivery(str(version), version, dict(fields))
            self._waiting.append(delivery)
            self._accepted_at[delivery.message_id] = self.clock()
            return delivery.message_id

    def receive(self, max_count: int, block_ms: int) -> list[Delivery]:
        with self._lock:
            self._check()
            taken, self._waiting = self._waiting[:max_count], self._waiting[max_count:]
            for delivery in taken:
                self._pending[delivery.message_id] = delivery
            return taken

    def claim_stale_votes(self, min_idle_ms: int, max_count: int) -> list[Delivery]:
        # Every pending message counts as stale: a test crashes a worker by dropping it.
        with self._lock:
            self._check()
            return list(self._pending.values())[:max_count]

    def acknowledge(self, message_ids: Sequence[str]) -> None:
        with self._lock:
            self._check()
            for message_id in message_ids:
                self._pending.pop(message_id, None)
                self._accepted_at.pop(message_id, None)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._lock:
            self._check()
            self.dead_letters.append((delivery, reason))
            self._pending.pop(delivery.message_id, None)
            self._accepted_at.pop(delivery.message_id, None)

    def depth(self) -> int:
        with self._lock:
            self._check()
            return len(self._waiting) + len(self._pending)

    def oldest_waiting(self) -> float | None:
        with self._lock:
            self._check()
            return min(self._accepted_at.values(), default=None)

    def ping(self) -> None:
        self._check()


class InMemoryVoteStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self.votes: dict[tuple[str, str], AcceptedVote] = {}
        self._tallies: dict[str, dict[str, int]] = {}
        self.workers: dict[str, WorkerSeen] = {}
        self._replicas: dict[str, float] = {}
        self.available = True
        self.transactions = 0
        self.reads = 0
        self.clock = clock

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("in-memory store switched off")

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        with self._lock:
            self._check()
            self.transactions += 1
            now = self.clock()
            for replica in {vote.via for vote in votes if vote.via}:
                self._replicas[replica] = now
            if report is not None:
                self._keep(report, now)
            changed = 0
            for vote in votes:
                previous = self.votes.get(vote.key)
                if previous is not None and previous.version >= vote.version:
                    continue
                tally = self._tallies.setdefault(vote.poll_id, {})
                if previous is not None:
                    tally[previous.option_id] -= 1
                tally[vote.option_id] = tally.get(vote.option_id, 0) + 1
                self.votes[vote.key] = vote
                changed += 1
            return changed

    def counts(self, poll_id: str) -> dict[str, int]:
        with self._lock:
            self.reads += 1
            self._check()
            return dict(self._tallies.get(poll_id, {}))

    def record_report(self, report: WorkerReport) -> None:
        with self._lock:
            self._check()
            self._keep(report, self.clock())

    def _keep(self, report: WorkerReport, now: float) -> None:
        before = self.workers.get(report.worker)
        batch = report.batch_size > 0
        self.workers[report.worker] = WorkerSeen(
            report.worker,
            now,
            report.queue_depth,
            report.oldest_waiting_at,
            now if batch else (before.last_batch_at if before else None),
            report.batch_size if batch else (before.last_batch_size if before else 0),
        )

    def pipeline(self) -> PipelineStatus:
        with self._lock:
            self._check()
            now = self.clock()
            # The same windows as the SQL adapters: strictly within the last minute (hour).
            replicas = sorted(r for r, at in self._replicas.items() if now - at < REPLICA_WINDOW_S)
            workers = tuple(
                w for w in self.workers.values() if now - w.reported_at < REPORTS_KEPT_S
            )
            return PipelineStatus(now, True, workers, tuple(replicas))

    def ping(self) -> None:
        self._check()


class InMemoryTallyChanges:
    """TallyChanges for tests: `announce` plays the part of PostgreSQL's NOTIFY."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._pending: set[str] = set()
        self._connected = False
        self.available = True
        self.closed = False

    def announce(self, *poll_ids: str) -> None:
        with self._changed:
            self._pending.update(poll_ids)
            self._changed.notify_all()

    def wait(self, timeout: float) -> set[str] | None:
        with self._changed:
            if not self.available:
                self._connected = False
                raise StoreUnavailable("in-memory change feed switched off")
            if not self._connected:
                self._connected = True
                return None  # like a fresh LISTEN: earlier changes are unknown
            self._changed.wait_for(lambda: bool(self._pending) or self.closed, timeout)
            changed, self._pending = self._pending, set()
            return changed

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
