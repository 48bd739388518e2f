"""No vote is lost and no old vote wins, while the worker keeps crashing.

A real `cloudvote vote` takes at least 10,000 votes from 1,000 voters who each change
their mind several times. Meanwhile the real `cloudvote worker` is SIGKILLed four times
and restarted: twice while it holds votes it has not acknowledged, twice in the middle of
its database transaction. Each new worker must reclaim the dead one's pending votes
(XAUTOCLAIM), and the store must ignore the replays. After the drain, every voter's
stored vote is the last one the vote service accepted from them, and the counts are exact.

Checked against deliberately broken workers: acknowledging before the commit, dropping
the version check of the upsert, and never reclaiming each make this test fail.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
import pytest
import redis

from tests.support.client import Client
from tests.support.servers import RedisServer
from tests.support.services import Deployment, deployment_fixture
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

VOTERS = 1_000
TOTAL_VOTES = 10_000
# Voters vote between 2 and 18 times; shuffled, so a voter's last vote can fall anywhere in
# the run, including right before a kill (a lost or overwritten last vote is what shows).
VOTES_PER_VOTER = (2, 18)
CLIENT_THREADS = 8
OPTIONS = ("a", "b", "c", "d")
CLIENT_SECONDS = 60.0
DRAIN_SECONDS = 45.0
POLLS = {"polls": [{"id": "default", "options": [{"id": o} for o in OPTIONS]}]}


@dataclass
class Ledger:
    """What the client knows for certain: each voter's last vote the server accepted.

    It also gates the clients: they may send at most `allowed` votes. The test opens the
    gate a little past each kill's moment, so votes keep arriving while the worker dies,
    but the run can never finish before the last kill, however fast the vote path gets.
    """

    allowed: int
    last_accepted: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    refused: list[tuple[str, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.gate = threading.Condition(self.lock)

    def has_sent(self, count: int) -> bool:
        return self.sent >= count

    def open_gate(self, allowed: int) -> None:
        with self.gate:
            self.allowed = allowed
            self.gate.notify_all()

    def wait_for_gate(self) -> None:
        """Block while the votes sent so far fill the gate (a few may overshoot)."""
        with self.gate:
            if not self.gate.wait_for(lambda: self.sent < self.allowed, timeout=CLIENT_SECONDS):
                raise TimeoutError(f"the gate stayed shut at {self.allowed} votes")


class VotingClient:
    """One keep-alive connection; http.client keeps the client's CPU share small."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def vote(self, voter: str, option: str, as_form: bool) -> int:
        if as_form:
            path, body = "/", f"vote={option}"
            content_type = "application/x-www-form-urlencoded"
        else:
            path, body = "/api/polls/default/votes", json.dumps({"option": option})
            content_type = "application/json"
        headers = {"Content-Type": content_type, "Cookie": f"voter_id={voter}"}
        for attempt in range(3):
            try:
                self.conn.request("POST", path, body, headers)
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.HTTPException, OSError):
                # Sending the same vote again is safe: if the first one did arrive, this
                # one repeats it and stays the voter's latest.
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


deployment = deployment_fixture(
    "no_loss",
    POLLS,
    # A dead worker's votes are reclaimed after 2 s instead of 15 s.
    WORKER_CLAIM_IDLE_MS="2000",
    WORKER_BATCH_SIZE="500",
    LOG_LEVEL="WARNING",
)


def plan_votes(voters: list[str], rng: random.Random) -> list[list[tuple[str, str]]]:
    """(voter, option) sequences, one per client thread; each voter stays in one thread."""
    counts = {voter: rng.randint(*VOTES_PER_VOTER) for voter in voters}
    while sum(counts.values()) < TOTAL_VOTES:
        counts[rng.choice(voters)] += 1
    sequence = [voter for voter, n in counts.items() for _ in range(n)]
    rng.shuffle(sequence)
    owner = {voter: index % CLIENT_THREADS for index, voter in enumerate(voters)}
    plans: list[list[tuple[str, str]]] = [[] for _ in range(CLIENT_THREADS)]
    for voter in sequence:
        plans[owner[voter]].append((voter, rng.choice(OPTIONS)))
    return plans


def send_votes(port: int, plan: list[tuple[str, str]], ledger: Ledger, seed: int) -> None:
    """A voter's votes go out one after another, so the last 2xx is the last accepted."""
    rng = random.Random(seed)
    client = VotingClient(port)
    try:
        for voter, option in plan:
            ledger.wait_for_gate()
            status = client.vote(voter, option, as_form=rng.random() < 0.5)
            with ledger.lock:
                ledger.sent += 1
                if status in (202, 303):
                    ledger.last_accepted[voter] = option
                else:
                    ledger.refused.append((voter, status))
    except BaseException as error:  # noqa: BLE001 - reported by the test
        with ledger.lock:
            ledger.errors.append(error)
    finally:
        client.close()


HOLDING = "holding unacknowledged votes"
IN_TRANSACTION = "inside its uncommitted transaction"
# When (fraction of votes sent) and in which state the worker is SIGKILLed.
KILLS = ((0.2, HOLDING), (0.45, IN_TRANSACTION), (0.7, HOLDING), (0.9, IN_TRANSACTION))
# How far past a kill's moment the clients may go before that kill is done: enough votes
# to build the backlog the kill needs, and the last gate (0.98) still leaves votes unsent.
GATE_AHEAD = 0.08
# The worker's uncommitted upsert, seen from PostgreSQL (the probe itself excluded).
_UNCOMMITTED_UPSERT = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND state IN ('active', 'idle in transaction') AND query LIKE '%INSERT INTO votes%'
"""


@dataclass(frozen=True)
class Kill:
    moment: str
    caught: bool  # whether the worker was frozen in that moment (else: wherever it was)
    sent_before: int  # votes the client had sent when the worker died
    left_pending: int  # votes the dead worker had received and not acknowledged


class CrashingWorker:
    """The real `cloudvote worker`, SIGKILLed at chosen moments and restarted."""

    def __init__(
        self, deployment: Deployment, admin: redis.Redis, database: psycopg.Connection[Any]
    ) -> None:
        self.deployment = deployment
        self.admin = admin
        self.database = database
        self.process = deployment.start("worker")

    def consumer(self) -> str:
        """Its consumer in the group is `<hostname>-<pid>`; find it by the pid."""
        suffix = f"-{self.process.pid}"
        names = wait_until(
            lambda: [c["name"] for c in self.admin.xinfo_consumers("votes", "workers")],
            lambda current: any(name.endswith(suffix) for name in current),
            timeout=10,
            what=f"consumer of worker pid {self.process.pid}",
        )
        return next(str(name) for name in names if name.endswith(suffix))

    def pending(self, consumer: str) -> int:
        summary = self.admin.xpending("votes", "workers")
        return sum(int(c["pending"]) for c in summary["consumers"] if c["name"] == consumer)

    def in_transaction(self) -> bool:
        row = self.database.execute(_UNCOMMITTED_UPSERT).fetchone()
        return row is not None and int(row[0]) > 0

    def kill(self, moment: str, ledger: Ledger) -> Kill:
        """Freeze the worker (SIGSTOP) until it is caught in `moment`, then SIGKILL it.

        Frozen, it cannot acknowledge or commit while we look, so what we see is what it
        holds when it dies. A short freeze first lets a backlog build, so the batch it
        dies with is a big one.
        """
        consumer = self.consumer()
        self.process.send(signal.SIGSTOP)
        time.sleep(0.3)
        self.process.send(signal.SIGCONT)

        def holds() -> bool:
            return self.pending(consumer) > 0 if moment == HOLDING else self.in_transaction()

        caught = False
        deadline = time.monotonic() + 3.0
        while not caught and time.monotonic() < deadline:
            self.process.send(signal.SIGSTOP)
            caught = holds()
            if not caught:
                self.process.send(signal.SIGCONT)
                time.sleep(random.uniform(0.0005, 0.003))
        self.process.kill()
        return Kill(moment, caught, ledger.sent, self.pending(consumer))

    def restart(self) -> None:
        self.process = self.deployment.start("worker")


def test_no_vote_is_lost_while_the_worker_is_killed_repeatedly(
    deployment: Deployment, redis_server: RedisServer
) -> None:
    started = time.monotonic()
    vote = deployment.start("vote")
    result = deployment.start("result")
    seed = secrets.randbits(32)
    rng = random.Random(seed)
    voters = [f"{rng.getrandbits(128):032x}" for _ in range(VOTERS)]
    plans = plan_votes(voters, rng)
    total_votes = sum(len(plan) for plan in plans)
    assert total_votes >= TOTAL_VOTES
    ledger = Ledger(allowed=int((KILLS[0][0] + GATE_AHEAD) * total_votes))
    clients = [
        threading.Thread(
            target=send_votes, args=(vote.port, plan, ledger, seed + i), name=f"client-{i}"
        )
        for i, plan in enumerate(plans)
    ]
    kills: list[Kill] = []

    with (
        redis_server.client(decode_responses=True) as admin,
        deployment.connect(autocommit=True) as database,
    ):
        worker = CrashingWorker(deployment, admin, database)
        for client in clients:
            client.start()
        try:
            next_moments = [fraction for fraction, _ in KILLS[1:]] + [None]
            for (fraction, moment), next_fraction in zip(KILLS, next_moments, strict=True):
                wait_until(
                    partial(ledger.has_sent, int(fraction * total_votes)),
                    timeout=CLIENT_SECONDS,
                    interval=0.02,
                    what=f"{fraction:.0%} of the votes sent",
                )
                kills.append(worker.kill(moment, ledger))
                worker.restart()
                ledger.open_gate(
                    total_votes
                    if next_fraction is None
                    else int((next_fraction + GATE_AHEAD) * total_votes)
                )
        finally:
            ledger.open_gate(total_votes)
            for client in clients:
                client.join(timeout=CLIENT_SECONDS)
        assert not any(client.is_alive() for client in clients), "client threads hung"
        assert ledger.errors == []
        assert ledger.refused == []
        assert ledger.sent == total_votes
        assert len(ledger.last_accepted) == VOTERS
        # Each kill came while votes were still arriving, not after the run.
        assert all(kill.sent_before < total_votes for kill in kills), kills
        # The kills really hit the worker mid-batch, including mid-transaction...
        assert any(kill.caught and kill.moment == IN_TRANSACTION for kill in kills), kills
        # ...and a worker that had not committed had not acknowledged either.
        assert all(kill.left_pending > 0 for kill in kills if kill.caught), kills

        wait_until(
            lambda: (admin.xlen("votes"), admin.xpending("votes", "workers")["pending"]),
            lambda backlog: backlog == (0, 0),
            timeout=DRAIN_SECONDS,
            interval=0.25,
            what="queue drained (length, pending)",
        )
        assert admin.xlen("votes:dead") == 0

    expected = {option: 0 for option in OPTIONS} | Counter(ledger.last_accepted.values())
    with deployment.connect() as conn:
        rows = conn.execute("SELECT voter_id, option_id FROM votes WHERE poll_id = 'default'")
        stored: dict[str, str] = {str(voter): str(option) for voter, option in rows}
    mismatched = {
        voter: (option, stored.get(voter))
        for voter, option in ledger.last_accepted.items()
        if stored.get(voter) != option
    }
    assert mismatched == {}, (
        f"seed {seed}: {len(mismatched)} voters hold a vote that is not their last"
    )
    assert len(stored) == VOTERS

    with Client(result.url) as http:
        body = http.wait_for_counts("default", expected, timeout=10)
    assert body == {"poll": "default", "counts": expected, "total": VOTERS}
    assert worker.process.running, worker.process.log_tail()
    print(
        f"no-loss (seed {seed}): {total_votes} votes, kills {kills}, "
        f"{time.monotonic() - started:.1f}s"
    )
