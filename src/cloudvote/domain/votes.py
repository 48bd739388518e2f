"""Ballots, accepted votes, and the ordering rule that makes replays harmless.

A voter has at most one vote per poll. Every vote the queue accepts gets a *version*: a
number that grows in the order the queue accepted the votes; how a queue numbers them is
its adapter's business. The store keeps, per voter and poll, the vote with the highest
version. A message replayed after a crash, or delivered out of order, therefore cannot
overwrite a newer vote.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloudvote.domain.polls import PollCatalog, PollError

# A voter id is the 128-bit random cookie, hex encoded.
VOTER_ID_LENGTH = 32


class InvalidVote(ValueError):
    """A queued message that can never become a vote; it goes to the dead-letter stream."""


@dataclass(frozen=True, slots=True)
class Ballot:
    """A validated vote on its way into the queue; it has no version yet."""

    poll_id: str
    option_id: str
    voter_id: str
    trace_id: str = ""
    # The vote replica that accepted it, so the results page can show which replicas work.
    via: str = ""


@dataclass(frozen=True, slots=True)
class AcceptedVote:
    """A ballot the queue accepted, with the version the queue gave it."""

    poll_id: str
    option_id: str
    voter_id: str
    version: int
    trace_id: str = ""
    via: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.poll_id, self.voter_id)


def is_valid_voter_id(value: str) -> bool:
    return len(value) == VOTER_ID_LENGTH and all(c in "0123456789abcdef" for c in value)


def cast_ballot(
    catalog: PollCatalog,
    poll_id: str,
    option_id: str,
    voter_id: str,
    trace_id: str = "",
    via: str = "",
) -> Ballot:
    """Check a vote against the catalog; raises UnknownPoll or UnknownOption."""
    poll = catalog.require(poll_id)
    poll.require_option(option_id)
    if not is_valid_voter_id(voter_id):
        raise InvalidVote(f"voter id must be {VOTER_ID_LENGTH} hex characters")
    return Ballot(poll.id, option_id, voter_id, trace_id, via)


def decode_vote(catalog: PollCatalog, fields: Mapping[str, str], version: int) -> AcceptedVote:
    """Turn a queue message back into a vote, re-checking it against today's catalog.

    The catalog may have changed since the vote was queued (a poll removed from the
    ConfigMap), so the worker checks again rather than trusting the producer.
    """
    try:
        poll_id, option_id, voter_id = fields["poll"], fields["option"], fields["voter"]
    except KeyError as missing:
        raise InvalidVote(f"message lacks field {missing.args[0]!r}") from None
    try:
        ballot = cast_ballot(catalog, poll_id, option_id, voter_id, fields.get("trace", ""))
    except PollError as error:
        raise InvalidVote(str(error)) from None
    # Messages queued before replicas named themselves carry no "via"; they stay valid.
    return AcceptedVote(
        ballot.poll_id,
        ballot.option_id,
        ballot.voter_id,
        version,
        ballot.trace_id,
        fields.get("via", ""),
    )


def latest_per_voter(votes: Iterable[AcceptedVote]) -> list[AcceptedVote]:
    """Keep only each voter's newest vote per poll, sorted by (poll, voter).

    One SQL statement may not touch the same row twice, and a stable lock order keeps
    concurrent workers from deadlocking on each other's rows.
    """
    newest: dict[tuple[str, str], AcceptedVote] = {}
    for vote in votes:
        current = newest.get(vote.key)
        if current is None or vote.version > current.version:
            newest[vote.key] = vote
    return [newest[key] for key in sorted(newest)]
