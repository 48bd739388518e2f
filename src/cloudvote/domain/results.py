"""The tally of a poll as the result service shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloudvote.domain.polls import Poll


@dataclass(frozen=True, slots=True)
class PollResults:
    poll_id: str
    counts: dict[str, int]
    stale: bool = field(default=False)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def for_poll(cls, poll: Poll, stored: Mapping[str, int], stale: bool = False) -> PollResults:
        """Every option of the poll appears, with 0 where nobody voted for it yet."""
        counts = poll.zero_counts()
        for option_id, count in stored.items():
            if option_id in counts:
                counts[option_id] = count
        return cls(poll.id, counts, stale)

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"poll": self.poll_id, "counts": self.counts, "total": self.total}
        if self.stale:
            body["stale"] = True
        return body
