"""The monolith's SQLite queue and store, against a real database file in tmp_path.

sqlite3 is in the standard library, so this real adapter runs at unit-test speed.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudvote.adapters.sqlite import SqliteDatabase, SqliteVoteQueue, SqliteVoteStore
from cloudvote.domain.pipeline import REPLICA_WINDOW_S, WorkerReport
from cloudvote.domain.votes import AcceptedVote, Ballot
from cloudvote.ports.queue import QueueUnavailable
from cloudvote.ports.store import StoreUnavailable
from tests.support.fakes import voter


def ballot(n: int, option: str = "a", poll: str = "default", trace: str = "") -> Ballot:
    return Ballot(poll, option, voter(n), trace, via="monolith-1")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "cloudvote.db"


@pytest.fixture
def database(db_path: Path) -> Iterator[SqliteDatabase]:
    with contextlib.closing(SqliteDatabase(db_path)) as database:
        yield database


@pytest.fixture
def queue(database: SqliteDatabase) -> SqliteVoteQueue:
    return SqliteVoteQueue(database)


@pytest.fixture
def store(database: SqliteDatabase) -> SqliteVoteStore:
    return SqliteVoteStore(database)


@contextlib.contextmanager
def other_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A second, independent connection, as another process would have."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def write_locked(database: SqliteDatabase, path: Path) -> Iterator[None]:
    """Another connection holds the write lock; ours gives up waiting for it after 50 ms."""
    database.connection().execute("PRAGMA busy_timeout = 50")
    with other_connection(path) as writer:
        writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            writer.execute("ROLLBACK")


# -- the queue ---------------------------------------------------------------------------


def test_the_database_file_and_its_directory_are_created(db_path: Path) -> None:
    SqliteDatabase(db_path).close()

    assert db_path.is_file()


def test_enqueued_ballots_are_received_in_order_with_their_fields_and_version(
    queue: SqliteVoteQueue,
) -> None:
    first = queue.enqueue(ballot(1, "a", trace="t1"))
    second = queue.enqueue(ballot(2, "b", poll="lunch"))

    deliveries = queue.receive(10, 0)

    assert [d.message_id for d in deliveries] == [first, second]
    assert [d.version for d in deliveries] == [int(first), int(second)]
    assert deliveries[0].version < deliveries[1].version
    assert deliveries[0].fields == {
        "poll": "default",
        "option": "a",
        "voter": voter(1),
        "trace": "t1",
        "via": "monolith-1",
    }
    assert deliveries[1].fields["poll"] == "lunch"


def test_receive_takes_at_most_max_count_messages(queue: SqliteVoteQueue) -> None:
    for n in range(5):
        queue.enqueue(ballot(n))

    first = queue.receive(2, 0)
    rest = queue.receive(10, 0)

    assert [d.fields["voter"] for d in first] == [voter(0), voter(1)]
    assert [d.fields["voter"] for d in rest] == [voter(2), voter(3), voter(4)]


def test_a_received_message_is_not_delivered_again_but_still_counts_in_depth(
    queue: SqliteVoteQueue,
) -> None:
    queue.enqueue(ballot(1))
    queue.receive(10, 0)

    assert queue.receive(10, 0) == []
    assert queue.depth() == 1


def test_acknowledge_removes_the_messages(queue: SqliteVoteQueue) -> None:
    ids = [queue.enqueue(ballot(n)) for n in range(3)]
    queue.receive(10, 0)

    queue.acknowledge(ids[:2])

    assert queue.depth() == 1
    queue.release_claims()
    assert [d.message_id for d in queue.receive(10, 0)] == [ids[2]]


def test_receive_on_an_empty_queue_waits_block_ms_then_returns_nothing(
    queue: SqliteVoteQueue,
) -> None:
    started = time.monotonic()

    assert queue.receive(10, 150) == []

    assert time.monotonic() - started >= 0.14


def test_a_waiting_receive_wakes_up_when_a_vote_arrives(
    database: SqliteDatabase, queue: SqliteVoteQueue
) -> None:
    def enqueue_later() -> None:
        time.sleep(0.1)
        try:
            queue.enqueue(ballot(1))
        finally:
            database.close()  # this thread's connection

    producer = threading.Thread(target=enqueue_later)
    producer.start()
    try:
        started = time.monotonic()
        deliveries = queue.receive(10, 5000)
        waited = time.monotonic() - started
    finally:
        producer.join(timeout=5)

    assert [d.fields["voter"] for d in deliveries] == [voter(1)]
    assert waited < 2.0


def test_claim_stale_votes_takes_over_messages_idle_longer_than_the_timeout(
    queue: SqliteVoteQueue,
) -> None:
    pending = queue.enqueue(ballot(1))
    queue.receive(10, 0)  # the consumer that received it dies here
    waiting = queue.enqueue(ballot(2))

    assert queue.claim_stale_votes(min_idle_ms=60_000, max_count=10) == []
    time.sleep(0.02)
    claimed = queue.claim_stale_votes(min_idle_ms=10, max_count=10)

    assert [d.message_id for d in claimed] == [pending]  # never the unreceived one
    assert [d.message_id for d in queue.receive(10, 0)] == [waiting]


def test_a_claimed_message_is_not_claimed_again_until_it_is_idle_again(
    queue: SqliteVoteQueue,
) -> None:
    queue.enqueue(ballot(1))
    queue.receive(10, 0)
    time.sleep(0.02)
    assert len(queue.claim_stale_votes(min_idle_ms=10, max_count=10)) == 1

    assert queue.claim_stale_votes(min_idle_ms=1000, max_count=10) == []


def test_claim_stale_votes_respects_max_count(queue: SqliteVoteQueue) -> None:
    for n in range(5):
        queue.enqueue(ballot(n))
    queue.receive(10, 0)
    time.sleep(0.02)

    claimed = queue.claim_stale_votes(min_idle_ms=10, max_count=3)

    assert [d.fields["voter"] for d in claimed] == [voter(0), voter(1), voter(2)]


def test_dead_letter_parks_the_message_with_its_reason_and_removes_it_from_the_queue(
    db_path: Path, queue: SqliteVoteQueue
) -> None:
    queue.enqueue(ballot(1, "zzz"))
    [delivery] = queue.receive(10, 0)

    queue.dead_letter(delivery, "unknown option 'zzz'")

    assert queue.depth() == 0
    with other_connection(db_path) as conn:
        rows = conn.execute("SELECT original_id, fields, reason FROM dead_letters").fetchall()
    assert len(rows) == 1
    original_id, fields, reason = rows[0]
    assert original_id == delivery.message_id
    assert json.loads(fields) == delivery.fields
    assert reason == "unknown option 'zzz'"


def test_release_claims_makes_a_dead_runs_messages_receivable_again(
    database: SqliteDatabase, db_path: Path
) -> None:
    queue = SqliteVoteQueue(database)
    queue.enqueue(ballot(1))
    queue.receive(10, 0)  # the previous run received it, then the process was killed
    database.close()

    with contextlib.closing(SqliteDatabase(db_path)) as restarted:
        new_queue = SqliteVoteQueue(restarted)
        assert new_queue.receive(10, 0) == []
        new_queue.release_claims()
        assert [d.fields["voter"] for d in new_queue.receive(10, 0)] == [voter(1)]


def test_message_ids_are_never_reused_even_after_the_queue_empties_and_reopens(
    database: SqliteDatabase, db_path: Path
) -> None:
    queue = SqliteVoteQueue(database)
    first = queue.enqueue(ballot(1))
    queue.receive(10, 0)
    queue.acknowledge([first])
    database.close()

    with contextlib.closing(SqliteDatabase(db_path)) as reopened:
        later = SqliteVoteQueue(reopened).enqueue(ballot(1, "b"))

    # The id is the vote's version: a reused, smaller id would lose the revote.
    assert int(later) > int(first)


def test_enqueue_reports_a_locked_database_as_queue_unavailable(
    database: SqliteDatabase, queue: SqliteVoteQueue, db_path: Path
) -> None:
    with write_locked(database, db_path), pytest.raises(QueueUnavailable, match="locked"):
        queue.enqueue(ballot(1))

    assert queue.depth() == 0


def test_acknowledge_reports_a_locked_database_as_queue_unavailable(
    database: SqliteDatabase, queue: SqliteVoteQueue, db_path: Path
) -> None:
    message_id = queue.enqueue(ballot(1))
    [delivery] = queue.receive(10, 0)
    with write_locked(database, db_path):
        with pytest.raises(QueueUnavailable):
            queue.acknowledge([message_id])
        with pytest.raises(QueueUnavailable):
            queue.dead_letter(delivery, "refused")

    assert queue.depth() == 1  # still pending: acknowledged on the next try


# -- the store ---------------------------------------------------------------------------


def test_applied_votes_are_counted_per_poll_and_option(store: SqliteVoteStore) -> None:
    changed = store.apply(
        [
            AcceptedVote("default", "a", voter(1), 1),
            AcceptedVote("default", "a", voter(2), 2),
            AcceptedVote("default", "b", voter(3), 3),
            AcceptedVote("lunch", "pizza", voter(1), 4),
        ]
    )

    assert changed == 4
    assert store.counts("default") == {"a": 2, "b": 1}
    assert store.counts("lunch") == {"pizza": 1}
    assert store.counts("dinner") == {}


def test_a_revote_with_a_newer_version_moves_the_voters_count(store: SqliteVoteStore) -> None:
    store.apply([AcceptedVote("default", "a", voter(1), 1)])

    changed = store.apply([AcceptedVote("default", "b", voter(1), 2)])

    assert changed == 1
    assert store.counts("default") == {"a": 0, "b": 1}


def test_a_replayed_or_older_vote_changes_nothing(store: SqliteVoteStore, db_path: Path) -> None:
    store.apply([AcceptedVote("default", "b", voter(1), 5, "trace-5")])

    replay = store.apply([AcceptedVote("default", "b", voter(1), 5, "trace-5")])
    older = store.apply([AcceptedVote("default", "a", voter(1), 4, "trace-4")])

    assert (replay, older) == (0, 0)
    assert store.counts("default") == {"b": 1}
    with other_connection(db_path) as conn:
        row = conn.execute("SELECT option_id, version, trace_id FROM votes").fetchall()
    assert row == [("b", 5, "trace-5")]


def test_a_newer_vote_for_the_same_option_keeps_the_count(store: SqliteVoteStore) -> None:
    store.apply([AcceptedVote("default", "a", voter(1), 1)])

    store.apply([AcceptedVote("default", "a", voter(1), 2)])

    assert store.counts("default") == {"a": 1}


def test_a_batch_the_store_refuses_writes_nothing(store: SqliteVoteStore) -> None:
    good = AcceptedVote("default", "a", voter(1), 1)
    bad = AcceptedVote("default", None, voter(2), 2)  # type: ignore[arg-type]

    with pytest.raises(sqlite3.IntegrityError):
        store.apply([good, bad])

    assert store.counts("default") == {}


@pytest.mark.parametrize(
    ("break_it", "read"),
    [
        ("ALTER TABLE tallies RENAME TO tallies_elsewhere", lambda s: s.counts("default")),
        ("DROP TABLE worker_reports", SqliteVoteStore.pipeline),
    ],
    ids=["tallies", "pipeline"],
)
def test_a_failing_read_is_reported_as_store_unavailable(
    store: SqliteVoteStore, db_path: Path, break_it: str, read: Callable[[SqliteVoteStore], object]
) -> None:
    """The result page turns StoreUnavailable into stale counts; anything else is a 500."""
    with other_connection(db_path) as conn:
        conn.execute(break_it)

    with pytest.raises(StoreUnavailable, match="no such table"):
        read(store)


def test_ping_answers_when_the_database_is_reachable(
    queue: SqliteVoteQueue, store: SqliteVoteStore
) -> None:
    queue.ping()
    store.ping()


# -- durability --------------------------------------------------------------------------


def test_queued_votes_and_stored_votes_survive_reopening_the_database(db_path: Path) -> None:
    with contextlib.closing(SqliteDatabase(db_path)) as first:
        queue, store = SqliteVoteQueue(first), SqliteVoteStore(first)
        queue.enqueue(ballot(1, "a"))
        queue.enqueue(ballot(2, "b"))
        store.apply([AcceptedVote("default", "b", voter(3), 1)])

    with contextlib.closing(SqliteDatabase(db_path)) as second:
        queue, store = SqliteVoteQueue(second), SqliteVoteStore(second)
        assert queue.depth() == 2
        assert [d.fields["voter"] for d in queue.receive(10, 0)] == [voter(1), voter(2)]
        assert store.counts("default") == {"b": 1}


def test_a_committed_vote_is_visible_to_another_connection_at_once(
    queue: SqliteVoteQueue, db_path: Path
) -> None:
    queue.enqueue(ballot(1))

    with other_connection(db_path) as conn:
        assert conn.execute("SELECT voter FROM queue").fetchall() == [(voter(1),)]


# -- the pipeline panel: worker reports and vote replicas --------------------------------


def applied(n: int, option: str = "a", via: str = "") -> AcceptedVote:
    return AcceptedVote("default", option, voter(n), n, via=via)


def test_the_queue_knows_when_its_oldest_waiting_vote_was_accepted(
    queue: SqliteVoteQueue,
) -> None:
    assert queue.oldest_waiting() is None
    before = time.time()
    first = queue.enqueue(ballot(1))
    time.sleep(0.02)
    queue.enqueue(ballot(2))
    after_first = time.time()

    oldest = queue.oldest_waiting()
    assert oldest is not None
    assert before <= oldest < after_first

    queue.receive(1, 0)
    assert queue.oldest_waiting() == oldest  # received is not applied: it still waits
    queue.acknowledge([first])
    second = queue.oldest_waiting()
    assert second is not None
    assert second > oldest
    queue.acknowledge([d.message_id for d in queue.receive(10, 0)])
    assert queue.oldest_waiting() is None


def test_a_queue_file_from_before_the_pipeline_gains_its_columns_and_keeps_its_votes(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with other_connection(db_path) as conn:
        conn.execute(
            "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, poll TEXT NOT NULL,"
            " option TEXT NOT NULL, voter TEXT NOT NULL, trace TEXT NOT NULL DEFAULT '',"
            " claimed_at REAL)"
        )
        conn.execute(
            "INSERT INTO queue (poll, option, voter) VALUES ('default', 'a', ?)", (voter(1),)
        )
    before = time.time()

    with contextlib.closing(SqliteDatabase(db_path)) as database:
        queue = SqliteVoteQueue(database)
        [delivery] = queue.receive(10, 0)
        oldest = queue.oldest_waiting()

    assert delivery.fields["via"] == ""
    # Its acceptance time was never written: it counts as waiting since now, not 1970.
    assert oldest is not None
    assert oldest >= before


def test_a_batchs_report_and_vote_replicas_commit_with_it(store: SqliteVoteStore) -> None:
    before = time.time()
    oldest = before - 4.0

    store.apply(
        [applied(1, via="vote-b"), applied(2, "b", via="vote-a"), applied(3)],
        WorkerReport("worker-1", 3, oldest, batch_size=3),
    )

    pipeline = store.pipeline()
    [seen] = pipeline.workers
    assert (seen.worker, seen.queue_depth, seen.oldest_waiting_at) == ("worker-1", 3, oldest)
    assert seen.last_batch_size == 3
    assert seen.last_batch_at == seen.reported_at
    assert before <= seen.reported_at <= pipeline.as_of
    assert pipeline.vote_replicas == ("vote-a", "vote-b")
    assert pipeline.reporting == ("worker-1",)


def test_a_refused_batch_leaves_no_report_and_no_vote_replica(store: SqliteVoteStore) -> None:
    """The panel must never show a batch that did not commit."""
    bad = AcceptedVote("default", None, voter(2), 2, via="vote-x")  # type: ignore[arg-type]

    with pytest.raises(sqlite3.IntegrityError):
        store.apply([applied(1, via="vote-x"), bad], WorkerReport("w", 2, None, batch_size=2))

    pipeline = store.pipeline()
    assert pipeline.workers == ()
    assert pipeline.vote_replicas == ()


def test_an_idle_report_keeps_the_last_batch_and_updates_the_queue(
    store: SqliteVoteStore,
) -> None:
    store.apply([applied(1)], WorkerReport("w", 1, time.time() - 1, batch_size=1))
    [batch] = store.pipeline().workers
    time.sleep(0.01)

    store.record_report(WorkerReport("w", 0, None))

    [idle] = store.pipeline().workers
    assert (idle.queue_depth, idle.oldest_waiting_at) == (0, None)
    assert idle.reported_at > batch.reported_at
    assert (idle.last_batch_at, idle.last_batch_size) == (batch.last_batch_at, 1)


def test_vote_replicas_count_only_within_the_last_minute(
    store: SqliteVoteStore, db_path: Path
) -> None:
    store.apply([applied(1, via="vote-1"), applied(2, via="vote-2"), applied(3, via="vote-3")])
    now = time.time()
    with other_connection(db_path) as conn:
        conn.executemany(
            "UPDATE vote_replicas SET last_vote_at = ? WHERE replica = ?",
            [(now - REPLICA_WINDOW_S - 1, "vote-1"), (now - REPLICA_WINDOW_S + 5, "vote-2")],
        )

    assert store.pipeline().vote_replicas == ("vote-2", "vote-3")

    store.apply([applied(4, via="vote-1")])  # a new vote brings it back

    assert store.pipeline().vote_replicas == ("vote-1", "vote-2", "vote-3")


def test_reports_from_workers_silent_for_an_hour_are_left_out(
    store: SqliteVoteStore, db_path: Path
) -> None:
    store.record_report(WorkerReport("gone", 5, None))
    store.record_report(WorkerReport("here", 0, None))
    with other_connection(db_path) as conn:
        conn.execute(
            "UPDATE worker_reports SET reported_at = ? WHERE worker = 'gone'",
            (time.time() - 3601,),
        )

    assert [w.worker for w in store.pipeline().workers] == ["here"]
