"""The vote store on PostgreSQL, through a psycopg 3 connection pool."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from cloudvote.domain.pipeline import (
    REPLICA_WINDOW_S,
    REPORTS_KEPT_S,
    PipelineStatus,
    WorkerReport,
    WorkerSeen,
)
from cloudvote.domain.votes import AcceptedVote
from cloudvote.ports.store import StoreUnavailable

log = logging.getLogger("cloudvote.store")

T = TypeVar("T")

# Retried inside one apply(): they come from racing workers, not from a broken server.
_RACES = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# Any two migrators agree on this number, so only one changes the schema at a time.
_MIGRATION_LOCK = 0x0C10D707E

_UPSERT_VOTES = """
INSERT INTO votes (poll_id, voter_id, option_id, version, trace_id)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[])
ON CONFLICT (poll_id, voter_id) DO UPDATE
    SET option_id = EXCLUDED.option_id,
        version = EXCLUDED.version,
        trace_id = EXCLUDED.trace_id,
        updated_at = now()
    -- A replayed or late message is older than what is stored and changes nothing.
    WHERE votes.version < EXCLUDED.version
"""

# Sorted names, so two workers lock the same rows in the same order and never deadlock.
_TOUCH_REPLICAS = """
INSERT INTO vote_replicas (replica, last_vote_at)
SELECT unnest(%s::text[]), now()
ON CONFLICT (replica) DO UPDATE SET last_vote_at = EXCLUDED.last_vote_at
"""

# An idle report (size 0) keeps the last batch's time and size; a batch's report sets them.
_UPSERT_REPORT = """
INSERT INTO worker_reports AS r
    (worker, reported_at, queue_depth, oldest_waiting_at, last_batch_at, last_batch_size)
VALUES (%(worker)s, now(), %(depth)s, to_timestamp(%(oldest)s),
        CASE WHEN %(size)s::int > 0 THEN now() END, %(size)s::int)
ON CONFLICT (worker) DO UPDATE
    SET reported_at = EXCLUDED.reported_at,
        queue_depth = EXCLUDED.queue_depth,
        oldest_waiting_at = EXCLUDED.oldest_waiting_at,
        last_batch_at = COALESCE(EXCLUDED.last_batch_at, r.last_batch_at),
        last_batch_size = CASE WHEN EXCLUDED.last_batch_at IS NULL
                               THEN r.last_batch_size ELSE EXCLUDED.last_batch_size END
"""

# Reports from workers gone for an hour (old pods) no longer say anything about the queue.
_RECENT_REPORTS = """
SELECT worker, extract(epoch FROM reported_at)::float8, queue_depth,
       extract(epoch FROM oldest_waiting_at)::float8, extract(epoch FROM last_batch_at)::float8,
       last_batch_size
FROM worker_reports WHERE reported_at > now() - make_interval(secs => %s)
"""


def _report_parameters(report: WorkerReport) -> dict[str, object]:
    return {
        "worker": report.worker,
        "depth": report.queue_depth,
        "oldest": report.oldest_waiting_at,
        "size": report.batch_size,
    }


# A server that vanishes without a reset (a lost node, a failover to a new address) is
# found by TCP keepalives within about 25 s, instead of the kernel's two hours. The result
# feed's one LISTEN connection would otherwise wait for notifications that never come.
# A frozen server still acknowledges at the TCP level, so this never cuts a slow query.
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def conninfo_with_password(url: str, password: str = "") -> str:
    return make_conninfo(url, password=password) if password else url


def create_pool(
    url: str, password: str = "", max_size: int = 4, application_name: str = "cloudvote"
) -> ConnectionPool:
    """A pool that opens lazily, so a process starts even while PostgreSQL is down."""
    pool = ConnectionPool(
        conninfo_with_password(url, password),
        min_size=1,
        max_size=max_size,
        open=False,
        # A connection broken by a server restart is found and replaced at checkout.
        check=ConnectionPool.check_connection,
        # The name shows in pg_stat_activity, so an operator sees which service holds what.
        kwargs={"connect_timeout": 3, "application_name": application_name, **TCP_KEEPALIVES},
        reconnect_timeout=0,
    )
    pool.open(wait=False)
    return pool


class PostgresVoteStore:
    # Short: a probe or a results request must not hang while PostgreSQL is away.
    def __init__(self, pool: ConnectionPool, checkout_timeout: float = 1.0) -> None:
        self.pool = pool
        self.checkout_timeout = checkout_timeout

    def _run(self, work: Callable[[psycopg.Connection[tuple[object, ...]]], T]) -> T:
        try:
            with self.pool.connection(timeout=self.checkout_timeout) as conn:
                return work(conn)
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise StoreUnavailable(f"postgres: {error}") from error

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        if not votes:
            if report is not None:
                self.record_report(report)
            return 0
        replicas = sorted({v.via for v in votes if v.via})
        columns = (
            [v.poll_id for v in votes],
            [v.voter_id for v in votes],
            [v.option_id for v in votes],
            [v.version for v in votes],
            [v.trace_id for v in votes],
        )

        def upsert(conn: psycopg.Connection[tuple[object, ...]]) -> int:
            for attempt in range(5):
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.execute(_UPSERT_VOTES, columns)
                        changed = cur.rowcount
                        if replicas:
                            cur.execute(_TOUCH_REPLICAS, (replicas,))
                        if report is not None:
                            cur.execute(_UPSERT_REPORT, _report_parameters(report))
                        return changed
                except _RACES:
                    log.warning("store.race_retry", extra={"attempt": attempt + 1})
                    time.sleep(0.01 * (attempt + 1))
            raise StoreUnavailable("postgres: batch kept losing races with other workers")

        return self._run(upsert)

    def counts(self, poll_id: str) -> dict[str, int]:
        def read(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
            rows = conn.execute(
                "SELECT option_id, count FROM tallies WHERE poll_id = %s", (poll_id,)
            ).fetchall()
            conn.rollback()
            return {str(option): int(str(count)) for option, count in rows}

        return self._run(read)

    def record_report(self, report: WorkerReport) -> None:
        def upsert(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            with conn.transaction():
                conn.execute(_UPSERT_REPORT, _report_parameters(report))
                # The tables stay small: names of pods gone for a day are dropped.
                conn.execute(
                    "DELETE FROM worker_reports WHERE reported_at < now() - interval '1 day'"
                )
                conn.execute(
                    "DELETE FROM vote_replicas WHERE last_vote_at < now() - interval '1 day'"
                )

        self._run(upsert)

    def pipeline(self) -> PipelineStatus:
        def read(conn: psycopg.Connection[tuple[object, ...]]) -> PipelineStatus:
            row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
            now = float(str(row[0])) if row else time.time()
            workers = tuple(
                WorkerSeen(
                    str(worker),
                    float(str(reported)),
                    None if depth is None else int(str(depth)),
                    None if oldest is None else float(str(oldest)),
                    None if batch_at is None else float(str(batch_at)),
                    int(str(size)),
                )
                for worker, reported, depth, oldest, batch_at, size in conn.execute(
                    _RECENT_REPORTS, (REPORTS_KEPT_S,)
                ).fetchall()
            )
            replicas = tuple(
                str(replica)
                for (replica,) in conn.execute(
                    "SELECT replica FROM vote_replicas"
                    " WHERE last_vote_at > now() - make_interval(secs => %s) ORDER BY replica",
                    (REPLICA_WINDOW_S,),
                ).fetchall()
            )
            conn.rollback()
            return PipelineStatus(now, True, workers, replicas)

        return self._run(read)

    def ping(self) -> None:
        def select_one(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            conn.execute("SELECT 1")
            conn.rollback()

        self._run(select_one)


class PostgresTallyChanges:
    """The tally triggers' notifications (migration 0002), on one LISTEN connection.

    One per result process: however many viewers it serves, the process holds one idle
    connection and reads a poll's counts only when a commit has changed them.
    """

    CHANNEL = "cloudvote_tallies"

    def __init__(self, conninfo: str, application_name: str = "cloudvote-result") -> None:
        self.conninfo = conninfo
        self.application_name = application_name
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def wait(self, timeout: float) -> set[str] | None:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    make_conninfo(self.conninfo, **TCP_KEEPALIVES),
                    autocommit=True,
                    connect_timeout=3,
                    application_name=self.application_name,
                )
                self._conn.execute(f"LISTEN {self.CHANNEL}")
                # Commits made while we were not listening were never announced to us.
                return None
            # Wait for the first notification, then take whatever else has arrived: a
            # burst of commits becomes one set of polls to re-read.
            changed = {n.payload for n in self._conn.notifies(timeout=timeout, stop_after=1)}
            if changed:
                changed.update(n.payload for n in self._conn.notifies(timeout=0))
            return changed
        except psycopg.Error as error:
            self.close()
            raise StoreUnavailable(f"postgres: change feed: {error}") from error

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def migrate(conninfo: str, wait_seconds: float = 0.0) -> list[str]:
    """Apply every migration not yet applied; returns the names it applied.

    Idempotent, and safe when several copies run at once (a Job, an init container and a
    developer): a transaction-scoped advisory lock serialises them, and each sees what the
    one before it recorded.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            conn = psycopg.connect(conninfo, connect_timeout=3)
            break
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1)
    applied: list[str] = []
    with conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {str(row[0]) for row in conn.execute("SELECT name FROM schema_migrations")}
        for script in sorted(
            resources.files("cloudvote.adapters.postgres_migrations").iterdir(),
            key=lambda entry: entry.name,
        ):
            if not script.name.endswith(".sql") or script.name in done:
                continue
            conn.execute(script.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (script.name,))
            applied.append(script.name)
    return applied
