"""Polls, options and the catalog: what a valid poll is and how a bad one is reported."""

from __future__ import annotations

import pytest

from cloudvote.domain.polls import (
    DEFAULT_POLL_ID,
    InvalidPollDefinition,
    Option,
    Poll,
    PollCatalog,
    PollError,
    UnknownOption,
    UnknownPoll,
)
from tests.support.fakes import LUNCH


def test_catalog_from_mapping_keeps_polls_options_and_labels_in_file_order() -> None:
    catalog = PollCatalog.from_mapping(
        {
            "polls": [
                {
                    "id": "lunch",
                    "question": "What for lunch?",
                    "options": [{"id": "pizza", "label": "Pizza"}, {"id": "salad"}],
                },
                {"id": "pets", "options": [{"id": "cats"}, {"id": "dogs", "label": "Dogs"}]},
            ]
        }
    )

    assert [poll.id for poll in catalog] == ["lunch", "pets"]
    assert len(catalog) == 2
    lunch = catalog.require("lunch")
    assert lunch.question == "What for lunch?"
    assert lunch.options == (Option("pizza", "Pizza"), Option("salad", "salad"))
    pets = catalog.require("pets")
    assert pets.question == "pets"  # no question: the id stands in
    assert pets.option_ids == ("cats", "dogs")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "top-level list named 'polls'"),
        ({"polls": {"id": "x"}}, "top-level list named 'polls'"),
        ({"polls": []}, "at least one poll"),
        ({"polls": ["lunch"]}, "polls[0] must be a mapping"),
        ({"polls": [{"id": "lunch"}]}, "needs a list named 'options'"),
        ({"polls": [{"id": "lunch", "options": ["pizza", "salad"]}]}, "needs an id"),
        ({"polls": [{"id": "lunch", "options": [{"label": "Pizza"}]}]}, "needs an id"),
        ({"polls": [{"id": "lunch", "options": [{"id": "pizza"}]}]}, "at least two options"),
        (
            {"polls": [{"id": "lunch", "options": [{"id": "pizza"}, {"id": "pizza"}]}]},
            "option 'pizza' repeats",
        ),
        (
            {"polls": [{"id": "Lunch!", "options": [{"id": "a"}, {"id": "b"}]}]},
            "poll id 'Lunch!' must match",
        ),
        (
            {"polls": [{"id": "lunch", "options": [{"id": "a b"}, {"id": "c"}]}]},
            "option id 'a b' in poll 'lunch' must match",
        ),
        (
            {
                "polls": [
                    {"id": "lunch", "options": [{"id": "a"}, {"id": "b"}]},
                    {"id": "lunch", "options": [{"id": "c"}, {"id": "d"}]},
                ]
            },
            "poll 'lunch' is defined twice",
        ),
    ],
)
def test_catalog_from_mapping_rejects_unusable_definitions_with_a_clear_message(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidPollDefinition) as caught:
        PollCatalog.from_mapping(document)

    assert message in str(caught.value)


def test_ids_longer_than_63_characters_are_rejected() -> None:
    options = (Option("a", "A"), Option("b", "B"))

    Poll("p" * 63, "ok", options)
    with pytest.raises(InvalidPollDefinition):
        Poll("p" * 64, "too long", options)


def test_default_catalog_has_poll_default_with_options_a_and_b_labelled_cats_and_dogs() -> None:
    catalog = PollCatalog.default_catalog()

    assert [poll.id for poll in catalog] == [DEFAULT_POLL_ID]
    poll = catalog.default
    assert poll.id == "default"
    assert poll.options == (Option("a", "Cats"), Option("b", "Dogs"))
    assert poll.question == "Cats or Dogs?"


def test_default_catalog_labels_options_with_the_given_option_labels() -> None:
    poll = PollCatalog.default_catalog("Tea", "Coffee").default

    assert poll.option_ids == ("a", "b")
    assert [option.label for option in poll.options] == ["Tea", "Coffee"]
    assert poll.question == "Tea or Coffee?"


def test_catalog_default_is_the_poll_named_default_even_when_not_first() -> None:
    default = Poll("default", "Cats or Dogs?", (Option("a", "Cats"), Option("b", "Dogs")))

    assert PollCatalog([LUNCH, default]).default is default


def test_catalog_default_is_the_first_poll_when_none_is_named_default() -> None:
    pets = Poll("pets", "Pets?", (Option("cats", "Cats"), Option("dogs", "Dogs")))

    assert PollCatalog([LUNCH, pets]).default is LUNCH


def test_unknown_poll_names_the_poll_and_is_a_poll_error() -> None:
    catalog = PollCatalog([LUNCH])

    with pytest.raises(UnknownPoll) as caught:
        catalog.require("dinner")

    assert caught.value.poll_id == "dinner"
    assert "'dinner'" in str(caught.value)
    assert isinstance(caught.value, PollError)


def test_unknown_option_message_names_every_valid_option() -> None:
    with pytest.raises(UnknownOption) as caught:
        LUNCH.require_option("soup")

    error = caught.value
    assert str(error) == "unknown option 'soup' for poll 'lunch'; valid options: pizza, salad"
    assert error.valid_options == ("pizza", "salad")
    assert (error.poll_id, error.option_id) == ("lunch", "soup")


def test_require_option_returns_the_option_with_its_label() -> None:
    assert LUNCH.require_option("salad") == Option("salad", "Salad")


def test_zero_counts_has_every_option_at_zero_in_definition_order() -> None:
    counts = LUNCH.zero_counts()

    assert counts == {"pizza": 0, "salad": 0}
    assert list(counts) == ["pizza", "salad"]
