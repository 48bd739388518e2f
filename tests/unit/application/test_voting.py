"""VoteCaster: a vote reaches the queue only when it is valid."""

from __future__ import annotations

import pytest

from cloudvote.adapters.memory import InMemoryVoteQueue
from cloudvote.application.voting import VoteCaster
from cloudvote.domain.polls import PollCatalog, UnknownOption, UnknownPoll
from cloudvote.domain.votes import Ballot, InvalidVote
from cloudvote.ports.queue import QueueUnavailable
from tests.support.fakes import VOTER


@pytest.fixture
def caster(queue: InMemoryVoteQueue) -> VoteCaster:
    return VoteCaster(PollCatalog.default_catalog(), queue, replica="vote-7f9c")


def test_a_valid_vote_is_queued_with_its_trace_id_and_the_replica_that_took_it(
    caster: VoteCaster, queue: InMemoryVoteQueue
) -> None:
    ballot = caster.cast("default", "b", VOTER, "f" * 32)

    assert ballot == Ballot("default", "b", VOTER, "f" * 32, via="vote-7f9c")
    [delivery] = queue.receive(10, 0)
    assert delivery.fields == {
        "poll": "default",
        "option": "b",
        "voter": VOTER,
        "trace": "f" * 32,
        "via": "vote-7f9c",
    }


def test_each_vote_of_a_voter_is_queued_so_the_last_one_can_win(
    caster: VoteCaster, queue: InMemoryVoteQueue
) -> None:
    caster.cast("default", "a", VOTER)
    caster.cast("default", "b", VOTER)

    deliveries = queue.receive(10, 0)
    assert [d.fields["option"] for d in deliveries] == ["a", "b"]
    assert deliveries[0].version < deliveries[1].version


@pytest.mark.parametrize(
    ("poll", "option", "voter", "error"),
    [
        ("nope", "a", VOTER, UnknownPoll),
        ("default", "c", VOTER, UnknownOption),
        ("default", "a", "not-a-voter-id", InvalidVote),
    ],
)
def test_an_invalid_vote_is_refused_and_nothing_is_queued(
    caster: VoteCaster,
    queue: InMemoryVoteQueue,
    poll: str,
    option: str,
    voter: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        caster.cast(poll, option, voter)

    assert queue.depth() == 0


def test_a_vote_is_refused_when_the_queue_is_down_and_nothing_is_stored(
    caster: VoteCaster, queue: InMemoryVoteQueue
) -> None:
    queue.available = False

    with pytest.raises(QueueUnavailable):
        caster.cast("default", "a", VOTER)

    queue.available = True
    assert queue.depth() == 0
