"""The pipeline panel's rules: who is reporting, the lag, the last batch, unknown states."""

from __future__ import annotations

import pytest

from cloudvote.domain.pipeline import (
    REPORTING_WITHIN_S,
    Lag,
    PipelineStatus,
    WorkerSeen,
)

NOW = 1_700_000_000.0


def seen(
    worker: str,
    ago: float,
    depth: int | None = 0,
    oldest_ago: float | None = None,
    batch_ago: float | None = None,
    batch_size: int = 0,
) -> WorkerSeen:
    """A worker's report `ago` seconds before NOW; other times are also ages."""
    return WorkerSeen(
        worker,
        NOW - ago,
        depth,
        None if oldest_ago is None else NOW - oldest_ago,
        None if batch_ago is None else NOW - batch_ago,
        batch_size,
    )


def status(*workers: WorkerSeen, replicas: tuple[str, ...] = ()) -> PipelineStatus:
    return PipelineStatus(NOW, True, workers, replicas)


# -- who is reporting ------------------------------------------------------------------------


def test_workers_that_reported_within_three_seconds_are_reporting_sorted_by_name() -> None:
    pipeline = status(seen("w-b", 0.5), seen("w-a", REPORTING_WITHIN_S), seen("w-old", 3.5))

    assert pipeline.reporting == ("w-a", "w-b")
    assert pipeline.as_json()["workers_reporting"] == ["w-a", "w-b"]


def test_the_freshest_report_gives_the_queue_depth_even_from_a_silent_worker() -> None:
    pipeline = status(seen("gone", 40, depth=7), seen("older", 90, depth=99))

    body = pipeline.as_json()

    assert pipeline.reporting == ()
    assert body["queue_depth"] == 7
    assert body["last_report_at"] == NOW - 40


# -- the lag ---------------------------------------------------------------------------------


def test_lag_is_the_age_of_the_oldest_waiting_vote() -> None:
    pipeline = status(seen("w", 0.2, depth=12, oldest_ago=4.5))

    assert pipeline.lag() == Lag(4.5)
    assert pipeline.as_json()["oldest_waiting_at"] == NOW - 4.5


def test_nothing_waiting_with_a_worker_reporting_is_no_lag() -> None:
    assert status(seen("w", 0.5, depth=0)).lag() == Lag(0.0)


def test_with_every_worker_silent_and_nothing_waiting_then_the_lag_is_at_most_the_silence() -> None:
    """Killed worker: votes cast since its last report have waited at most that long."""
    pipeline = status(seen("w", 25.0, depth=0))

    assert pipeline.lag() == Lag(25.0, at_most=True)


def test_the_lag_keeps_growing_while_the_workers_are_silent() -> None:
    early = PipelineStatus(NOW, True, (seen("w", 1.0, depth=0),))
    later = PipelineStatus(NOW + 30, True, (seen("w", 1.0, depth=0),))

    assert early.lag() == Lag(0.0)  # still reporting: nothing waits
    assert later.lag() == Lag(31.0, at_most=True)


def test_with_every_worker_silent_a_vote_that_was_waiting_is_still_waiting() -> None:
    pipeline = status(seen("w", 20.0, depth=3, oldest_ago=26.0))

    assert pipeline.lag() == Lag(26.0)


def test_a_lag_is_never_negative_when_clocks_disagree() -> None:
    """The queue's clock (Redis) and the store's (PostgreSQL) may be a little apart."""
    pipeline = status(seen("w", 0.1, depth=1, oldest_ago=-0.3))

    assert pipeline.lag() == Lag(0.0)


def test_the_lag_is_unknown_when_the_queue_did_not_answer_the_worker() -> None:
    assert status(seen("w", 0.5, depth=None)).lag() is None


def test_the_lag_is_unknown_before_any_worker_reported() -> None:
    assert status().lag() is None


# -- the last batch --------------------------------------------------------------------------


def test_the_last_batch_is_the_latest_applied_by_any_worker() -> None:
    pipeline = status(
        seen("w-1", 0.3, batch_ago=9.0, batch_size=40),
        seen("w-2", 0.5, batch_ago=2.0, batch_size=3),
        seen("w-3", 0.1),  # has reported, has applied nothing
    )

    assert pipeline.as_json()["last_batch"] == {"at": NOW - 2.0, "worker": "w-2", "size": 3}


def test_no_batch_yet_is_none() -> None:
    assert status(seen("w", 0.3)).as_json()["last_batch"] is None


# -- unknown states --------------------------------------------------------------------------


def test_an_unreachable_store_says_so_and_claims_nothing_else() -> None:
    pipeline = PipelineStatus.unreachable(NOW)

    assert pipeline.lag() is None
    assert pipeline.as_json() == {
        "as_of": NOW,
        "store_reachable": False,
        "queue_depth": None,
        "oldest_waiting_at": None,
        "last_report_at": None,
        "workers_reporting": [],
        "last_batch": None,
        "vote_replicas": [],
    }


def test_before_any_report_everything_is_unknown_but_the_store_is_reachable() -> None:
    body = status().as_json()

    assert body["store_reachable"] is True
    assert body["queue_depth"] is None
    assert body["last_report_at"] is None
    assert body["workers_reporting"] == []


def test_vote_replicas_are_shown_as_the_store_listed_them() -> None:
    assert status(replicas=("vote-1", "vote-2")).as_json()["vote_replicas"] == [
        "vote-1",
        "vote-2",
    ]


# -- what viewers are sent -------------------------------------------------------------------


def test_an_idle_report_that_changes_only_the_clock_is_not_news() -> None:
    before = PipelineStatus(NOW, True, (seen("w", 0.0, batch_ago=5, batch_size=2),))
    after = PipelineStatus(NOW + 1, True, (seen("w", -1.0, batch_ago=5, batch_size=2),))

    assert after.same_state(before)


@pytest.mark.parametrize(
    "after",
    [
        PipelineStatus(NOW, True, (seen("w", 0.0, depth=1),)),  # a vote waits
        PipelineStatus(NOW + 5, True, (seen("w", 5.0),)),  # the worker fell silent
        PipelineStatus(NOW, True, (seen("w", 0.0, batch_ago=0, batch_size=1),)),  # a batch
        PipelineStatus(NOW, True, (seen("w", 0.0),), ("vote-1",)),  # a replica took a vote
        PipelineStatus.unreachable(NOW),
    ],
    ids=["depth", "silent", "batch", "replica", "store"],
)
def test_what_a_viewer_sees_changing_is_news(after: PipelineStatus) -> None:
    before = PipelineStatus(NOW, True, (seen("w", 0.0),))

    assert not after.same_state(before)
    assert not PipelineStatus(NOW, True).same_state(None)
