"""What the unit tests share as input: the polls, voter ids, and a clock moved by hand."""

from __future__ import annotations

from cloudvote.domain.polls import Option, Poll, PollCatalog

LUNCH = Poll("lunch", "What for lunch?", (Option("pizza", "Pizza"), Option("salad", "Salad")))
CATALOG = PollCatalog([*PollCatalog.default_catalog(), LUNCH])
VOTER = "0123456789abcdef0123456789abcdef"


def voter(n: int) -> str:
    """The n-th voter's id, in the 32 hex digits of a real voter cookie."""
    return f"{n:032x}"


class FakeClock:
    """Seconds since the epoch, moved by hand: the adapters' and the views' clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
