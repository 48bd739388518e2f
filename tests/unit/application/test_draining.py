"""VoteDrainer: receive, commit, then acknowledge, so no accepted vote is ever lost.

Driven through the in-memory queue and store, which keep the real adapters' contracts:
a received message stays pending until acknowledged, and the newest version wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.votes import AcceptedVote, Ballot, decode_vote, latest_per_voter
from cloudvote.ports.queue import QueueUnavailable
from cloudvote.ports.store import StoreUnavailable
from tests.support.fakes import CATALOG, FakeClock, voter
from tests.support.waiting import wait_until

# Every pending message counts as stale at once, and stale claims run on every pass.
FAST = DrainSettings(
    batch_size=100,
    block_ms=0,
    claim_idle_ms=0,
    claim_every_s=0.0,
    backoff_initial_s=0.01,
    backoff_max_s=0.05,
)
# A queue depth report on every pass, and no stale claims to muddle the report.
EVERY_PASS = DrainSettings(block_ms=0, claim_every_s=3600, depth_every_s=0.0)


def vote(queue: InMemoryVoteQueue, n: int, option: str, poll: str = "default") -> str:
    return queue.enqueue(Ballot(poll, option, voter(n)))


@pytest.fixture
def drainer(queue: InMemoryVoteQueue, store: InMemoryVoteStore) -> VoteDrainer:
    return VoteDrainer(CATALOG, queue, store, FAST)


@pytest.fixture
def running() -> Iterator[Callable[[VoteDrainer], threading.Thread]]:
    """Run drainers in threads; every one is stopped and joined at teardown."""
    started: list[tuple[VoteDrainer, threading.Thread]] = []

    def start(drainer: VoteDrainer) -> threading.Thread:
        thread = threading.Thread(target=drainer.run, name="test-drainer", daemon=True)
        started.append((drainer, thread))
        thread.start()
        return thread

    yield start
    for drainer, thread in started:
        drainer.stop_event.set()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the drainer did not stop"


def test_queued_votes_are_written_to_the_store_and_acknowledged(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    vote(queue, 1, "a")
    vote(queue, 2, "b")
    vote(queue, 3, "pizza", poll="lunch")

    handled = drainer.drain_once()

    assert handled == 3
    assert store.counts("default") == {"a": 1, "b": 1}
    assert store.counts("lunch") == {"pizza": 1}
    assert queue.depth() == 0
    assert (drainer.stats.votes_received, drainer.stats.votes_changed) == (3, 3)


def test_a_batch_is_written_in_one_transaction(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    for n in range(10):
        vote(queue, n, "a")

    drainer.drain_once()

    assert store.transactions == 1
    assert drainer.stats.last_batch_size == 10


def test_revote_in_the_same_batch_keeps_only_the_last_accepted_vote(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    vote(queue, 1, "a")
    vote(queue, 1, "b")
    vote(queue, 1, "a")
    vote(queue, 2, "b")

    drainer.drain_once()

    assert store.counts("default") == {"a": 1, "b": 1}
    assert store.votes[("default", voter(1))].option_id == "a"
    assert queue.depth() == 0


def test_revote_in_a_later_batch_replaces_the_earlier_vote(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    vote(queue, 1, "a")
    drainer.drain_once()
    vote(queue, 1, "b")
    drainer.drain_once()

    assert store.counts("default") == {"a": 0, "b": 1}


class _StoreWatchingTheQueue(InMemoryVoteStore):
    """Records how many messages were still unacknowledged when each commit happened."""

    def __init__(self, queue: InMemoryVoteQueue) -> None:
        super().__init__()
        self.queue = queue
        self.depth_at_commit: list[int] = []

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        changed = super().apply(votes, report)
        self.depth_at_commit.append(self.queue.depth())
        return changed


def test_messages_are_acknowledged_only_after_the_store_committed(
    queue: InMemoryVoteQueue,
) -> None:
    store = _StoreWatchingTheQueue(queue)
    for n in range(3):
        vote(queue, n, "a")

    VoteDrainer(CATALOG, queue, store, FAST).drain_once()

    assert store.depth_at_commit == [3]
    assert queue.depth() == 0


def test_store_down_leaves_every_message_pending_and_a_later_pass_applies_them(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    vote(queue, 1, "a")
    vote(queue, 2, "b")
    store.available = False

    with pytest.raises(StoreUnavailable):
        drainer.drain_once()

    assert queue.depth() == 2
    assert store.votes == {}

    store.available = True
    drainer.drain_once()

    assert store.counts("default") == {"a": 1, "b": 1}
    assert queue.depth() == 0


@pytest.mark.parametrize("down", ["store", "queue"])
def test_run_retries_while_the_store_or_queue_is_down_and_loses_nothing_when_it_returns(
    queue: InMemoryVoteQueue,
    store: InMemoryVoteStore,
    drainer: VoteDrainer,
    running: Callable[[VoteDrainer], threading.Thread],
    down: str,
) -> None:
    for n in range(5):
        vote(queue, n, "a" if n % 2 else "b")
    adapter = store if down == "store" else queue
    adapter.available = False

    running(drainer)

    assert wait_until(lambda: drainer.stats.retries >= 3, timeout=5.0, interval=0.005)
    assert store.votes == {}
    if down == "store":  # a queue that is down cannot be asked for its depth
        assert queue.depth() == 5
    adapter.available = True
    assert wait_until(lambda: store.votes != {} and queue.depth() == 0, timeout=5.0, interval=0.005)
    assert store.counts("default") == {"a": 2, "b": 3}


def test_drain_once_reports_a_queue_outage(queue: InMemoryVoteQueue, drainer: VoteDrainer) -> None:
    queue.available = False

    with pytest.raises(QueueUnavailable):
        drainer.drain_once()


def test_replaying_a_batch_committed_before_a_crash_changes_nothing(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore
) -> None:
    vote(queue, 1, "a")
    vote(queue, 2, "b")
    vote(queue, 1, "b")
    # A worker receives the batch and commits it, then dies before acknowledging.
    crashed = queue.receive(100, 0)
    store.apply(latest_per_voter(decode_vote(CATALOG, d.fields, d.version) for d in crashed))
    committed = dict(store.votes)
    assert queue.depth() == 3

    successor = VoteDrainer(CATALOG, queue, store, FAST)
    successor.drain_once()

    assert successor.stats.votes_received == 3  # the stale batch was claimed ...
    assert successor.stats.votes_changed == 0  # ... and changed nothing
    assert store.votes == committed
    assert store.counts("default") == {"b": 2}
    assert queue.depth() == 0


def test_a_replayed_old_vote_cannot_overwrite_a_newer_one(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore
) -> None:
    vote(queue, 1, "a")
    queue.receive(100, 0)  # a worker takes the first vote and dies before committing
    vote(queue, 1, "b")
    survivor = VoteDrainer(CATALOG, queue, store, FAST)
    survivor.process(queue.receive(100, 0))  # the newer vote is applied first
    assert store.counts("default") == {"b": 1}

    survivor.drain_once()  # now the dead worker's message is claimed and replayed

    assert store.votes[("default", voter(1))].option_id == "b"
    assert store.counts("default") == {"b": 1}
    assert queue.depth() == 0


def test_a_message_that_can_never_be_a_vote_goes_to_the_dead_letters(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, drainer: VoteDrainer
) -> None:
    vote(queue, 1, "a")
    queue.enqueue_fields({"poll": "default", "option": "c", "voter": voter(2)})
    queue.enqueue_fields({"poll": "default", "voter": voter(3)})
    queue.enqueue_fields({"poll": "gone", "option": "a", "voter": voter(4)})

    drainer.drain_once()

    reasons = [reason for _, reason in queue.dead_letters]
    assert len(reasons) == 3
    assert "valid options: a, b" in reasons[0]
    assert "lacks field 'option'" in reasons[1]
    assert "unknown poll 'gone'" in reasons[2]
    assert [d.fields.get("voter") for d, _ in queue.dead_letters] == [voter(2), voter(3), voter(4)]
    assert store.counts("default") == {"a": 1}
    assert queue.depth() == 0
    assert drainer.stats.dead_letters == 3


class _StoreRefusingOneVoter(InMemoryVoteStore):
    """A store whose data rules refuse one voter's rows (as a CHECK constraint would)."""

    def __init__(self, refused_voter: str) -> None:
        super().__init__()
        self.refused_voter = refused_voter

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        if any(v.voter_id == self.refused_voter for v in votes):
            raise ValueError("value violates a check constraint")
        return super().apply(votes, report)


def test_a_vote_the_store_refuses_is_dead_lettered_alone_and_the_rest_is_applied(
    queue: InMemoryVoteQueue,
) -> None:
    store = _StoreRefusingOneVoter(voter(2))
    vote(queue, 1, "a")
    vote(queue, 2, "a")
    vote(queue, 2, "b")
    vote(queue, 3, "b")
    drainer = VoteDrainer(CATALOG, queue, store, FAST)

    drainer.drain_once()

    assert store.counts("default") == {"a": 1, "b": 1}
    assert set(store.votes) == {("default", voter(1)), ("default", voter(3))}
    dead = [(d.fields["voter"], d.fields["option"], reason) for d, reason in queue.dead_letters]
    assert [(v, o) for v, o, _ in dead] == [(voter(2), "a"), (voter(2), "b")]
    assert all("store refused the vote: value violates" in r for _, _, r in dead)
    assert queue.depth() == 0
    # The panel's last batch is the last vote applied alone, not the refused batch.
    [seen] = store.pipeline().workers
    assert (seen.worker, seen.last_batch_size) == ("worker", 1)
    assert seen.last_batch_at is not None


def test_setting_stop_event_ends_run(
    drainer: VoteDrainer, running: Callable[[VoteDrainer], threading.Thread]
) -> None:
    thread = running(drainer)
    assert wait_until(lambda: drainer.stats.last_progress > 0, timeout=5.0, interval=0.005)

    drainer.stop_event.set()
    thread.join(timeout=5)

    assert not thread.is_alive()


def test_run_returns_at_once_when_stop_was_requested_before_it_started(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore
) -> None:
    stop = threading.Event()
    stop.set()
    vote(queue, 1, "a")

    VoteDrainer(CATALOG, queue, store, FAST, stop_event=stop).run()

    assert store.votes == {}
    assert queue.depth() == 1


def test_run_drains_what_was_queued_before_it_is_stopped(
    queue: InMemoryVoteQueue,
    store: InMemoryVoteStore,
    drainer: VoteDrainer,
    running: Callable[[VoteDrainer], threading.Thread],
) -> None:
    for n in range(250):  # more than one batch of 100
        vote(queue, n, "a")

    running(drainer)

    assert wait_until(lambda: queue.depth() == 0, timeout=5.0, interval=0.005)
    assert store.counts("default") == {"a": 250}
    assert drainer.stats.batches >= 3


# -- what the worker tells the results page (the pipeline panel) -------------------------------


def test_a_worker_that_starts_on_a_backlog_reports_it_and_signs_the_batch_it_applied() -> None:
    clock = FakeClock()
    queue, store = InMemoryVoteQueue(clock), InMemoryVoteStore(clock)
    vote(queue, 1, "a")
    clock.now += 2
    vote(queue, 2, "b")
    clock.now += 3

    VoteDrainer(CATALOG, queue, store, FAST, name="worker-7").drain_once()

    seen = store.workers["worker-7"]
    # Measured before the batch, which it then applied in one transaction with the report.
    assert (seen.queue_depth, seen.oldest_waiting_at) == (2, clock.now - 5)
    assert (seen.last_batch_at, seen.last_batch_size) == (clock.now, 2)
    assert store.transactions == 1
    assert store.pipeline().as_json()["last_batch"] == {
        "at": clock.now,
        "worker": "worker-7",
        "size": 2,
    }


def test_an_idle_worker_reports_an_empty_queue_and_keeps_its_last_batch() -> None:
    clock = FakeClock()
    queue, store = InMemoryVoteQueue(clock), InMemoryVoteStore(clock)
    drainer = VoteDrainer(CATALOG, queue, store, EVERY_PASS, name="w")
    vote(queue, 1, "a")
    drainer.drain_once()
    batch_at = clock.now

    clock.now += 10
    drainer.drain_once()

    seen = store.workers["w"]
    assert (seen.reported_at, seen.queue_depth, seen.oldest_waiting_at) == (clock.now, 0, None)
    assert (seen.last_batch_at, seen.last_batch_size) == (batch_at, 1)
    assert store.pipeline().reporting == ("w",)


def test_a_batch_the_store_did_not_commit_leaves_no_batch_in_the_report(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore
) -> None:
    drainer = VoteDrainer(CATALOG, queue, store, FAST, name="w")
    drainer.drain_once()  # an empty queue, reported
    vote(queue, 1, "a")
    store.available = False

    with pytest.raises(StoreUnavailable):
        drainer.drain_once()

    store.available = True
    assert store.workers["w"].last_batch_at is None
    assert store.pipeline().as_json()["last_batch"] is None


def test_a_worker_that_cannot_reach_the_queue_says_so_instead_of_going_silent(
    queue: InMemoryVoteQueue,
    store: InMemoryVoteStore,
    running: Callable[[VoteDrainer], threading.Thread],
) -> None:
    drainer = VoteDrainer(CATALOG, queue, store, EVERY_PASS, name="w")
    vote(queue, 1, "a")
    drainer.drain_once()
    assert store.workers["w"].queue_depth == 1  # measured before the batch
    queue.available = False

    running(drainer)

    assert wait_until(lambda: store.workers["w"].queue_depth is None, timeout=5.0, interval=0.005)
    pipeline = store.pipeline()
    assert pipeline.reporting == ("w",)  # alive, not silent
    assert pipeline.lag() is None  # and the lag is unknown, not "none"
    assert store.workers["w"].oldest_waiting_at is None


def test_the_vote_replicas_whose_votes_were_applied_are_listed_in_the_last_minute() -> None:
    clock = FakeClock()
    queue, store = InMemoryVoteQueue(clock), InMemoryVoteStore(clock)
    drainer = VoteDrainer(CATALOG, queue, store, FAST)
    queue.enqueue(Ballot("default", "a", voter(1), via="vote-old"))
    drainer.drain_once()
    clock.now += 30
    queue.enqueue(Ballot("default", "a", voter(2), via="vote-2"))
    queue.enqueue(Ballot("default", "b", voter(3), via="vote-1"))
    queue.enqueue(Ballot("default", "b", voter(4)))  # queued before replicas named themselves
    drainer.drain_once()
    assert store.pipeline().vote_replicas == ("vote-1", "vote-2", "vote-old")

    clock.now += 31  # vote-old's only vote was applied 61 s ago

    assert store.pipeline().vote_replicas == ("vote-1", "vote-2")
