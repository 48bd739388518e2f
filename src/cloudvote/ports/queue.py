"""The vote queue: the vote service writes to it, the worker drains it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cloudvote.domain.votes import Ballot


class QueueUnavailable(RuntimeError):
    """The queue cannot be reached now; the caller may retry later."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a worker; it stays pending until acknowledged."""

    message_id: str
    version: int
    fields: dict[str, str]


class VoteQueue(Protocol):
    def enqueue(self, ballot: Ballot) -> str:
        """Store the ballot durably and return its message id.

        Returning means the vote is safe: the caller may answer 2xx.
        Raises QueueUnavailable when that cannot be promised.
        """
        ...

    def depth(self) -> int:
        """Messages not yet acknowledged (waiting plus in flight)."""
        ...

    def ping(self) -> None:
        """Raise QueueUnavailable unless the queue answers."""
        ...


class VoteSource(Protocol):
    def receive(self, max_count: int, block_ms: int) -> list[Delivery]:
        """New messages for this consumer, waiting up to block_ms for the first one."""
        ...

    def claim_stale_votes(self, min_idle_ms: int, max_count: int) -> list[Delivery]:
        """Take over messages a dead consumer received but never acknowledged."""
        ...

    def acknowledge(self, message_ids: Sequence[str]) -> None:
        """Mark messages done; only call this after their effect is committed."""
        ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park a message that can never be applied, and acknowledge it."""
        ...

    def depth(self) -> int: ...

    def oldest_waiting(self) -> float | None:
        """When the oldest message not yet acknowledged was accepted (epoch seconds), or
        None when nothing waits: how far behind the workers are."""
        ...

    def ping(self) -> None: ...
