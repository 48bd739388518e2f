"""The vote store: the worker writes votes, the result service reads tallies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cloudvote.domain.pipeline import PipelineStatus, WorkerReport
from cloudvote.domain.votes import AcceptedVote


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or the write failed for a transient reason."""


class VoteStore(Protocol):
    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        """Write the votes in one transaction and return how many changed a row.

        `votes` holds at most one vote per (poll, voter), sorted by that key (see
        `latest_per_voter`). A vote whose version is not newer than the stored one is
        ignored, which makes replays and reordering harmless. Tallies change in the same
        transaction, and so do the worker's `report` and the vote replicas last seen, so
        the pipeline panel never shows a batch that did not commit. Raises
        StoreUnavailable for transient failures; any other exception means the data
        itself was refused.
        """
        ...

    def record_report(self, report: WorkerReport) -> None:
        """Keep a worker's report made without a batch (it reports while idle too)."""
        ...

    def pipeline(self) -> PipelineStatus:
        """The workers' latest reports and the vote replicas seen in the last minute,
        stamped with the store's clock. Raises StoreUnavailable."""
        ...

    def counts(self, poll_id: str) -> dict[str, int]:
        """Votes per option for the poll, read from the kept tallies, not by scanning."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""
        ...


class TallyChanges(Protocol):
    """Tells the result service which polls' tallies changed, so one reader per process
    can re-read them for every viewer instead of each viewer polling the store."""

    def wait(self, timeout: float) -> set[str] | None:
        """Block up to `timeout` s; return the ids of polls that changed since the last
        call (empty when none did), or None when this feed cannot tell which, in which
        case the caller re-reads every poll it shows. Raises StoreUnavailable."""
        ...

    def close(self) -> None: ...
