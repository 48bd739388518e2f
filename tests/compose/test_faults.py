"""Under a steady vote load through the gateway, break one part of the stack at a time.

After each fault, every accepted vote (202) is counted exactly once: it is in PostgreSQL,
the tally total matches the votes stored, and no vote that was refused outright appears.
The faults are the operator's everyday ones: the worker killed with SIGKILL (the restart
policy brings it back and it claims the batch the dead one held), Redis restarted (the
AOF with appendfsync always keeps every accepted vote), PostgreSQL restarted (the worker
retries; nothing is acknowledged before it is committed).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from tests.compose.project import TIMINGS, Project
from tests.support.load import SteadyVotes
from tests.support.waiting import wait_until

# Load before the fault, and after recovery, so the fault lands mid-stream.
STEADY_SECONDS = 3.0
# How long Redis or PostgreSQL stays down.
OUTAGE_SECONDS = 2.0
# The killed worker's batch is claimed after WORKER_CLAIM_IDLE_MS (15 s) + one claim period.
DRAIN_TIMEOUT_SECONDS = 120


def kill_worker(stack: Project) -> None:
    """`kill -9` of the worker's process, as a crash or the OOM killer would end it.

    Sent from the host to the container's PID 1. `docker kill --signal KILL` is not the
    same thing: the engine counts it as a deliberate stop, and since Docker 20.10 treats
    that like `docker stop`, the restart policy would not bring the worker back.
    """
    container = stack.container("worker")
    state = stack.inspect(container)
    restarts = state["RestartCount"]
    os.kill(state["State"]["Pid"], signal.SIGKILL)
    wait_until(
        lambda: stack.inspect(container)["RestartCount"],
        lambda n: n > restarts,
        timeout=30,
        interval=0.2,
        what="worker restarted by its on-failure policy",
    )
    stack.wait_healthy("worker")


def restart_redis(stack: Project) -> None:
    """Stop and start Redis with a pause between, so the load really meets the outage:
    votes sent meanwhile get 503, and the ones accepted before must still be there."""
    stack.compose("stop", "redis")
    time.sleep(OUTAGE_SECONDS)
    stack.compose("start", "redis")
    stack.wait_healthy("redis")
    stack.wait_healthy("vote")


def restart_postgres(stack: Project) -> None:
    """Stop and start PostgreSQL. Meanwhile vote keeps accepting (it needs only Redis),
    the worker retries, and result keeps answering with its last counts marked stale."""
    stack.compose("stop", "postgres")

    def degraded() -> bool:
        answer = stack.http.get("/api/polls/default/results")
        return answer.status_code == 503 or (
            answer.status_code == 200 and answer.json().get("stale") is True
        )

    wait_until(degraded, timeout=10, interval=0.2, what="result reports the store as down")
    time.sleep(OUTAGE_SECONDS)
    stack.compose("start", "postgres")
    stack.wait_healthy("postgres")
    stack.wait_healthy("result")


@pytest.mark.parametrize(
    "fault",
    [kill_worker, restart_redis, restart_postgres],
    ids=["kill-9-worker", "restart-redis", "restart-postgres"],
)
def test_every_accepted_vote_is_counted_exactly_once_after(
    stack: Project, fault: Callable[[Project], None]
) -> None:
    total_before = stack.total()
    stored_before = stack.stored_voters()

    started = time.monotonic()
    with SteadyVotes("127.0.0.1", stack.port) as load:
        time.sleep(STEADY_SECONDS)
        fault(stack)
        time.sleep(STEADY_SECONDS)
    assert load.accepted, f"no vote was accepted: {load.summary()}"
    if fault is restart_redis:
        assert load.statuses.get("503"), f"the load never met the outage: {load.summary()}"

    # Wait for the drain: every accepted vote is in the tallies (they may hold more, from
    # ambiguous requests that did reach Redis, which is checked just below).
    wait_until(
        stack.total,
        lambda t: t >= total_before + len(load.accepted),
        timeout=DRAIN_TIMEOUT_SECONDS,
        interval=0.5,
        what="accepted votes counted",
    )
    time.sleep(2)  # let any ambiguous stragglers land too, then compare exactly
    TIMINGS[f"fault {fault.__name__}: load + recovery + drain"] = time.monotonic() - started

    stored = stack.stored_voters() - stored_before
    missing = load.accepted - stored
    assert not missing, f"{len(missing)} accepted votes were lost ({load.summary()})"
    unexpected = stored - load.accepted - load.ambiguous
    assert not unexpected, (
        f"{len(unexpected)} votes stored that were refused: "
        f"{ {voter: load.outcomes.get(voter) for voter in unexpected} } ({load.summary()})"
    )
    # Exactly once: one tally per stored vote, no double counting of redelivered batches.
    assert stack.total() - total_before == len(stored), load.summary()
    print(f"{fault.__name__}: {load.summary()}; stored={len(stored)}")
