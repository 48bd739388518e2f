"""ResultsView: fresh tallies, and the last-known counts marked stale when the store fails."""

from __future__ import annotations

import pytest

from cloudvote.adapters.memory import InMemoryVoteStore
from cloudvote.application.results import ResultsView
from cloudvote.domain.polls import UnknownPoll
from cloudvote.domain.votes import AcceptedVote
from cloudvote.ports.store import StoreUnavailable
from tests.support.fakes import CATALOG, voter


@pytest.fixture
def view(store: InMemoryVoteStore) -> ResultsView:
    return ResultsView(CATALOG, store)


def test_results_list_every_option_with_the_stored_counts(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    store.apply([AcceptedVote("default", "b", voter(1), 1)])

    results = view.results("default")

    assert results.counts == {"a": 0, "b": 1}
    assert results.total == 1
    assert not results.stale


def test_results_of_an_unknown_poll_raise_unknown_poll(view: ResultsView) -> None:
    with pytest.raises(UnknownPoll):
        view.results("dinner")


def test_store_down_serves_the_last_counts_seen_marked_stale(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    store.apply([AcceptedVote("default", "a", voter(1), 1)])
    view.results("default")
    store.available = False

    results = view.results("default")

    assert results.stale
    assert results.counts == {"a": 1, "b": 0}
    assert results.as_json()["stale"] is True


def test_store_down_before_any_counts_were_seen_raises_store_unavailable(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    store.available = False

    with pytest.raises(StoreUnavailable):
        view.results("default")


def test_last_known_counts_are_kept_per_poll(store: InMemoryVoteStore, view: ResultsView) -> None:
    view.results("default")
    store.available = False

    assert view.results("default").stale
    with pytest.raises(StoreUnavailable):
        view.results("lunch")


def test_unknown_poll_is_reported_even_while_the_store_is_down(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    store.available = False

    with pytest.raises(UnknownPoll):
        view.results("dinner")


def test_fresh_counts_return_unmarked_once_the_store_is_back(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    view.results("default")
    store.available = False
    assert view.results("default").stale
    store.available = True
    store.apply([AcceptedVote("default", "a", voter(1), 1)])

    results = view.results("default")

    assert not results.stale
    assert results.counts == {"a": 1, "b": 0}


def test_a_stale_answer_cannot_alter_the_remembered_counts(
    store: InMemoryVoteStore, view: ResultsView
) -> None:
    view.results("default")
    store.available = False

    view.results("default").counts["a"] = 99

    assert view.results("default").counts == {"a": 0, "b": 0}
