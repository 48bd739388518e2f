"""The vote queue on a Redis stream with a consumer group.

Why a stream and not a list: a list pop removes the vote before the worker has stored it,
so a crash in between loses it (example-voting-app's design). A consumer group keeps each
delivered message in a pending list until XACK, and XAUTOCLAIM hands the messages of a
dead consumer to a live one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from opentelemetry.trace import NoOpTracer, SpanKind
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cloudvote.domain.votes import Ballot
from cloudvote.observability.tracing import PRODUCER_SPAN, Tracing, fail, inject
from cloudvote.ports.queue import Delivery, QueueUnavailable

log = logging.getLogger("cloudvote.queue")

T = TypeVar("T")

_TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


def stream_fields(ballot: Ballot) -> dict[str, str]:
    """The flat string mapping a stream message carries (read back by decode_vote).

    The vote's PRODUCER span adds its W3C context as "traceparent" (and "tracestate");
    "trace" stays the vote's trace id, which the worker stores in votes.trace_id.
    """
    return {
        "poll": ballot.poll_id,
        "option": ballot.option_id,
        "voter": ballot.voter_id,
        "trace": ballot.trace_id,
        "via": ballot.via,
    }


def stream_id_to_version(message_id: str) -> int:
    """Map a Redis stream id `<ms>-<seq>` onto one increasing integer: the vote's version.

    The sequence restarts every millisecond and stays far below a million, so
    ms * 1_000_000 + seq keeps the stream's order and fits a PostgreSQL bigint.
    """
    millis, _, sequence = message_id.partition("-")
    return int(millis) * 1_000_000 + int(sequence or 0)


def connect_redis(url: str, password: str = "", socket_timeout: float = 5.0) -> redis.Redis:
    """A client that fails fast when Redis is away, so callers can answer 503 quickly."""
    return redis.Redis.from_url(
        url,
        password=password or None,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=2),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


def unavailable_on_failure(operation: Callable[[], T]) -> T:
    """Run a Redis operation; a Redis that is down, hung or refusing raises QueueUnavailable.

    Refusing covers a full Redis (OOM at maxmemory), a replica after a failover (READONLY)
    and a failing disk (MISCONF): nothing was stored, so the vote service answers 503, and
    the worker backs off and retries; a worker that crashed here could never drain the
    backlog that filled Redis.
    """
    try:
        return operation()
    except (*_TRANSIENT, redis.exceptions.ResponseError) as error:
        raise QueueUnavailable(f"redis: {error}") from error


class _Slot:
    """One caller's ballot waiting to be sent, and, later, its stream id or error."""

    __slots__ = ("done", "error", "fields", "lead", "message_id")

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.done = threading.Event()
        self.lead = False
        self.message_id = ""
        self.error: Exception | None = None


class GroupCommitWriter:
    """Concurrent XADDs from one process share one pipelined round trip.

    Each vote costs a network round trip and, with `appendfsync always`, an fsync. Under
    load, the request threads of a process arrive together; the first becomes the
    *leader* and sends everything queued so far in one pipeline, while later arrivals
    wait and form the next batch, led by the oldest of them. Nobody waits for a timer,
    so a single vote is as fast as before, and each caller still gets its own stream
    id only after Redis has written it.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        max_batch: int = 128,
    ) -> None:
        self.client = client
        self.stream = stream
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._leader_busy = False
        # Only the leader writes, and there is one leader at a time, so the writer keeps
        # one connection of the client's pool for itself instead of a checkout per batch.
        self._connection: Any = None  # a redis.connection.Connection; redis-py is untyped here

    def xadd(self, fields: dict[str, str], timeout: float = 10.0) -> str:
        slot = _Slot(fields)
        with self._lock:
            self._waiting.append(slot)
            slot.lead = not self._leader_busy
            self._leader_busy = True
        if not slot.lead and not slot.done.wait(timeout):
            with self._lock:
                # Leave the line, unless a leader took this ballot or handed us the lead
                # just now; a timed-out slot must never be handed the lead later.
                abandoned = not slot.lead and slot in self._waiting
                if abandoned:
                    self._waiting.remove(slot)
            if abandoned:
                raise QueueUnavailable("redis: timed out waiting for a shared write")
            if not slot.lead:
                slot.done.wait()  # in a leader's pipeline: its socket timeout bounds this
        if slot.lead:
            # Let every request that is already runnable join this batch first. Without
            # this, under load a lone first arrival leads a batch of one while the rest
            # queue behind it: twice the round trips and fsyncs. It is a yield, not a
            # timer: with nothing else runnable it returns at once.
            time.sleep(0)
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.message_id

    def _lead(self) -> None:
        with self._lock:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        try:
            replies = unavailable_on_failure(lambda: self._send(batch))
            for slot, reply in zip(batch, replies, strict=True):
                if isinstance(reply, redis.exceptions.ResponseError):
                    slot.error = QueueUnavailable(f"redis: {reply}")
                else:
                    slot.message_id = str(reply)
        except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
            for slot in batch:
                slot.error = error
        with self._lock:
            # Hand the lead to the oldest waiter, so no request serves others for long.
            if self._waiting:
                self._waiting[0].lead = True
                successor: _Slot | None = self._waiting[0]
            else:
                self._leader_busy = False
                successor = None
        for slot in batch:
            slot.done.set()
        if successor is not None:
            successor.done.set()

    def _send(self, batch: list[_Slot]) -> list[Any]:
        """One pipelined write of the batch's XADDs; a reply per slot, in order.

        What redis-py's pipeline does, without its per-call pool checkout and bookkeeping:
        the client's retry policy still reconnects and resends after a dropped connection
        (a resent vote is a harmless replay), and every reply is read before an error
        reply is handed on, so the connection never falls out of step.
        """
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        connection = self._connection
        commands = [
            ("XADD", self.stream, "*", *[part for item in slot.fields.items() for part in item])
            for slot in batch
        ]

        def write() -> list[Any]:
            connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.ResponseError as error:
                    replies.append(error)
            return replies

        def drop(error: Exception) -> None:
            connection.disconnect()

        replies: list[Any] = connection.retry.call_with_retry(write, drop)
        return replies


class RedisVoteQueue:
    """Both ports on one stream: VoteQueue for the vote service, VoteSource for workers."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str = "votes",
        group: str = "workers",
        consumer: str = "worker",
        dead_letter_stream: str = "votes:dead",
        tracing: Tracing | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream
        self._claim_cursor = "0-0"
        self._writer = GroupCommitWriter(client, stream)
        # No tracing given (tests of the queue alone): no spans, and no context in messages.
        self._tracer = tracing.tracer if tracing is not None else NoOpTracer()
        self._producer_name = PRODUCER_SPAN.format(stream=stream)

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return unavailable_on_failure(operation)
        except QueueUnavailable as error:
            cause = error.__cause__
            if isinstance(cause, redis.exceptions.ResponseError) and "NOGROUP" in str(cause):
                # Redis lost the group (a restart without persistence): recreate, retry later.
                self.ensure_group()
                raise QueueUnavailable("redis: consumer group was missing; recreated") from cause
            raise

    # -- producer side (vote service) -----------------------------------------------------

    def enqueue(self, ballot: Ballot) -> str:
        fields = stream_fields(ballot)
        # A child of the request's span; the worker's CONSUMER span continues from it.
        span = self._tracer.start_span(self._producer_name, kind=SpanKind.PRODUCER)
        try:
            inject(fields, span)
            # With `appendfsync always` Redis answers only after the AOF write is on disk,
            # so a returned id is a durable vote.
            message_id = self._writer.xadd(fields)
            if span.is_recording():
                span.set_attributes(
                    {
                        "messaging.system": "redis",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": self.stream,
                        "messaging.message.id": message_id,
                    }
                )
            return message_id
        except Exception as error:
            fail(span, error)
            raise
        finally:
            span.end()

    def depth(self) -> int:
        # Acknowledged messages are deleted at once, so the length is what is still owed.
        return int(self._call(lambda: self.client.xlen(self.stream)))

    def oldest_waiting(self) -> float | None:
        # The stream's first entry is the oldest vote still owed (see depth), and its id
        # is the millisecond Redis accepted it.
        first: Any = self._call(lambda: self.client.xrange(self.stream, count=1))
        if not first:
            return None
        return int(str(first[0][0]).partition("-")[0]) / 1000

    def ping(self) -> None:
        self._call(self.client.ping)

    # -- consumer side (worker) -------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and group if needed; id 0 so votes queued earlier are kept."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                # At maxmemory even XGROUP CREATE of an existing group is refused (OOM).
                raise QueueUnavailable(f"redis: {error}") from error
        except _TRANSIENT as error:
            raise QueueUnavailable(f"redis: {error}") from error

    def receive(self, max_count: int, block_ms: int) -> list[Delivery]:
        reply: Any = self._call(
            lambda: self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=max_count, block=block_ms
            )
        )
        if not reply:
            return []
        return [_delivery(message_id, fields) for message_id, fields in reply[0][1]]

    def claim_stale_votes(self, min_idle_ms: int, max_count: int) -> list[Delivery]:
        reply: Any = self._call(
            lambda: self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=min_idle_ms,
                start_id=self._claim_cursor,
                count=max_count,
            )
        )
        next_cursor, messages = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self._claim_cursor = next_cursor
        if deleted:
            # Pending ids whose data is gone: something trimmed the stream behind our back.
            log.error("queue.pending_without_data", extra={"ids": deleted})
            self._call(lambda: self.client.xack(self.stream, self.group, *deleted))
        return [_delivery(message_id, fields) for message_id, fields in messages if fields]

    def acknowledge(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return

        def ack_and_delete() -> None:
            # No MULTI: at maxmemory Redis refuses every command queued inside MULTI, but
            # still runs XACK and XDEL, and XDEL is what frees the memory. Both go in one
            # write; a cut between them leaves an acknowledged entry, never a lost vote.
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *message_ids)
            # Deleting keeps the stream as small as the backlog; no MAXLEN trim can ever
            # cut a message that is still pending.
            pipe.xdel(self.stream, *message_ids)
            pipe.execute()

        self._call(ack_and_delete)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        def park() -> None:
            pipe = self.client.pipeline(transaction=True)
            parked: dict[Any, Any] = {
                **delivery.fields,
                "original_id": delivery.message_id,
                "reason": reason,
            }
            pipe.xadd(self.dead_letter_stream, parked)
            pipe.xack(self.stream, self.group, delivery.message_id)
            pipe.xdel(self.stream, delivery.message_id)
            pipe.execute()

        self._call(park)

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        entries: Any = self._call(lambda: self.client.xrange(self.dead_letter_stream, count=count))
        return [dict(fields) for _, fields in entries]


def _delivery(message_id: str, fields: dict[str, str]) -> Delivery:
    return Delivery(message_id, stream_id_to_version(message_id), dict(fields))
