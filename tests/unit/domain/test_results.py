"""The tally the result service shows: every option present, a total, a stale flag."""

from __future__ import annotations

from cloudvote.domain.results import PollResults
from tests.support.fakes import LUNCH


def test_every_option_appears_with_zero_before_anyone_votes() -> None:
    results = PollResults.for_poll(LUNCH, {})

    assert results.counts == {"pizza": 0, "salad": 0}
    assert results.total == 0


def test_stored_counts_fill_in_and_the_total_is_their_sum() -> None:
    results = PollResults.for_poll(LUNCH, {"salad": 3, "pizza": 4})

    assert results.counts == {"pizza": 4, "salad": 3}
    assert list(results.counts) == ["pizza", "salad"]  # poll order, not store order
    assert results.total == 7


def test_counts_of_an_option_no_longer_in_the_poll_are_left_out() -> None:
    results = PollResults.for_poll(LUNCH, {"pizza": 1, "soup": 5})

    assert results.counts == {"pizza": 1, "salad": 0}
    assert results.total == 1


def test_fresh_results_json_is_poll_counts_total_without_a_stale_flag() -> None:
    body = PollResults.for_poll(LUNCH, {"pizza": 2}).as_json()

    assert body == {"poll": "lunch", "counts": {"pizza": 2, "salad": 0}, "total": 2}
    assert list(body) == ["poll", "counts", "total"]


def test_stale_results_json_is_marked_stale() -> None:
    body = PollResults.for_poll(LUNCH, {"salad": 1}, stale=True).as_json()

    assert body == {"poll": "lunch", "counts": {"pizza": 0, "salad": 1}, "total": 1, "stale": True}
