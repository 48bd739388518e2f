"""KEDA scales the worker on the stream's backlog (issue 13, SCL-03), live.

The worker is held at 0 (KEDA's paused-replicas annotation, worker_control.py) while
200,000 votes are queued straight into the stream in the vote service's own message format;
then it is released. KEDA must scale it out to the ScaledObject's maximum, the backlog
must drain, KEDA must scale it back to its minimum, and every vote must be counted once.
The overlay's ScaledObject (overlays/local-observed/scaling.yaml) polls every 5 s and
scales in after 30 quiet seconds, so the whole run takes a few minutes, not ten; each
phase's time is reported in the terminal summary.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubernetes.app import Cloudvote, exec_python
from tests.kubernetes.conftest import TIMINGS
from tests.kubernetes.worker_control import hold_worker, release_worker
from tests.support.kube import condition, get_json, kubectl
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

# Big enough to outlast the HPA's first look. One worker stores up to 10,000 votes a second
# here (2,000-vote batches of 0.1-0.2 s): in a run with 50,000, they were all stored 5 s
# after its pod started, before the HPA that KEDA recreates on release first read the
# metric (it syncs every 15 s), so the test saw a drain without a scale-out. 200,000 keep
# a backlog in the stream for the HPA's first sync (about 20 MB of Redis memory).
BACKLOG = 200_000
# Connects the way the vote service does: its settings, its Redis client, from inside a
# vote pod (the NetworkPolicies let vote reach Redis; the password is its mounted file).
_CONNECT = (
    "from cloudvote.config import Settings\n"
    "from cloudvote.adapters.redis_streams import connect_redis, stream_fields\n"
    "from cloudvote.domain.votes import Ballot\n"
    "s = Settings.from_env(service='vote')\n"
    "r = connect_redis(s.require_redis_url(), s.redis_password, socket_timeout=30)\n"
)


def vote_pod(app: Cloudvote) -> str:
    return str(app.ready_pods("vote")[0]["metadata"]["name"])


def in_vote_pod(app: Cloudvote, code: str, timeout: float = 60) -> str:
    """Run code after _CONNECT in a vote pod; its last output line."""
    output = exec_python(app.namespace, vote_pod(app), "vote", _CONNECT + code, timeout)
    return output.splitlines()[-1] if output else ""


def queue_state(app: Cloudvote) -> tuple[int, int]:
    """(XLEN, XPENDING) of the votes stream: owed votes, and those in a worker's hands."""
    line = in_vote_pod(
        app,
        "import json\n"
        "print(json.dumps([r.xlen(s.stream), r.xpending(s.stream, s.consumer_group)['pending']]))",
    )
    length, pending = json.loads(line)
    return int(length), int(pending)


def queue_backlog(app: Cloudvote, voter_prefix: str) -> int:
    """Queue BACKLOG valid votes, each from a new voter, exactly as the vote service writes
    them (stream_fields of a Ballot); pipelined, 2,000 XADDs a round trip. Returns XLEN."""
    return int(
        in_vote_pod(
            app,
            "pipe = r.pipeline(transaction=False)\n"
            f"for n in range({BACKLOG}):\n"
            f"    voter = '{voter_prefix}' + format(n, '016x')\n"
            "    ballot = Ballot('default', 'ab'[n % 2], voter, '', 'test-keda')\n"
            "    pipe.xadd(s.stream, stream_fields(ballot))\n"
            "    if len(pipe) >= 2000:\n"
            "        pipe.execute()\n"
            "pipe.execute()\n"
            "print(r.xlen(s.stream))",
            timeout=180,
        )
    )


def desired_workers(app: Cloudvote) -> int:
    return int(get_json("deployment", "-n", app.namespace, "worker")["spec"].get("replicas", 0))


def tallied(app: Cloudvote) -> int:
    return int(app.psql("SELECT coalesce(sum(count), 0) FROM tallies WHERE poll_id = 'default'"))


def stored_backlog(app: Cloudvote, voter_prefix: str) -> tuple[int, int]:
    """(rows, distinct voters) in PostgreSQL among the voters this test queued."""
    rows, voters = (
        app.psql(
            "SELECT count(*), count(DISTINCT voter_id) FROM votes"
            f" WHERE poll_id = 'default' AND voter_id LIKE '{voter_prefix}%'"
        )
        .strip()
        .split("|")
    )
    return int(rows), int(voters)


def scale_events(app: Cloudvote) -> list[str]:
    """KEDA's and its HPA's events for the worker, oldest first, as kubectl prints them."""
    events = get_json("events", "-n", app.namespace)["items"]
    mine = [
        e
        for e in events
        if e["involvedObject"]["name"] in ("worker", "keda-hpa-worker")
        and e["involvedObject"]["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    ]
    mine.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']} {e['reason']}: {e['message']}"
        for e in mine
    ]


@pytest.fixture
def scaled_object(app: Cloudvote) -> Iterator[dict[str, Any]]:
    """The worker's ScaledObject, Ready, with the HPA it owns; the worker given back to
    KEDA afterwards, whatever happened."""
    scaled: dict[str, Any] = wait_until(
        lambda: get_json("scaledobject", "-n", app.namespace, "worker"),
        lambda so: condition(so, "Ready") == "True",
        timeout=120,
        interval=2,
        what="the worker's ScaledObject Ready (KEDA installed? deploy/cluster/up does it)",
    )
    try:
        yield scaled
    finally:
        release_worker(app.namespace)


@pytest.mark.timeout(900)  # the bounded waits below add up to about 15 minutes
def test_keda_scales_the_worker_out_on_a_backlog_and_back_in_counting_each_vote_once(
    app: Cloudvote, scaled_object: dict[str, Any]
) -> None:
    spec = scaled_object["spec"]
    minimum, maximum = int(spec["minReplicaCount"]), int(spec["maxReplicaCount"])
    assert maximum > minimum

    # A quiet start: nothing owed, so the tallies only move by what this test queues.
    wait_until(
        lambda: queue_state(app),
        lambda state: state == (0, 0),
        timeout=120,
        interval=2,
        what="an empty stream before the test",
    )
    hold_worker(app.namespace, 0, timeout=120)
    before = tallied(app)
    voter_prefix = secrets.token_hex(8)
    started = time.monotonic()
    # At least: votes cast through the gateway meanwhile (none in CI) join the queue too.
    assert queue_backlog(app, voter_prefix) >= BACKLOG
    TIMINGS[f"keda: queue {BACKLOG:,} votes"] = time.monotonic() - started
    # Held: nothing consumes, so nothing is in a worker's hands.
    assert queue_state(app)[1] == 0

    release_worker(app.namespace)
    released = time.monotonic()
    wait_until(
        lambda: desired_workers(app),
        lambda n: n == maximum,
        timeout=120,
        interval=1,
        what=f"KEDA scaling the worker out to its maximum of {maximum}",
    )
    TIMINGS["keda: scale-out (release to maximum)"] = time.monotonic() - released
    hpa = get_json("hpa", "-n", app.namespace, "keda-hpa-worker")
    assert hpa["spec"]["maxReplicas"] == maximum
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "ScaledObject"

    wait_until(
        lambda: stored_backlog(app, voter_prefix),
        lambda stored: stored[0] == BACKLOG,
        timeout=240,
        interval=2,
        what=f"the {BACKLOG} queued votes stored",
    )
    wait_until(
        lambda: queue_state(app),
        lambda state: state == (0, 0),
        timeout=60,
        interval=1,
        what="the backlog drained (XLEN and XPENDING 0)",
    )
    drained = time.monotonic()
    TIMINGS["keda: drain (release to empty stream)"] = drained - released

    wait_until(
        lambda: desired_workers(app),
        lambda n: n == minimum,
        timeout=150,
        interval=2,
        what=f"KEDA scaling the worker back in to its minimum of {minimum}",
    )
    TIMINGS["keda: scale-in (empty stream to minimum)"] = time.monotonic() - drained

    # Exactly once: BACKLOG new voters stored, each once; the tallies agree with the rows
    # (one snapshot), so a batch written twice after a claim counted nothing twice; and
    # they moved by the backlog (exactly, in CI where nobody else votes meanwhile).
    assert stored_backlog(app, voter_prefix) == (BACKLOG, BACKLOG)
    agree = app.psql(
        "SELECT (SELECT count(*) FROM votes WHERE poll_id = 'default')"
        " = (SELECT coalesce(sum(count), 0) FROM tallies WHERE poll_id = 'default')"
    )
    assert agree.strip() == "t"
    assert tallied(app) >= before + BACKLOG
    assert app.total() >= before + BACKLOG

    # The HPA that KEDA made did the scaling, on the external metric (shown with -s).
    events = scale_events(app)
    print("\n".join(["", "KEDA and HPA events for the worker:", *events]))
    print(kubectl("describe", "scaledobject", "-n", app.namespace, "worker").stdout)
    assert any(f"New size: {maximum}" in event for event in events), events
