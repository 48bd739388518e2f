"""Casting a vote: validate against the catalog, then hand it to the durable queue."""

from __future__ import annotations

from cloudvote.domain.polls import PollCatalog
from cloudvote.domain.votes import Ballot, cast_ballot
from cloudvote.ports.queue import VoteQueue


class VoteCaster:
    def __init__(self, catalog: PollCatalog, queue: VoteQueue, replica: str = "") -> None:
        self.catalog = catalog
        self.queue = queue
        # This vote replica's name, carried in every vote it queues.
        self.replica = replica

    def cast(self, poll_id: str, option_id: str, voter_id: str, trace_id: str = "") -> Ballot:
        """Raise UnknownPoll/UnknownOption for bad input, QueueUnavailable if not stored."""
        ballot = cast_ballot(self.catalog, poll_id, option_id, voter_id, trace_id, self.replica)
        self.queue.enqueue(ballot)
        return ballot
