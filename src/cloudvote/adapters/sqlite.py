"""Embedded storage for the monolith: the durable queue and the vote store in one file.

The monolith keeps the same two-step design as the services (queue, then store) so the
worker code is shared. SQLite in WAL mode with synchronous=FULL makes an accepted vote
durable before the HTTP answer, just like Redis with `appendfsync always`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import NamedTuple

from cloudvote.domain.pipeline import (
    REPLICA_WINDOW_S,
    REPORTS_KEPT_S,
    PipelineStatus,
    WorkerReport,
    WorkerSeen,
)
from cloudvote.domain.votes import AcceptedVote, Ballot
from cloudvote.ports.queue import Delivery, QueueUnavailable
from cloudvote.ports.store import StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused
    poll       TEXT NOT NULL,
    option     TEXT NOT NULL,
    voter      TEXT NOT NULL,
    trace      TEXT NOT NULL DEFAULT '',
    claimed_at REAL,
    via         TEXT NOT NULL DEFAULT '',
    accepted_at REAL NOT NULL DEFAULT 0  -- epoch seconds: how long the oldest vote waits
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    original_id TEXT NOT NULL,
    fields      TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    poll_id   TEXT NOT NULL,
    voter_id  TEXT NOT NULL,
    option_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    trace_id  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (poll_id, voter_id)
);
CREATE TABLE IF NOT EXISTS worker_reports (
    worker            TEXT PRIMARY KEY,
    reported_at       REAL NOT NULL,
    queue_depth       INTEGER,
    oldest_waiting_at REAL,
    last_batch_at     REAL,
    last_batch_size   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vote_replicas (
    replica      TEXT PRIMARY KEY,
    last_vote_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tallies (
    poll_id   TEXT NOT NULL,
    option_id TEXT NOT NULL,
    count     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, option_id)
);
-- The same rule as the PostgreSQL triggers: tallies change with the votes, in one transaction.
CREATE TRIGGER IF NOT EXISTS votes_tally_insert AFTER INSERT ON votes BEGIN
    INSERT INTO tallies (poll_id, option_id, count) VALUES (NEW.poll_id, NEW.option_id, 1)
    ON CONFLICT (poll_id, option_id) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS votes_tally_update AFTER UPDATE OF option_id ON votes
WHEN OLD.option_id <> NEW.option_id BEGIN
    UPDATE tallies SET count = count - 1
        WHERE poll_id = OLD.poll_id AND option_id = OLD.option_id;
    INSERT INTO tallies (poll_id, option_id, count) VALUES (NEW.poll_id, NEW.option_id, 1)
    ON CONFLICT (poll_id, option_id) DO UPDATE SET count = count + 1;
END;
"""

# Columns added after the first release; a data file made by it gains them at start.
_ADDED_QUEUE_COLUMNS = {
    "via": "TEXT NOT NULL DEFAULT ''",
    "accepted_at": "REAL NOT NULL DEFAULT 0",
}

# The same rules as the PostgreSQL statements (adapters/postgres.py): an idle report keeps
# the last batch's time and size.
_UPSERT_REPORT = """
INSERT INTO worker_reports
    (worker, reported_at, queue_depth, oldest_waiting_at, last_batch_at, last_batch_size)
VALUES (:worker, :now, :depth, :oldest, CASE WHEN :size > 0 THEN :now END, :size)
ON CONFLICT (worker) DO UPDATE
    SET reported_at = excluded.reported_at,
        queue_depth = excluded.queue_depth,
        oldest_waiting_at = excluded.oldest_waiting_at,
        last_batch_at = coalesce(excluded.last_batch_at, worker_reports.last_batch_at),
        last_batch_size = CASE WHEN excluded.last_batch_at IS NULL
                               THEN worker_reports.last_batch_size
                               ELSE excluded.last_batch_size END
"""


class SqliteDatabase:
    """One connection per thread on one database file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # executescript manages its own transaction; every statement is IF NOT EXISTS.
        conn = self.connection()
        conn.executescript(_SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(queue)")}
        for column, definition in _ADDED_QUEUE_COLUMNS.items():
            if column not in present:
                conn.execute(f"ALTER TABLE queue ADD COLUMN {column} {definition}")

    def connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit reaches the disk before the vote is acknowledged to the user.
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _ClaimStatements(NamedTuple):
    """Pick the first matching rows, then claim exactly those (the same condition twice)."""

    select: str
    claim: str


_UNCLAIMED = _ClaimStatements(
    "SELECT id, poll, option, voter, trace, via FROM queue WHERE claimed_at IS NULL"
    " ORDER BY id LIMIT ?",
    "UPDATE queue SET claimed_at = ? WHERE id BETWEEN ? AND ? AND claimed_at IS NULL",
)
_STALE = _ClaimStatements(
    "SELECT id, poll, option, voter, trace, via FROM queue WHERE claimed_at < ?"
    " ORDER BY id LIMIT ?",
    "UPDATE queue SET claimed_at = ? WHERE id BETWEEN ? AND ? AND claimed_at < ?",
)


class SqliteVoteQueue:
    """A durable queue table: rows are claimed on delivery and deleted on acknowledge."""

    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database
        self._arrived = threading.Condition()
        # Counts enqueues, so a waiter can tell whether one happened since it last looked.
        self._enqueued = 0

    def enqueue(self, ballot: Ballot) -> str:
        try:
            with self.database.transaction() as conn:
                cursor = conn.execute(
                    "INSERT INTO queue (poll, option, voter, trace, via, accepted_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        ballot.poll_id,
                        ballot.option_id,
                        ballot.voter_id,
                        ballot.trace_id,
                        ballot.via,
                        time.time(),
                    ),
                )
                message_id = str(cursor.lastrowid)
        except sqlite3.OperationalError as error:
            raise QueueUnavailable(f"sqlite: {error}") from error
        with self._arrived:
            self._enqueued += 1
            self._arrived.notify_all()
        return message_id

    def release_claims(self) -> None:
        """At start-up the monolith owns the file, so earlier claims belong to a dead run."""
        with self.database.transaction() as conn:
            conn.execute("UPDATE queue SET claimed_at = NULL WHERE claimed_at IS NOT NULL")

    def receive(self, max_count: int, block_ms: int) -> list[Delivery]:
        deadline = time.monotonic() + block_ms / 1000
        while True:
            with self._arrived:
                seen = self._enqueued
            deliveries = self._claim(_UNCLAIMED, (), max_count)
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            with self._arrived:
                # Returns at once if a vote arrived after `seen`: no wake-up is missed.
                self._arrived.wait_for(partial(self._enqueued_since, seen), remaining)

    def _enqueued_since(self, seen: int) -> bool:
        return self._enqueued != seen

    def claim_stale_votes(self, min_idle_ms: int, max_count: int) -> list[Delivery]:
        cutoff = time.time() - min_idle_ms / 1000
        return self._claim(_STALE, (cutoff,), max_count)

    def _claim(
        self, statements: _ClaimStatements, params: tuple[object, ...], limit: int
    ) -> list[Delivery]:
        try:
            with self.database.transaction() as conn:
                rows = conn.execute(statements.select, (*params, limit)).fetchall()
                if rows:
                    # The rows picked are exactly those in [first, last] that match.
                    conn.execute(statements.claim, (time.time(), rows[0][0], rows[-1][0], *params))
        except sqlite3.OperationalError as error:
            raise QueueUnavailable(f"sqlite: {error}") from error
        return [
            Delivery(
                str(row[0]),
                int(row[0]),
                {"poll": row[1], "option": row[2], "voter": row[3], "trace": row[4], "via": row[5]},
            )
            for row in rows
        ]

    def acknowledge(self, message_ids: Sequence[str]) -> None:
        try:
            with self.database.transaction() as conn:
                conn.executemany("DELETE FROM queue WHERE id = ?", [(int(i),) for i in message_ids])
        except sqlite3.OperationalError as error:
            # Locked or disk full: the worker must back off and retry, not die.
            raise QueueUnavailable(f"sqlite: {error}") from error

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        try:
            with self.database.transaction() as conn:
                conn.execute(
                    "INSERT INTO dead_letters (original_id, fields, reason) VALUES (?, ?, ?)",
                    (delivery.message_id, json.dumps(delivery.fields), reason),
                )
                conn.execute("DELETE FROM queue WHERE id = ?", (int(delivery.message_id),))
        except sqlite3.OperationalError as error:
            raise QueueUnavailable(f"sqlite: {error}") from error

    def depth(self) -> int:
        row = self.database.connection().execute("SELECT count(*) FROM queue").fetchone()
        return int(row[0])

    def oldest_waiting(self) -> float | None:
        # Rows queued before accepted_at existed read 0; they count as accepted "now".
        row = (
            self.database.connection()
            .execute("SELECT min(nullif(accepted_at, 0)), count(*) FROM queue")
            .fetchone()
        )
        if not row[1]:
            return None
        return float(row[0]) if row[0] is not None else time.time()

    def ping(self) -> None:
        self.database.connection().execute("SELECT 1")


class SqliteVoteStore:
    def __init__(self, database: SqliteDatabase) -> None:
        self.database = database

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        try:
            with self.database.transaction() as conn:
                now = time.time()
                conn.executemany(
                    "INSERT INTO vote_replicas (replica, last_vote_at) VALUES (?, ?)"
                    " ON CONFLICT (replica) DO UPDATE SET last_vote_at = excluded.last_vote_at",
                    [(replica, now) for replica in sorted({v.via for v in votes if v.via})],
                )
                if report is not None:
                    conn.execute(_UPSERT_REPORT, _report_parameters(report, now))
                cursor = conn.executemany(
                    "INSERT INTO votes (poll_id, voter_id, option_id, version, trace_id) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (poll_id, voter_id) DO UPDATE SET "
                    "option_id = excluded.option_id, version = excluded.version, "
                    "trace_id = excluded.trace_id WHERE votes.version < excluded.version",
                    [(v.poll_id, v.voter_id, v.option_id, v.version, v.trace_id) for v in votes],
                )
                # rowcount sums the vote rows written; trigger writes are not counted.
                changed = cursor.rowcount
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"sqlite: {error}") from error
        return changed

    def counts(self, poll_id: str) -> dict[str, int]:
        try:
            rows = (
                self.database.connection()
                .execute("SELECT option_id, count FROM tallies WHERE poll_id = ?", (poll_id,))
                .fetchall()
            )
        except sqlite3.OperationalError as error:
            # The result page then serves its last counts, marked stale, instead of a 500.
            raise StoreUnavailable(f"sqlite: {error}") from error
        return {str(option): int(count) for option, count in rows}

    def record_report(self, report: WorkerReport) -> None:
        try:
            with self.database.transaction() as conn:
                conn.execute(_UPSERT_REPORT, _report_parameters(report, time.time()))
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"sqlite: {error}") from error

    def pipeline(self) -> PipelineStatus:
        now = time.time()
        try:
            conn = self.database.connection()
            workers = tuple(
                WorkerSeen(str(w), float(at), depth, oldest, batch_at, int(size))
                for w, at, depth, oldest, batch_at, size in conn.execute(
                    "SELECT worker, reported_at, queue_depth, oldest_waiting_at, last_batch_at,"
                    " last_batch_size FROM worker_reports WHERE reported_at > ?",
                    (now - REPORTS_KEPT_S,),
                )
            )
            replicas = tuple(
                str(r)
                for (r,) in conn.execute(
                    "SELECT replica FROM vote_replicas WHERE last_vote_at > ? ORDER BY replica",
                    (now - REPLICA_WINDOW_S,),
                )
            )
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"sqlite: {error}") from error
        return PipelineStatus(now, True, workers, replicas)

    def ping(self) -> None:
        self.database.connection().execute("SELECT 1")


def _report_parameters(report: WorkerReport, now: float) -> dict[str, object]:
    return {
        "worker": report.worker,
        "now": now,
        "depth": report.queue_depth,
        "oldest": report.oldest_waiting_at,
        "size": report.batch_size,
    }
