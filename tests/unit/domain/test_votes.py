"""Ballots, decoding queued votes, and the version rule that makes replays harmless."""

from __future__ import annotations

import pytest

from cloudvote.adapters.redis_streams import stream_fields
from cloudvote.domain.polls import PollCatalog, UnknownOption, UnknownPoll
from cloudvote.domain.votes import (
    AcceptedVote,
    Ballot,
    InvalidVote,
    cast_ballot,
    decode_vote,
    is_valid_voter_id,
    latest_per_voter,
)
from tests.support.fakes import CATALOG, VOTER

OTHER_VOTER = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def catalog() -> PollCatalog:
    return CATALOG


def test_cast_ballot_returns_a_ballot_for_a_known_poll_and_option(catalog: PollCatalog) -> None:
    ballot = cast_ballot(catalog, "lunch", "salad", VOTER, "t" * 32)

    assert ballot == Ballot("lunch", "salad", VOTER, "t" * 32)


def test_cast_ballot_refuses_an_unknown_poll(catalog: PollCatalog) -> None:
    with pytest.raises(UnknownPoll):
        cast_ballot(catalog, "dinner", "a", VOTER)


def test_cast_ballot_refuses_an_option_of_another_poll(catalog: PollCatalog) -> None:
    with pytest.raises(UnknownOption) as caught:
        cast_ballot(catalog, "default", "pizza", VOTER)

    assert "valid options: a, b" in str(caught.value)


@pytest.mark.parametrize(
    "voter_id",
    ["", "abc", VOTER.upper(), VOTER + "0", VOTER[:-1], "g" * 32, VOTER[:-1] + " "],
)
def test_cast_ballot_refuses_a_voter_id_that_is_not_32_lowercase_hex_chars(
    catalog: PollCatalog, voter_id: str
) -> None:
    assert not is_valid_voter_id(voter_id)
    with pytest.raises(InvalidVote, match="32 hex characters"):
        cast_ballot(catalog, "default", "a", voter_id)


def test_decode_vote_turns_queue_fields_back_into_a_vote_with_the_queue_version(
    catalog: PollCatalog,
) -> None:
    fields = stream_fields(Ballot("default", "b", VOTER, "abc"))

    vote = decode_vote(catalog, fields, version=42)

    assert vote == AcceptedVote("default", "b", VOTER, 42, "abc")
    assert vote.key == ("default", VOTER)


def test_decode_vote_accepts_a_message_without_trace(catalog: PollCatalog) -> None:
    vote = decode_vote(catalog, {"poll": "default", "option": "a", "voter": VOTER}, 1)

    assert vote.trace_id == ""


@pytest.mark.parametrize("missing", ["poll", "option", "voter"])
def test_decode_vote_names_the_missing_field(catalog: PollCatalog, missing: str) -> None:
    fields = stream_fields(Ballot("default", "a", VOTER))
    del fields[missing]

    with pytest.raises(InvalidVote, match=f"lacks field '{missing}'"):
        decode_vote(catalog, fields, 1)


def test_decode_vote_rechecks_the_poll_against_todays_catalog(catalog: PollCatalog) -> None:
    queued = stream_fields(cast_ballot(catalog, "lunch", "pizza", VOTER))
    todays_catalog = PollCatalog.default_catalog()  # "lunch" was removed since

    with pytest.raises(InvalidVote, match="unknown poll 'lunch'"):
        decode_vote(todays_catalog, queued, 7)


def test_decode_vote_rechecks_the_option_and_names_the_valid_ones(catalog: PollCatalog) -> None:
    fields = {"poll": "default", "option": "c", "voter": VOTER}

    with pytest.raises(InvalidVote, match="valid options: a, b"):
        decode_vote(catalog, fields, 1)


def test_decode_vote_rejects_a_forged_voter_id(catalog: PollCatalog) -> None:
    with pytest.raises(InvalidVote):
        decode_vote(catalog, {"poll": "default", "option": "a", "voter": "admin"}, 1)


def test_latest_per_voter_keeps_the_highest_version_whatever_the_arrival_order() -> None:
    newest = AcceptedVote("default", "b", VOTER, 30)
    votes = [
        AcceptedVote("default", "a", VOTER, 10),
        newest,
        AcceptedVote("default", "a", VOTER, 20),  # arrives after the newest: a replay
    ]

    assert latest_per_voter(votes) == [newest]


def test_latest_per_voter_keeps_one_vote_per_poll_and_voter_sorted_by_poll_then_voter() -> None:
    votes = [
        AcceptedVote("lunch", "pizza", OTHER_VOTER, 1),
        AcceptedVote("default", "a", OTHER_VOTER, 2),
        AcceptedVote("lunch", "salad", VOTER, 3),
        AcceptedVote("default", "b", VOTER, 4),
        AcceptedVote("default", "a", VOTER, 5),
    ]

    result = latest_per_voter(votes)

    assert [(v.poll_id, v.voter_id, v.option_id) for v in result] == [
        ("default", VOTER, "a"),
        ("default", OTHER_VOTER, "a"),
        ("lunch", VOTER, "salad"),
        ("lunch", OTHER_VOTER, "pizza"),
    ]


def test_latest_per_voter_of_nothing_is_nothing() -> None:
    assert latest_per_voter([]) == []
