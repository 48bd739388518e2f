"""LiveResults: one store read per change, however many viewers, and a clean cap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from cloudvote.adapters.memory import InMemoryTallyChanges, InMemoryVoteStore
from cloudvote.application.live_results import (
    LiveResults,
    PollingTallyChanges,
    Snapshot,
    StreamLimitReached,
    Subscription,
)
from cloudvote.application.pipeline import PipelineView
from cloudvote.application.results import ResultsView
from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.polls import UnknownPoll
from cloudvote.domain.votes import AcceptedVote
from tests.support.concurrency import run_at_once
from tests.support.fakes import CATALOG, FakeClock

WAIT = 5.0


def vote(voter: int, option: str = "a", poll: str = "default", version: int = 0) -> AcceptedVote:
    return AcceptedVote(poll, option, f"{voter:032x}", version or voter)


@pytest.fixture
def changes() -> InMemoryTallyChanges:
    return InMemoryTallyChanges()


MakeLive = Callable[..., LiveResults]


@pytest.fixture
def make_live(changes: InMemoryTallyChanges) -> Iterator[MakeLive]:
    """LiveResults over a store, on the in-memory feed unless given `changes`; all stopped."""
    made: list[LiveResults] = []

    def make(store: InMemoryVoteStore, **options: Any) -> LiveResults:
        made.append(LiveResults(ResultsView(CATALOG, store), **{"changes": changes, **options}))
        return made[-1]

    yield make
    for live in made:
        live.stop()


@pytest.fixture
def live(store: InMemoryVoteStore, make_live: MakeLive) -> LiveResults:
    return make_live(store, max_streams=2000)


def next_where(
    subscription: Subscription, wanted: Callable[[Snapshot], bool], after: int = 0
) -> Snapshot:
    """The first snapshot newer than `after` that is `wanted`; fails after WAIT s."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        snapshot = subscription.next(after, deadline - time.monotonic())
        assert snapshot is not None, "the stream ended or went quiet"
        if wanted(snapshot):
            return snapshot
        after = snapshot.version
    raise AssertionError(f"no wanted snapshot within {WAIT} s")


def wait_for_total(subscription: Subscription, total: int, after: int = 0) -> Snapshot:
    def has_total(snapshot: Snapshot) -> bool:
        assert snapshot.results is not None
        return snapshot.results.total == total

    return next_where(subscription, has_total, after)


def test_a_thousand_viewers_cost_one_read_per_change(
    store: InMemoryVoteStore, changes: InMemoryTallyChanges, live: LiveResults
) -> None:
    viewers = [live.subscribe("default") for _ in range(1000)]
    first = [viewer.next(0, WAIT) for viewer in viewers]
    assert all(s is not None and s.results is not None and s.results.total == 0 for s in first)
    reads_before = store.reads

    store.apply([vote(1)])
    changes.announce("default")

    seen = [wait_for_total(viewer, 1) for viewer in viewers]
    assert {s.json for s in seen} == {'{"poll":"default","counts":{"a":1,"b":0},"total":1}'}
    assert store.reads - reads_before == 1
    assert live.open_streams == 1000


def test_a_burst_of_changes_is_coalesced_and_ends_on_the_latest_counts(
    store: InMemoryVoteStore, changes: InMemoryTallyChanges, make_live: MakeLive
) -> None:
    viewer = make_live(store, max_streams=10, min_interval_s=0.3).subscribe("default")
    assert viewer.next(0, WAIT) is not None
    reads_before = store.reads
    for n in range(1, 51):
        store.apply([vote(n)])
        changes.announce("default")
        time.sleep(0.005)

    wait_for_total(viewer, 50)
    # 50 commits in about a quarter of a second, read at most once per 0.3 s.
    assert store.reads - reads_before <= 3


def test_a_change_to_a_poll_nobody_watches_costs_no_read(
    store: InMemoryVoteStore, changes: InMemoryTallyChanges, live: LiveResults
) -> None:
    viewer = live.subscribe("default")
    first = viewer.next(0, WAIT)
    assert first is not None
    reads_before = store.reads

    store.apply([vote(1, "pizza", poll="lunch")])
    changes.announce("lunch")
    store.apply([vote(2)])
    changes.announce("default")

    wait_for_total(viewer, 1, after=first.version)
    assert store.reads - reads_before == 1
    # An unwatched poll is read when someone asks, and the answer is current.
    assert live.current("lunch").counts == {"pizza": 1, "salad": 0}


def test_current_serves_the_snapshot_while_a_poll_is_watched(
    store: InMemoryVoteStore, live: LiveResults
) -> None:
    viewer = live.subscribe("default")
    assert viewer.next(0, WAIT) is not None
    reads_before = store.reads

    for _ in range(100):
        assert live.current("default").total == 0

    assert store.reads == reads_before


def test_past_the_limit_a_stream_is_refused_and_a_closed_one_frees_its_slot(
    store: InMemoryVoteStore, make_live: MakeLive
) -> None:
    live = make_live(store, max_streams=2)
    first, _second = live.subscribe("default"), live.subscribe("lunch")

    with pytest.raises(StreamLimitReached, match="2 viewers"):
        live.subscribe("default")
    first.close()
    first.close()  # closing twice frees one slot, not two

    third = live.subscribe("default")
    assert third.next(0, WAIT) is not None
    assert live.open_streams == 2


def test_an_unknown_poll_is_refused_before_it_takes_a_slot(live: LiveResults) -> None:
    with pytest.raises(UnknownPoll):
        live.subscribe("dinner")
    assert live.open_streams == 0


def test_a_lost_store_keeps_the_counts_on_screen_marked_stale(
    store: InMemoryVoteStore, changes: InMemoryTallyChanges, live: LiveResults
) -> None:
    store.apply([vote(1)])
    viewer = live.subscribe("default")
    first = viewer.next(0, WAIT)
    assert first is not None

    store.available = False
    changes.available = False
    changes.announce("default")  # wakes the feed, which finds the feed down

    stale = viewer.next(first.version, WAIT)
    assert stale is not None and stale.results is not None
    assert stale.results.stale
    assert stale.results.counts == {"a": 1, "b": 0}

    store.available = changes.available = True
    store.apply([vote(2, "b")])
    fresh = wait_for_total(viewer, 2, after=stale.version)
    assert fresh.results is not None and not fresh.results.stale


def test_a_store_down_from_the_start_says_unavailable(
    store: InMemoryVoteStore, live: LiveResults
) -> None:
    store.available = False

    snapshot = live.subscribe("default").next(0, WAIT)

    assert snapshot is not None and snapshot.results is None
    assert snapshot.json == '{"poll":"default","unavailable":true}'


def test_stop_wakes_every_waiting_stream_at_once(live: LiveResults) -> None:
    viewers = [live.subscribe("default") for _ in range(50)]
    versions = [s.version for s in (v.next(0, WAIT) for v in viewers) if s is not None]

    def wait(viewer: Subscription, version: int) -> float:
        assert viewer.next(version, 30.0) is None
        return time.monotonic()

    def stop() -> float:
        time.sleep(0.1)  # every viewer is waiting by now
        stopped = time.monotonic()
        live.stop()
        return stopped

    *woke, stopped = run_at_once(*map(partial, [wait] * 50, viewers, versions), stop, timeout=WAIT)

    assert len(woke) == 50
    assert max(woke) - stopped < 1.0
    assert all(viewer.ended for viewer in viewers)


def test_the_polling_fallback_publishes_only_real_changes(
    store: InMemoryVoteStore, make_live: MakeLive
) -> None:
    live = make_live(
        store, changes=PollingTallyChanges(interval_s=0.01), max_streams=10, min_interval_s=0.01
    )
    viewer = live.subscribe("default")
    first = viewer.next(0, WAIT)
    assert first is not None

    # The feed re-reads every 10 ms; unchanged counts make no new snapshot.
    assert viewer.next(first.version, 0.3) is None
    assert store.reads > 5

    store.apply([vote(1)])
    assert wait_for_total(viewer, 1, after=first.version).version > first.version


def test_the_last_viewer_leaving_makes_the_next_one_read_afresh(
    store: InMemoryVoteStore, changes: InMemoryTallyChanges, live: LiveResults
) -> None:
    viewer = live.subscribe("default")
    assert viewer.next(0, WAIT) is not None
    viewer.close()
    # Unwatched, the feed ignores this poll; a later viewer must not see the old counts.
    store.apply([vote(1)])

    again = live.subscribe("default").next(0, WAIT)

    assert again is not None and again.results is not None
    assert again.results.total == 1


class FailsOnce(InMemoryVoteStore):
    """A store whose reads fail with an error the feed does not expect: the next one, or
    all of them while `failing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False
        self.failing = False

    def counts(self, poll_id: str) -> dict[str, int]:
        if self.fail_next or self.failing:
            self.fail_next = False
            raise ValueError("a bug in the store adapter")
        return super().counts(poll_id)


def test_an_unexpected_error_in_the_feed_does_not_end_it(
    changes: InMemoryTallyChanges, make_live: MakeLive, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailsOnce()
    viewer = make_live(store, max_streams=10).subscribe("default")
    first = viewer.next(0, WAIT)
    assert first is not None

    store.fail_next = True
    store.apply([vote(1)])
    changes.announce("default")  # the read for this one raises, and the change is lost

    # Well before the 30 s resync: the feed re-reads what it watches after a failure.
    wait_for_total(viewer, 1, after=first.version)
    assert any(r.message == "results.feed_failed" for r in caplog.records)


def test_a_first_read_that_fails_unexpectedly_gives_its_slot_back(make_live: MakeLive) -> None:
    store = FailsOnce()
    live = make_live(store, max_streams=1)
    store.failing = True
    with pytest.raises(ValueError, match="a bug"):
        live.subscribe("default")

    assert live.open_streams == 0
    store.failing = False
    assert live.subscribe("default").next(0, WAIT) is not None


# -- the pipeline panel's state, shared by every stream -------------------------------------


def test_the_pipeline_reaches_streams_only_when_what_they_show_changes(
    make_live: MakeLive,
) -> None:
    clock = FakeClock()
    store = InMemoryVoteStore(clock)
    store.record_report(WorkerReport("w", 0, None))
    live = make_live(
        store,
        changes=PollingTallyChanges(interval_s=0.01),
        max_streams=10,
        pipeline=PipelineView(store, clock),
        pipeline_every_s=0.02,
    )
    subscription = live.subscribe("default")
    first = next_where(subscription, lambda s: s.pipeline_json is not None)

    for _ in range(5):  # idle reports, once a second: nothing a viewer sees changes
        clock.now += 1
        store.record_report(WorkerReport("w", 0, None))
        time.sleep(0.03)
    assert subscription.next(first.version, 0.1) is None
    assert live.pipeline_status() is not None

    clock.now += 1
    store.record_report(WorkerReport("w", 3, clock.now - 1))  # votes wait
    changed = next_where(subscription, lambda s: s.pipeline_json is not None, first.version)

    assert changed.json is first.json  # the counts did not change: not re-sent
    state = json.loads(changed.pipeline_json or "")
    assert (state["queue_depth"], state["oldest_waiting_at"]) == (3, clock.now - 1)


def test_the_page_gets_the_pipeline_from_one_read_when_nobody_streams(
    make_live: MakeLive,
) -> None:
    clock = FakeClock()
    store = InMemoryVoteStore(clock)
    store.record_report(WorkerReport("w", 2, clock.now - 5))
    live = make_live(
        store, changes=PollingTallyChanges(), max_streams=10, pipeline=PipelineView(store, clock)
    )

    status = live.pipeline_status()
    store.available = False
    down = live.pipeline_status()

    assert status is not None
    assert status.as_json()["queue_depth"] == 2
    assert down is not None
    assert not down.store_reachable  # the panel says so; the page is not an error


def test_a_shape_without_a_pipeline_shows_none(live: LiveResults) -> None:
    assert live.pipeline_status() is None
