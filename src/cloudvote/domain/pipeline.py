"""The pipeline behind the chart, as the results page shows it: queue, worker, store.

The result service may not talk to the queue (its NetworkPolicy allows PostgreSQL only),
so it learns about the queue from the workers: each worker reports what it measured, in
the same transaction as the batch it applied and once a second while idle. A viewer then
sees the queue grow while no worker runs, and drain when one returns.

Times are seconds since the epoch on the store's clock, so ages are differences between
times of one clock; the browser turns them into "3 s ago" relative to `as_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

# A worker reports at least once a second; three missed reports and it counts as silent.
REPORTING_WITHIN_S = 3.0
# "Vote replicas at work": those that accepted a vote applied within this window.
REPLICA_WINDOW_S = 60.0
# A worker silent this long (an old pod, a stopped process) no longer says anything about
# the queue: its report is left out of the panel.
REPORTS_KEPT_S = 3600.0


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one worker says about the queue, as it last measured it."""

    worker: str
    queue_depth: int | None  # None: the queue did not answer
    oldest_waiting_at: float | None  # when the oldest vote not yet applied was accepted
    batch_size: int = 0  # more than 0: sent with the batch it applied, in its transaction


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    """A worker's latest report, as the store keeps it."""

    worker: str
    reported_at: float
    queue_depth: int | None
    oldest_waiting_at: float | None
    last_batch_at: float | None
    last_batch_size: int


@dataclass(frozen=True, slots=True)
class Lag:
    """How far behind the workers are: the age of the oldest vote not yet applied.

    `at_most` marks a bound rather than a measure: every worker is silent, nothing waited
    when the last one reported, so the oldest vote waiting now arrived after that.
    """

    seconds: float
    at_most: bool = False


@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """Everything the results page's pipeline panel shows."""

    as_of: float
    store_reachable: bool
    workers: tuple[WorkerSeen, ...] = ()
    vote_replicas: tuple[str, ...] = ()

    @classmethod
    def unreachable(cls, now: float) -> PipelineStatus:
        return cls(as_of=now, store_reachable=False)

    @property
    def reporting(self) -> tuple[str, ...]:
        """Workers that reported recently: the ones draining the queue now."""
        return tuple(
            sorted(
                w.worker for w in self.workers if self.as_of - w.reported_at <= REPORTING_WITHIN_S
            )
        )

    @property
    def freshest(self) -> WorkerSeen | None:
        return max(self.workers, key=lambda w: w.reported_at, default=None)

    @property
    def last_batch(self) -> WorkerSeen | None:
        applied = [w for w in self.workers if w.last_batch_at is not None]
        return max(applied, key=lambda w: w.last_batch_at or 0.0, default=None)

    def lag(self) -> Lag | None:
        """The worker lag at `as_of`; None when nobody can tell (no report, the queue or
        the store not answering). The page recomputes it as time passes, by these rules."""
        freshest = self.freshest
        if not self.store_reachable or freshest is None or freshest.queue_depth is None:
            return None
        if freshest.oldest_waiting_at is not None:
            # Silent workers drain nothing, so the oldest vote they saw is still waiting.
            return Lag(max(0.0, self.as_of - freshest.oldest_waiting_at))
        if self.reporting:
            return Lag(0.0)
        return Lag(max(0.0, self.as_of - freshest.reported_at), at_most=True)

    def as_json(self) -> dict[str, object]:
        freshest, last = self.freshest, self.last_batch
        return {
            "as_of": round(self.as_of, 3),
            "store_reachable": self.store_reachable,
            "queue_depth": freshest.queue_depth if freshest else None,
            "oldest_waiting_at": _rounded(freshest.oldest_waiting_at) if freshest else None,
            "last_report_at": _rounded(freshest.reported_at) if freshest else None,
            "workers_reporting": list(self.reporting),
            "last_batch": None
            if last is None
            else {
                "at": _rounded(last.last_batch_at),
                "worker": last.worker,
                "size": last.last_batch_size,
            },
            "vote_replicas": list(self.vote_replicas),
        }

    def same_state(self, other: PipelineStatus | None) -> bool:
        """True when a viewer would see nothing new: only the clock and idle reports moved.

        Ages grow on the page by themselves, so a new snapshot is sent to viewers only
        when something they see changes, not once per report.
        """
        if other is None:
            return False
        mine, theirs = self.as_json(), other.as_json()
        for volatile in ("as_of", "last_report_at"):
            mine.pop(volatile)
            theirs.pop(volatile)
        return mine == theirs


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
