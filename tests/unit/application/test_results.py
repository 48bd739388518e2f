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


@pytest.mark.parametrize(
    ("store_up", "poll", "error"),
    [
        pytest.param(True, "dinner", UnknownPoll, id="an unknown poll"),
        pytest.param(False, "dinner", UnknownPoll, id="an unknown poll while the store is down"),
        pytest.param(False, "default", StoreUnavailable, id="store down before any counts"),
    ],
)
def test_results_without_counts_to_show_raise_what_went_wrong(
    store: InMemoryVoteStore, view: ResultsView, store_up: bool, poll: str, error: type[Exception]
) -> None:
    store.available = store_up

    with pytest.raises(error):
        view.results(poll)


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


def test_last_known_counts_are_kept_per_poll(store: InMemoryVoteStore, view: ResultsView) -> None:
    view.results("default")
    store.available = False

    assert view.results("default").stale
    with pytest.raises(StoreUnavailable):
        view.results("lunch")


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
