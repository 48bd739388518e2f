"""PostgresVoteStore and migrate() against a real PostgreSQL server."""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from cloudvote.adapters.postgres import (
    PostgresTallyChanges,
    PostgresVoteStore,
    conninfo_with_password,
    create_pool,
    migrate,
)
from cloudvote.application.pipeline import PipelineView
from cloudvote.domain.pipeline import REPLICA_WINDOW_S, WorkerReport, WorkerSeen
from cloudvote.domain.votes import AcceptedVote, latest_per_voter
from cloudvote.ports.store import StoreUnavailable
from tests.support.concurrency import run_at_once
from tests.support.servers import PostgresServer, free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

MIGRATIONS = [
    "0001_votes_and_tallies.sql",
    "0002_notify_tally_changes.sql",
    "0003_pipeline_reports.sql",
]
_database_names = (f"store_migrate_{n}" for n in range(1_000))


@pytest.fixture(scope="module")
def fresh_database(postgres_server: PostgresServer) -> Callable[[], str]:
    """A new empty database per call; returns a conninfo with the password in it."""

    def create() -> str:
        url = postgres_server.new_database(next(_database_names))
        return conninfo_with_password(url, postgres_server.password)

    return create


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> str:
    """This module's migrated database (url without password, as the services get it)."""
    url = postgres_server.new_database("store_adapter")
    migrate(conninfo_with_password(url, postgres_server.password))
    return url


@pytest.fixture(scope="module")
def database(database_url: str, postgres_server: PostgresServer) -> str:
    """The same database as a conninfo with the password, for looking at it directly."""
    return conninfo_with_password(database_url, postgres_server.password)


@pytest.fixture
def pools(postgres_server: PostgresServer) -> Iterator[list[ConnectionPool]]:
    opened: list[ConnectionPool] = []
    yield opened
    for pool in opened:
        pool.close()


@pytest.fixture
def make_store(
    database_url: str, postgres_server: PostgresServer, pools: list[ConnectionPool]
) -> Callable[[], PostgresVoteStore]:
    def make() -> PostgresVoteStore:
        pool = create_pool(database_url, postgres_server.password, max_size=2)
        pools.append(pool)
        return PostgresVoteStore(pool)

    return make


@pytest.fixture
def store(make_store: Callable[[], PostgresVoteStore]) -> PostgresVoteStore:
    return make_store()


@pytest.fixture
def poll() -> str:
    """A poll id of its own, so tests sharing the module database do not see each other."""
    return f"poll-{secrets.token_hex(4)}"


def vote(poll: str, voter: str, option: str, version: int, trace: str = "") -> AcceptedVote:
    return AcceptedVote(poll, option, voter, version, trace)


def query(conninfo: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql, params).fetchall()


def counted_from_votes(conninfo: str, poll: str) -> dict[str, int]:
    rows = query(
        conninfo,
        "SELECT option_id, count(*) FROM votes WHERE poll_id = %s GROUP BY option_id",
        poll,
    )
    return {str(option): int(str(count)) for option, count in rows}


def stored_votes(conninfo: str, poll: str) -> dict[str, tuple[str, int]]:
    rows = query(
        conninfo, "SELECT voter_id, option_id, version FROM votes WHERE poll_id = %s", poll
    )
    return {str(voter): (str(option), int(str(version))) for voter, option, version in rows}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {option: count for option, count in counts.items() if count}


# -- migrate ---------------------------------------------------------------------------------


def test_migrate_creates_the_schema_once_and_then_applies_nothing(
    fresh_database: Callable[[], str],
) -> None:
    conninfo = fresh_database()

    assert migrate(conninfo) == MIGRATIONS
    assert migrate(conninfo) == []
    assert query(conninfo, "SELECT name FROM schema_migrations ORDER BY name") == [
        (name,) for name in MIGRATIONS
    ]
    tables = query(
        conninfo,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " ORDER BY table_name",
    )
    assert tables == [
        ("schema_migrations",),
        ("tallies",),
        ("vote_replicas",),
        ("votes",),
        ("worker_reports",),
    ]


def test_migrate_is_safe_when_four_copies_run_at_once(
    fresh_database: Callable[[], str],
) -> None:
    conninfo = fresh_database()

    applied = run_at_once(*[partial(migrate, conninfo)] * 4)

    assert sorted(applied) == [[], [], [], MIGRATIONS]
    assert query(conninfo, "SELECT count(*) FROM schema_migrations") == [(len(MIGRATIONS),)]


def test_migrate_waits_for_a_server_that_is_not_up_yet_then_gives_up(
    postgres_server: PostgresServer,
) -> None:
    unreachable = f"postgresql://cloudvote@127.0.0.1:{free_port()}/nowhere"
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        migrate(unreachable, wait_seconds=1.5)
    assert 1.0 <= time.monotonic() - started < 10


# -- apply -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "later", "kept"),
    [
        pytest.param([], [("a", 10, 1)], ("a", 10), id="the first vote is inserted"),
        pytest.param([("a", 10)], [("b", 20, 1)], ("b", 20), id="a newer version replaces it"),
        pytest.param([("a", 1)], [("a", 2, 1)], ("a", 2), id="a revote for the same option"),
        pytest.param(
            [("b", 20)],
            # Arrived late, replayed after a crash, and the same version never wins.
            [("a", 10, 0), ("b", 20, 0), ("a", 20, 0)],
            ("b", 20),
            id="an older or replayed version changes nothing",
        ),
    ],
)
def test_apply_keeps_each_voters_newest_vote_and_counts_it_once(
    store: PostgresVoteStore,
    database: str,
    poll: str,
    earlier: list[tuple[str, int]],
    later: list[tuple[str, int, int]],
    kept: tuple[str, int],
) -> None:
    """Each later batch changes as many votes as it says; v2's vote is never touched."""
    store.apply([vote(poll, "v2", "a", 11), *(vote(poll, "v1", o, n) for o, n in earlier)])

    for option, version, changed in later:
        assert store.apply([vote(poll, "v1", option, version)]) == changed

    assert stored_votes(database, poll) == {"v1": kept, "v2": ("a", 11)}
    assert store.counts(poll) == dict(Counter(["a", kept[0]]))


def test_empty_batch_is_a_no_op(store: PostgresVoteStore, poll: str) -> None:
    assert store.apply([]) == 0
    assert store.counts(poll) == {}


def test_trace_id_is_stored_with_the_vote(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    store.apply([vote(poll, "v1", "a", 1, trace)])
    assert query(database, "SELECT trace_id FROM votes WHERE poll_id = %s", poll) == [(trace,)]

    newer_trace = secrets.token_hex(16)
    store.apply([vote(poll, "v1", "b", 2, newer_trace)])
    assert query(database, "SELECT trace_id FROM votes WHERE poll_id = %s", poll) == [
        (newer_trace,)
    ]


def test_polls_are_counted_separately(store: PostgresVoteStore, poll: str) -> None:
    other = f"{poll}-other"
    store.apply(latest_per_voter([vote(poll, "v1", "a", 1), vote(other, "v1", "b", 2)]))

    assert store.counts(poll) == {"a": 1}
    assert store.counts(other) == {"b": 1}


def test_tallies_match_the_votes_after_many_random_batches_with_revotes_and_replays(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    rng = random.Random(20240601)
    voters = [f"voter-{n}" for n in range(60)]
    versions = iter(rng.sample(range(1, 10_000_000), 5_000))
    expected: dict[str, tuple[str, int]] = {}
    history: list[list[AcceptedVote]] = []

    for _ in range(150):
        if history and rng.random() < 0.25:
            batch = rng.choice(history)  # a batch redelivered after a crash
        else:
            batch = latest_per_voter(
                vote(poll, rng.choice(voters), rng.choice("abc"), next(versions))
                for _ in range(rng.randint(1, 25))
            )
            history.append(batch)
        store.apply(batch)
        for v in batch:
            if v.voter_id not in expected or expected[v.voter_id][1] < v.version:
                expected[v.voter_id] = (v.option_id, v.version)

    assert stored_votes(database, poll) == expected
    exact = dict(Counter(option for option, _ in expected.values()))
    assert counted_from_votes(database, poll) == exact
    assert nonzero(store.counts(poll)) == exact


def test_racing_workers_keep_each_voters_newest_vote_and_exact_tallies(
    make_store: Callable[[], PostgresVoteStore], database: str, poll: str
) -> None:
    """Two workers apply conflicting batches for the same voters at the same time.

    This is what a reclaimed batch racing its slow original owner looks like; the
    statement-level tally triggers must neither double-count nor lose a change.
    """
    voters = [f"voter-{n:03d}" for n in range(40)]
    rounds, racers = 60, 2
    all_versions = random.Random(7).sample(range(1, 100_000_000), rounds * racers * len(voters))
    plans: list[list[list[AcceptedVote]]] = []
    for racer in range(racers):
        rng = random.Random(racer)
        plan: list[list[AcceptedVote]] = []
        for round_ in range(rounds):
            offset = (racer * rounds + round_) * len(voters)
            chosen = rng.sample(range(len(voters)), rng.randint(5, len(voters)))
            plan.append(
                latest_per_voter(
                    vote(poll, voters[i], rng.choice("abcd"), all_versions[offset + i])
                    for i in chosen
                )
            )
        plans.append(plan)
    stores = [make_store() for _ in range(racers)]

    def race(store: PostgresVoteStore, plan: list[list[AcceptedVote]]) -> None:
        for batch in plan:
            store.apply(batch)

    run_at_once(*(partial(race, s, p) for s, p in zip(stores, plans, strict=True)), timeout=120)

    newest: dict[str, AcceptedVote] = {}
    for plan in plans:
        for batch in plan:
            for v in batch:
                if v.voter_id not in newest or newest[v.voter_id].version < v.version:
                    newest[v.voter_id] = v
    assert stored_votes(database, poll) == {
        voter: (v.option_id, v.version) for voter, v in newest.items()
    }
    exact = dict(Counter(v.option_id for v in newest.values()))
    assert counted_from_votes(database, poll) == exact
    assert nonzero(stores[0].counts(poll)) == exact


def test_a_batch_the_database_refuses_changes_nothing_and_is_not_unavailable(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    """The worker tells a refused message from an outage by this exception type."""
    store.apply([vote(poll, "v1", "a", 1)])
    poisoned = [vote(poll, "v1", "b", 2), vote(poll, "v2", "a", 3, trace="nul\x00byte")]

    with pytest.raises(Exception) as refused:
        store.apply(poisoned)

    assert not isinstance(refused.value, StoreUnavailable)
    assert stored_votes(database, poll) == {"v1": ("a", 1)}  # one transaction: all or nothing
    assert store.apply([vote(poll, "v1", "b", 2)]) == 1  # and the pool is still usable


# -- the pipeline panel: worker reports and vote replicas -----------------------------------


def seen_worker(store: PostgresVoteStore, worker: str) -> WorkerSeen | None:
    return next((w for w in store.pipeline().workers if w.worker == worker), None)


def backdate(conninfo: str, table: str, name: str, seconds: float) -> None:
    """Make a worker's last report, or a vote replica's last vote, `seconds` old."""
    stamp, key = (
        ("reported_at", "worker") if table == "worker_reports" else ("last_vote_at", "replica")
    )
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            f"UPDATE {table} SET {stamp} = now() - make_interval(secs => %s) WHERE {key} = %s",
            (seconds, name),
        )


def test_a_batchs_report_and_vote_replicas_are_written_in_its_transaction(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    worker, replicas = f"worker-{poll}", (f"vote-a-{poll}", f"vote-b-{poll}")
    oldest = time.time() - 3.0
    batch = [
        AcceptedVote(poll, "a", "v1", 1, via=replicas[1]),
        AcceptedVote(poll, "b", "v2", 2, via=replicas[0]),
    ]

    store.apply(batch, WorkerReport(worker, 2, oldest, batch_size=2))

    seen = seen_worker(store, worker)
    assert seen is not None
    assert (seen.queue_depth, seen.last_batch_size) == (2, 2)
    assert seen.oldest_waiting_at == pytest.approx(oldest, abs=1e-3)
    # now() is the transaction's start: one timestamp for the votes and the report.
    [(updated_at,)] = query(
        database,
        "SELECT DISTINCT extract(epoch FROM updated_at)::float8 FROM votes WHERE poll_id = %s",
        poll,
    )
    assert seen.reported_at == seen.last_batch_at == updated_at
    listed = store.pipeline().vote_replicas
    assert [r for r in listed if r.endswith(poll)] == sorted(replicas)


def test_a_refused_batch_leaves_no_report_and_no_vote_replica(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    """The panel never shows a batch that did not commit."""
    worker, replica = f"worker-{poll}", f"vote-{poll}"
    poisoned = [
        AcceptedVote(poll, "a", "v1", 1, via=replica),
        AcceptedVote(poll, "a", "v2", 2, trace_id="nul\x00byte", via=replica),
    ]

    with pytest.raises(Exception) as refused:
        store.apply(poisoned, WorkerReport(worker, 2, None, batch_size=2))

    assert not isinstance(refused.value, StoreUnavailable)
    assert seen_worker(store, worker) is None
    assert replica not in store.pipeline().vote_replicas
    assert query(database, "SELECT count(*) FROM votes WHERE poll_id = %s", poll) == [(0,)]


def test_an_idle_report_keeps_the_last_batch_and_updates_the_queue(
    store: PostgresVoteStore, poll: str
) -> None:
    worker = f"worker-{poll}"
    store.apply([vote(poll, "v1", "a", 1)], WorkerReport(worker, 4, time.time(), batch_size=1))
    batch = seen_worker(store, worker)
    assert batch is not None

    store.record_report(WorkerReport(worker, 0, None))

    idle = seen_worker(store, worker)
    assert idle is not None
    assert (idle.queue_depth, idle.oldest_waiting_at) == (0, None)
    assert idle.reported_at > batch.reported_at
    assert (idle.last_batch_at, idle.last_batch_size) == (batch.last_batch_at, 1)


def test_a_worker_that_cannot_see_the_queue_reports_the_depth_unknown(
    store: PostgresVoteStore, poll: str
) -> None:
    worker = f"worker-{poll}"

    store.record_report(WorkerReport(worker, None, None))

    seen = seen_worker(store, worker)
    assert seen is not None
    assert (seen.queue_depth, seen.oldest_waiting_at) == (None, None)


def test_vote_replicas_count_only_within_the_last_minute(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    old, recent, new = (f"vote-{n}-{poll}" for n in ("old", "recent", "new"))
    store.apply(
        [AcceptedVote(poll, "a", f"v{n}", n + 1, via=r) for n, r in enumerate((old, recent, new))]
    )
    backdate(database, "vote_replicas", old, REPLICA_WINDOW_S + 1)
    backdate(database, "vote_replicas", recent, REPLICA_WINDOW_S - 5)

    listed = [r for r in store.pipeline().vote_replicas if r.endswith(poll)]

    assert listed == sorted([recent, new])


def test_the_pipeline_is_stamped_with_the_stores_clock_and_forgets_old_workers(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    gone, here = f"gone-{poll}", f"here-{poll}"
    store.record_report(WorkerReport(gone, 9, None))
    store.record_report(WorkerReport(here, 0, None))
    backdate(database, "worker_reports", gone, 61 * 60)
    [(server_now,)] = query(database, "SELECT extract(epoch FROM now())::float8")

    pipeline = store.pipeline()

    assert pipeline.store_reachable
    assert abs(pipeline.as_of - float(str(server_now))) < 5
    workers = {w.worker for w in pipeline.workers}
    assert here in workers
    assert gone not in workers


def test_reports_and_replicas_unseen_for_a_day_are_deleted(
    store: PostgresVoteStore, database: str, poll: str
) -> None:
    worker, replica = f"worker-{poll}", f"vote-{poll}"
    store.apply([AcceptedVote(poll, "a", "v1", 1, via=replica)], WorkerReport(worker, 0, None, 1))
    backdate(database, "worker_reports", worker, 25 * 3600)
    backdate(database, "vote_replicas", replica, 25 * 3600)

    store.record_report(WorkerReport(f"other-{poll}", 0, None))

    assert query(database, "SELECT * FROM worker_reports WHERE worker = %s", worker) == []
    assert query(database, "SELECT * FROM vote_replicas WHERE replica = %s", replica) == []


# -- outages ---------------------------------------------------------------------------------


def test_store_is_unavailable_while_postgres_is_down_and_recovers_after_restart(
    postgres_server: PostgresServer, store: PostgresVoteStore, database: str, poll: str
) -> None:
    store.apply([vote(poll, "v1", "a", 1)])
    with postgres_server.down():
        for attempt in (
            lambda: store.apply([vote(poll, "v2", "b", 2)]),
            lambda: store.counts(poll),
            store.ping,
            store.pipeline,
            lambda: store.record_report(WorkerReport("w", 0, None)),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                attempt()
            assert time.monotonic() - started < 10
        # The result service shows the outage on the panel instead of failing the page.
        shown = PipelineView(store).status()
        assert not shown.store_reachable
        assert shown.as_json()["store_reachable"] is False

    # The pool replaces the connections the restart broke; no new pool is needed.
    wait_until(store.ping, lambda _: True, timeout=15, what="the pool reconnecting")
    assert store.apply([vote(poll, "v2", "b", 2)]) == 1
    assert nonzero(store.counts(poll)) == {"a": 1, "b": 1}


def test_a_pool_created_while_postgres_is_down_works_once_it_is_up(
    postgres_server: PostgresServer, database_url: str, pools: list[ConnectionPool], poll: str
) -> None:
    """A worker pod may start before its database: the process must not need a restart."""
    with postgres_server.down():
        pool = create_pool(database_url, postgres_server.password, max_size=2)
        pools.append(pool)
        late_store = PostgresVoteStore(pool, checkout_timeout=1.0)
        with pytest.raises(StoreUnavailable):
            late_store.ping()

    wait_until(late_store.ping, lambda _: True, timeout=20, what="the pool connecting")
    assert late_store.apply([vote(poll, "v1", "a", 1)]) == 1


# -- the change feed (LISTEN/NOTIFY) ---------------------------------------------------------


@pytest.fixture
def feed(database: str) -> Iterator[PostgresTallyChanges]:
    changes = PostgresTallyChanges(database)
    assert changes.wait(0) is None  # connecting: it cannot know what changed before
    yield changes
    changes.close()


def test_a_committed_batch_announces_each_changed_poll_once(
    store: PostgresVoteStore, feed: PostgresTallyChanges
) -> None:
    store.apply(
        latest_per_voter(
            [
                AcceptedVote("feed-a", "x", secrets.token_hex(16), 1),
                AcceptedVote("feed-a", "y", secrets.token_hex(16), 2),
                AcceptedVote("feed-b", "x", secrets.token_hex(16), 3),
            ]
        )
    )

    assert feed.wait(5.0) == {"feed-a", "feed-b"}
    assert feed.wait(0.2) == set()


def test_a_revote_that_moves_a_tally_is_announced(
    store: PostgresVoteStore, feed: PostgresTallyChanges
) -> None:
    voter = secrets.token_hex(16)
    store.apply([AcceptedVote("feed-revote", "x", voter, 1)])
    assert feed.wait(5.0) == {"feed-revote"}

    store.apply([AcceptedVote("feed-revote", "y", voter, 2)])

    assert feed.wait(5.0) == {"feed-revote"}


def test_a_rolled_back_change_announces_nothing(database: str, feed: PostgresTallyChanges) -> None:
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO votes (poll_id, voter_id, option_id, version) VALUES (%s, %s, %s, 1)",
            ("feed-rollback", secrets.token_hex(16), "x"),
        )
        conn.rollback()

    assert feed.wait(0.5) == set()


def test_a_replayed_batch_that_changes_nothing_announces_nothing(
    store: PostgresVoteStore, feed: PostgresTallyChanges
) -> None:
    batch = [AcceptedVote("feed-replay", "x", secrets.token_hex(16), 7)]
    store.apply(batch)
    assert feed.wait(5.0) == {"feed-replay"}

    assert store.apply(batch) == 0

    assert feed.wait(0.5) == set()


def test_the_feed_reports_a_server_restart_and_then_reconnects(
    postgres_server: PostgresServer, feed: PostgresTallyChanges
) -> None:
    with postgres_server.down(), pytest.raises(StoreUnavailable, match="change feed"):
        feed.wait(5.0)

    # Back: the first call reconnects and says it cannot know what it missed.
    wait_until(lambda: feed.wait(0) is None, timeout=30, what="the feed reconnected")
