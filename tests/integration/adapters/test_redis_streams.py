"""RedisVoteQueue and GroupCommitWriter against a real, password-protected redis-server."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import redis

from cloudvote.adapters.redis_streams import (
    GroupCommitWriter,
    RedisVoteQueue,
    connect_redis,
    stream_fields,
    stream_id_to_version,
)
from cloudvote.domain.votes import Ballot
from cloudvote.ports.queue import Delivery, QueueUnavailable
from tests.support.concurrency import run_at_once
from tests.support.servers import RedisServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

QueueFactory = Callable[..., RedisVoteQueue]


def ballot(option: str = "a", voter: str | None = None, trace: str = "") -> Ballot:
    return Ballot("default", option, voter or secrets.token_hex(16), trace)


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses, so tests need not flush the shared server."""
    return f"votes-{secrets.token_hex(4)}"


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client for looking at the stream behind the adapter's back."""
    with redis_server.client(decode_responses=True) as client:
        yield client


@pytest.fixture
def make_queue(redis_server: RedisServer, stream: str, clients: list[redis.Redis]) -> QueueFactory:
    """Queues on the test's stream, one client each; every client is closed afterwards."""

    def make(consumer: str = "worker-1", password: str | None = None) -> RedisVoteQueue:
        client = connect_redis(
            redis_server.url, redis_server.password if password is None else password
        )
        clients.append(client)
        return RedisVoteQueue(
            client,
            stream=stream,
            group="workers",
            consumer=consumer,
            dead_letter_stream=f"{stream}:dead",
        )

    return make


@pytest.fixture
def queue(make_queue: QueueFactory) -> RedisVoteQueue:
    """The first worker's queue, with its consumer group created."""
    queue = make_queue()
    queue.ensure_group()
    return queue


def pending_by_consumer(admin: redis.Redis, stream: str) -> dict[str, int]:
    summary = admin.xpending(stream, "workers")
    return {entry["name"]: int(entry["pending"]) for entry in summary["consumers"]}


@contextlib.contextmanager
def redis_frozen(redis_server: RedisServer) -> Iterator[None]:
    """SIGSTOP redis: connections open but nothing answers, like a network partition."""
    assert redis_server.pid is not None
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)


@contextlib.contextmanager
def redis_full(admin: redis.Redis) -> Iterator[None]:
    """Redis at maxmemory with the default noeviction policy: it refuses every write."""
    admin.config_set("maxmemory", "1")
    try:
        yield
    finally:
        admin.config_set("maxmemory", "0")


# -- producer side ---------------------------------------------------------------------------


def test_enqueue_returns_increasing_stream_ids(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    queue = make_queue()
    ids = [queue.enqueue(ballot()) for _ in range(20)]

    versions = [stream_id_to_version(message_id) for message_id in ids]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert [entry_id for entry_id, _ in admin.xrange(stream)] == ids


def test_enqueue_writes_the_ballot_fields(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    sent = ballot("b", trace="4bf92f3577b34da6a3ce929d0e0e4736")
    message_id = make_queue().enqueue(sent)

    assert admin.xrange(stream) == [(message_id, stream_fields(sent))]


def test_depth_counts_queued_and_in_flight_votes(queue: RedisVoteQueue) -> None:
    for _ in range(5):
        queue.enqueue(ballot())
    assert queue.depth() == 5

    delivered = queue.receive(max_count=2, block_ms=100)
    assert queue.depth() == 5  # received but not acknowledged is still owed
    queue.acknowledge([d.message_id for d in delivered])
    assert queue.depth() == 3


def test_oldest_waiting_is_when_redis_accepted_the_oldest_vote_still_owed(
    queue: RedisVoteQueue, admin: redis.Redis
) -> None:
    """The results page's worker lag: now minus this, read by the worker."""
    assert queue.oldest_waiting() is None

    first = queue.enqueue(ballot())
    time.sleep(0.01)
    queue.enqueue(ballot())
    server_seconds, micros = admin.time()
    accepted_at = int(first.partition("-")[0]) / 1000

    assert queue.oldest_waiting() == accepted_at
    assert 0 <= server_seconds + micros / 1e6 - accepted_at < 5
    delivered = queue.receive(max_count=1, block_ms=100)
    assert queue.oldest_waiting() == accepted_at  # received, not applied: still owed
    queue.acknowledge([d.message_id for d in delivered])
    later = queue.oldest_waiting()
    assert later is not None
    assert later > accepted_at
    queue.acknowledge([d.message_id for d in queue.receive(max_count=10, block_ms=100)])
    assert queue.oldest_waiting() is None


def test_queue_refuses_to_work_without_the_password(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    for password in ("", "wrong-password"):
        anonymous = make_queue(password=password)
        with pytest.raises(QueueUnavailable):
            anonymous.enqueue(ballot())
        with pytest.raises(QueueUnavailable):
            anonymous.ping()
    assert admin.xlen(stream) == 0


def test_concurrent_enqueues_each_get_their_own_distinct_id(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    queue = make_queue()
    threads, per_thread = 16, 40

    def produce() -> list[tuple[str, Ballot]]:
        sent = [ballot(secrets.choice("ab")) for _ in range(per_thread)]
        return [(queue.enqueue(b), b) for b in sent]

    results = run_at_once(*[produce] * threads, timeout=30)

    stored = dict(admin.xrange(stream))
    returned = [pair for mine in results for pair in mine]
    assert len(returned) == threads * per_thread
    assert len({message_id for message_id, _ in returned}) == threads * per_thread
    assert len(stored) == threads * per_thread
    for message_id, sent in returned:
        # The id a caller got back points at that caller's own ballot, not a neighbour's.
        assert stored[message_id] == stream_fields(sent)
    for mine in results:
        versions = [stream_id_to_version(message_id) for message_id, _ in mine]
        assert versions == sorted(versions)  # one thread's votes keep their order


def test_group_commit_hands_the_lead_on_when_batches_are_small(
    redis_server: RedisServer, admin: redis.Redis, stream: str, clients: list[redis.Redis]
) -> None:
    client = connect_redis(redis_server.url, redis_server.password)
    clients.append(client)
    writer = GroupCommitWriter(client, stream, max_batch=2)
    threads = 12

    ids = run_at_once(
        *(partial(writer.xadd, {"n": str(i)}, timeout=10) for i in range(threads)), timeout=30
    )

    assert len(ids) == threads
    stored = dict(admin.xrange(stream))
    # Each caller got the id of its own entry back, not a neighbour's.
    assert [stored[message_id]["n"] for message_id in ids] == [str(i) for i in range(threads)]


def test_enqueue_fails_fast_while_redis_is_down_and_recovers_after_restart(
    redis_server: RedisServer, make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    queue = make_queue()
    before = queue.enqueue(ballot())
    with redis_server.down():
        for attempt in (lambda: queue.enqueue(ballot()), queue.ping, queue.depth):
            started = time.monotonic()
            with pytest.raises(QueueUnavailable):
                attempt()
            assert time.monotonic() - started < 3.0

    after = queue.enqueue(ballot())
    assert stream_id_to_version(after) > stream_id_to_version(before)
    with redis_server.client(decode_responses=True) as fresh:
        assert [entry_id for entry_id, _ in fresh.xrange(stream)] == [before, after]


def test_concurrent_enqueues_all_fail_while_redis_is_down(
    redis_server: RedisServer, make_queue: QueueFactory
) -> None:
    queue = make_queue()
    queue.enqueue(ballot())

    def produce() -> pytest.ExceptionInfo[QueueUnavailable]:
        with pytest.raises(QueueUnavailable) as refused:
            queue.enqueue(ballot())
        return refused

    with redis_server.down():
        outcomes = run_at_once(*[produce] * 8, timeout=15)

    assert len(outcomes) == 8  # each raised QueueUnavailable: checked in its own thread
    assert queue.enqueue(ballot())  # the writer is not left stuck with a dead leader


def test_enqueue_recovers_after_redis_hangs_longer_than_a_follower_waits(
    redis_server: RedisServer, admin: redis.Redis, stream: str, clients: list[redis.Redis]
) -> None:
    sending = threading.Event()  # a leader has taken its batch and is sending it

    class SignallingWriter(GroupCommitWriter):
        def _send(self, batch: list[Any]) -> list[Any]:
            sending.set()
            return super()._send(batch)

    client = connect_redis(redis_server.url, redis_server.password, socket_timeout=0.5)
    clients.append(client)
    writer = SignallingWriter(client, stream)
    writer.xadd({"n": "before"})
    sending.clear()
    outcomes: dict[str, BaseException | str] = {}

    def write(name: str, timeout: float) -> None:
        try:
            outcomes[name] = writer.xadd({"n": name}, timeout=timeout)
        except QueueUnavailable as error:
            outcomes[name] = error

    with redis_frozen(redis_server):
        leader = threading.Thread(target=write, args=("leader", 10.0))
        leader.start()
        # The leader has its batch and blocks in its pipeline: the follower waits behind it.
        assert sending.wait(timeout=5), "the leader never sent its batch"
        follower = threading.Thread(target=write, args=("follower", 0.3))
        follower.start()
        follower.join(timeout=5)
        leader.join(timeout=15)
    assert isinstance(outcomes["follower"], QueueUnavailable)
    assert isinstance(outcomes["leader"], QueueUnavailable)

    # Redis answers again: a new vote must be written, not wait for a leader that is gone.
    message_id = writer.xadd({"n": "after"}, timeout=3.0)
    assert admin.xrange(stream, min=message_id, max=message_id) == [(message_id, {"n": "after"})]


def test_enqueue_reports_unavailable_while_redis_refuses_writes(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    """A stream that outgrew maxmemory (say the worker was down for hours) is a full
    queue: the vote is not stored, and the caller must be able to say 503, not 500."""
    queue = make_queue()
    queue.enqueue(ballot())
    with redis_full(admin), pytest.raises(QueueUnavailable):
        queue.enqueue(ballot())
    assert admin.xlen(stream) == 1
    assert queue.enqueue(ballot())


# -- consumer side ---------------------------------------------------------------------------


def test_received_votes_stay_pending_until_acknowledged(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    sent = [ballot() for _ in range(3)]
    ids = [queue.enqueue(b) for b in sent]

    delivered = queue.receive(max_count=10, block_ms=200)

    assert [d.message_id for d in delivered] == ids
    assert [d.fields for d in delivered] == [stream_fields(b) for b in sent]
    assert [d.version for d in delivered] == [stream_id_to_version(i) for i in ids]
    assert admin.xpending(stream, "workers")["pending"] == 3
    assert queue.receive(max_count=10, block_ms=50) == []  # not delivered twice

    queue.acknowledge(ids[:2])
    assert admin.xpending(stream, "workers")["pending"] == 1
    assert admin.xlen(stream) == 1  # acknowledged messages are deleted, not kept
    queue.acknowledge(ids[2:])
    assert admin.xpending(stream, "workers")["pending"] == 0
    assert admin.xlen(stream) == 0


def test_ensure_group_keeps_votes_queued_before_the_group_existed(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    early = queue.enqueue(ballot())
    queue.ensure_group()
    queue.ensure_group()  # a second worker starting: BUSYGROUP is fine

    assert [d.message_id for d in queue.receive(max_count=10, block_ms=100)] == [early]


def test_receive_waits_at_most_block_ms_when_the_stream_is_empty(queue: RedisVoteQueue) -> None:
    started = time.monotonic()
    assert queue.receive(max_count=10, block_ms=300) == []
    assert 0.25 <= time.monotonic() - started < 2.0


def received_then_crashed(make_queue: QueueFactory, count: int) -> list[str]:
    """Ids of `count` votes a consumer received and then died with, still pending on it."""
    dead = make_queue(consumer="worker-dead")
    dead.ensure_group()
    ids = [dead.enqueue(ballot()) for _ in range(count)]
    assert len(dead.receive(max_count=100, block_ms=100)) == count
    return ids


def test_claim_stale_votes_takes_over_a_dead_consumers_pending_votes(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    ids = received_then_crashed(make_queue, 4)
    alive = make_queue(consumer="worker-alive")

    # Not idle long enough yet: a slow consumer is not robbed.
    assert alive.claim_stale_votes(min_idle_ms=60_000, max_count=10) == []
    time.sleep(0.15)
    claimed = alive.claim_stale_votes(min_idle_ms=100, max_count=10)

    assert [d.message_id for d in claimed] == ids
    assert pending_by_consumer(admin, stream) == {"worker-alive": 4}
    alive.acknowledge([d.message_id for d in claimed])
    assert admin.xlen(stream) == 0
    assert admin.xpending(stream, "workers")["pending"] == 0


def test_claim_stale_votes_walks_a_backlog_larger_than_one_batch(
    make_queue: QueueFactory, admin: redis.Redis, stream: str
) -> None:
    ids = received_then_crashed(make_queue, 25)
    alive = make_queue(consumer="worker-alive")
    time.sleep(0.15)

    claimed: list[str] = []
    for _ in range(10):
        batch = alive.claim_stale_votes(min_idle_ms=100, max_count=10)
        claimed += [d.message_id for d in batch]
        alive.acknowledge([d.message_id for d in batch])
        if len(claimed) >= len(ids):
            break

    assert sorted(claimed, key=stream_id_to_version) == ids
    assert admin.xlen(stream) == 0


def test_dead_letter_parks_the_message_with_reason_and_original_id(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    poison = {"poll": "no-such-poll", "option": "a", "voter": "x"}
    poison_id = admin.xadd(stream, poison)
    healthy_id = queue.enqueue(ballot())
    deliveries = {d.message_id: d for d in queue.receive(max_count=10, block_ms=100)}

    queue.dead_letter(deliveries[poison_id], "unknown poll 'no-such-poll'")

    parked = admin.xrange(f"{stream}:dead")
    assert [fields for _, fields in parked] == [
        {**poison, "original_id": poison_id, "reason": "unknown poll 'no-such-poll'"}
    ]
    assert queue.dead_letters() == [parked[0][1]]
    # Gone from the queue and from the pending list; the healthy vote is untouched.
    assert [entry_id for entry_id, _ in admin.xrange(stream)] == [healthy_id]
    assert admin.xpending(stream, "workers")["pending"] == 1


def test_acknowledge_still_works_and_frees_memory_while_redis_is_full(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    """Draining is the only way out of a full Redis, so the worker must be able to ack."""
    ids = [queue.enqueue(ballot()) for _ in range(3)]
    queue.receive(max_count=10, block_ms=100)

    with redis_full(admin):
        queue.acknowledge(ids)
        assert admin.xlen(stream) == 0
        assert admin.xpending(stream, "workers")["pending"] == 0


def test_dead_letter_while_redis_is_full_is_unavailable_and_keeps_the_message(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    admin.xadd(stream, {"poll": "no-such-poll"})
    [poison] = queue.receive(max_count=10, block_ms=100)

    with redis_full(admin), pytest.raises(QueueUnavailable):
        queue.dead_letter(poison, "unknown poll")

    assert admin.xlen(stream) == 1  # still there, still pending: retried later
    assert admin.xpending(stream, "workers")["pending"] == 1


def test_ensure_group_while_redis_is_full_does_not_crash_the_worker(
    queue: RedisVoteQueue, admin: redis.Redis
) -> None:
    """Even XGROUP CREATE of an existing group is refused at maxmemory."""
    with redis_full(admin), pytest.raises(QueueUnavailable):
        queue.ensure_group()


@pytest.mark.parametrize("loss", ["stream deleted", "group destroyed"])
def test_lost_consumer_group_is_reported_unavailable_then_recreated(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str, loss: str
) -> None:
    """Redis restarted without persistence: the worker must not crash, and must go on."""
    queue.enqueue(ballot())
    if loss == "stream deleted":
        admin.delete(stream)
    else:
        admin.xgroup_destroy(stream, "workers")

    with pytest.raises(QueueUnavailable, match="consumer group"):
        queue.receive(max_count=10, block_ms=50)

    later = queue.enqueue(ballot())
    received = queue.receive(max_count=10, block_ms=100)
    assert later in [d.message_id for d in received]
    queue.acknowledge([d.message_id for d in received])
    assert admin.xpending(stream, "workers")["pending"] == 0


def test_claim_stale_votes_recreates_a_lost_group(
    queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    admin.delete(stream)

    with pytest.raises(QueueUnavailable):
        queue.claim_stale_votes(min_idle_ms=0, max_count=10)
    assert queue.claim_stale_votes(min_idle_ms=0, max_count=10) == []


def test_receive_and_acknowledge_fail_as_unavailable_while_redis_is_down(
    redis_server: RedisServer, queue: RedisVoteQueue, admin: redis.Redis, stream: str
) -> None:
    message_id = queue.enqueue(ballot())
    delivered: list[Delivery] = queue.receive(max_count=10, block_ms=100)
    with redis_server.down():
        for attempt in (
            partial(queue.receive, max_count=10, block_ms=100),
            partial(queue.acknowledge, [message_id]),
            partial(queue.claim_stale_votes, min_idle_ms=0, max_count=10),
        ):
            with pytest.raises(QueueUnavailable):
                attempt()

    # The AOF kept the pending entry: the un-acknowledged vote is still owed after restart.
    wait_until(queue.ping, lambda _: True, timeout=10, what="redis answering the queue")
    assert queue.depth() == 1
    queue.acknowledge([d.message_id for d in delivered])
    assert queue.depth() == 0
