"""Drain: how fast one worker moves a preloaded backlog from Redis into PostgreSQL."""

from __future__ import annotations

import secrets
import time

from bench.stack import Stack
from cloudvote.adapters.redis_streams import stream_fields
from cloudvote.domain.votes import Ballot


def preload(stack: Stack, votes: int, voters: int) -> None:
    """Queue `votes` ballots from `voters` voters straight into the stream."""
    voter_ids = [secrets.token_hex(16) for _ in range(voters)]
    with stack.redis.client() as client:
        pipe = client.pipeline(transaction=False)
        for n in range(votes):
            ballot = Ballot("default", "ab"[n % 2], voter_ids[n % voters], secrets.token_hex(16))
            pipe.xadd("votes", stream_fields(ballot))  # type: ignore[arg-type]
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()


def measure_drain(stack: Stack, votes: int, voters: int) -> dict[str, object]:
    stack.reset_data()
    preload(stack, votes, voters)
    with stack.redis.client() as client:
        stack.start("worker")
        deadline = time.monotonic() + 600
        started = None
        while time.monotonic() < deadline:
            depth = client.xlen("votes")
            now = time.monotonic()
            if started is None and depth < votes:
                started = now
            if depth == 0:
                break
            time.sleep(0.01)
        finished = time.monotonic()
    stack.stop_all()
    with stack.postgres.connect() as conn:
        stored = conn.execute("SELECT count(*) FROM votes").fetchone()
        tallied = conn.execute("SELECT sum(count) FROM tallies").fetchone()
    assert started is not None
    elapsed = finished - started
    return {
        "preloaded_votes": votes,
        "voters": voters,
        "seconds": round(elapsed, 3),
        "votes_per_s": round(votes / elapsed),
        "stored_rows": stored[0] if stored else None,
        "tallied_total": int(tallied[0]) if tallied and tallied[0] is not None else 0,
    }
