"""Thousands of live-results viewers from one process: concurrent server-sent-event streams.

The e2e tests and bench/fanout.py both need many `GET .../results/stream` connections held
open at once, each one watched like a browser's EventSource would. A thread or a task per
stream would cost more than the server being measured, so each stream here is one
`asyncio.Protocol` on one event loop: plain HTTP/1.1 over `loop.create_connection`, no
dependency beyond the standard library. A task exists only while a stream connects, and a
semaphore bounds how many connect at once, so the server's listen backlog never overflows.

Per stream it records what a test or benchmark asks about: the connect outcome (200, 503
with its `Retry-After` and body, or an error), when the first `results` event arrived, and
every `results` event as (receive time, total). Times are `time.monotonic()`, comparable
with any other monotonic time taken in the process (a vote's 202, say).

`SseCrowd` is the asyncio API (`async with SseCrowd(url, 100) as crowd: ...`);
`ThreadedSseCrowd` runs one on a background thread for synchronous code such as pytest.
Every wait takes a timeout, and closing either one closes every stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

# A non-200 answer (a 503 from the stream cap, a 404) is read up to this much, then closed.
_MAX_ERROR_BODY = 64 * 1024
# Refuse to start rather than fail half-way with EMFILE: the process needs a few spare fds.
_SPARE_FDS = 64
# How often a wait re-counts the streams; a scan of 5,000 records takes well under 1 ms.
_WAIT_INTERVAL = 0.02


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit.

    Only this process (and children it starts afterwards) is affected, never the system.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if target > soft:
        with contextlib.suppress(ValueError, OSError):  # e.g. above fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class StreamRecord:
    """What one viewer saw. `status` is None until headers arrive, or if it never got any."""

    index: int
    opened_at: float
    status: int | None = None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    answered_at: float | None = None
    first_event_at: float | None = None
    # (receive time, total) of every `results` event that carried a total.
    events: list[tuple[float, int]] = field(default_factory=list)
    last_payload: dict[str, Any] | None = None
    max_total: int = -1
    retry_ms: int | None = None
    comments: int = 0
    ended_at: float | None = None
    closed_by_us: bool = False

    @property
    def outcome(self) -> str:
        """The HTTP status as text ("200", "503"), or "error" when no answer came."""
        return str(self.status) if self.status is not None else "error"

    @property
    def live(self) -> bool:
        """Answered 200 and still open: the stream should receive every update."""
        return self.status == 200 and self.ended_at is None and not self.closed_by_us

    def first_total_at(self, total: int) -> float | None:
        """When the first event with a total of at least `total` arrived (None: never)."""
        for received, seen in self.events:
            if seen >= total:
                return received
        return None

    def json_body(self) -> Any:
        return json.loads(self.body)


class _StreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 response, parsed as it arrives: status and headers, then the body
    (chunked, sized or until close), then server-sent events out of the body."""

    def __init__(self, record: StreamRecord, max_events: int) -> None:
        self.record = record
        self.max_events = max_events
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._remaining: int | None = None  # Content-Length left to read, if sized
        self._raw = bytearray()  # undecoded chunked bytes
        self._chunk_left = 0  # payload bytes left in the current chunk
        self._crlf_left = 0  # bytes of the CRLF after a chunk still to skip
        self._events = bytearray()  # decoded body not yet split into events

    # -- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self._body_bytes(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head.clear()
        self._parse_head(head)
        if rest:
            self._body_bytes(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        record = self.record
        if record.ended_at is None:
            record.ended_at = time.monotonic()
        if not self.answered.done():
            if record.error is None and record.status is None:
                record.error = f"{type(exc).__name__}: {exc}" if exc else "closed before answering"
            self.answered.set_result(None)

    # -- parsing -------------------------------------------------------------------------
    def _parse_head(self, head: bytes) -> None:
        record = self.record
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            record.status = int(parts[1])
        except (IndexError, ValueError):
            record.error = f"not an HTTP response: {lines[0][:80]!r}"
            self._close()
            return
        for line in lines[1:]:
            name, _, value = line.partition(":")
            record.headers[name.strip().lower()] = value.strip()
        record.answered_at = time.monotonic()
        self._in_body = True
        self._chunked = "chunked" in record.headers.get("transfer-encoding", "").lower()
        if "content-length" in record.headers and not self._chunked:
            self._remaining = int(record.headers["content-length"])
        # A refusal counts as answered once its body is in (see _decoded), so a caller
        # can read the error message as soon as open() returns.
        if record.status == 200 or not self._remaining:
            self.answered.set_result(None)
        if self._remaining == 0:
            self._close()

    def _body_bytes(self, data: bytes) -> None:
        if not self._chunked:
            if self._remaining is not None:
                data = data[: self._remaining]
                self._remaining -= len(data)
            self._decoded(data)
            if self._remaining == 0:
                self._close()
            return
        self._raw += data
        while self._raw:
            if self._crlf_left:  # the CRLF that ends a chunk, possibly split across reads
                skipped = min(self._crlf_left, len(self._raw))
                del self._raw[:skipped]
                self._crlf_left -= skipped
                continue
            if self._chunk_left == 0:
                line_end = self._raw.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(bytes(self._raw[:line_end]).split(b";")[0] or b"0", 16)
                del self._raw[: line_end + 2]
                if size == 0:  # the last chunk: the server ended the response
                    self._close()
                    return
                self._chunk_left = size
                continue
            taken = bytes(self._raw[: self._chunk_left])
            del self._raw[: len(taken)]
            self._chunk_left -= len(taken)
            if self._chunk_left == 0:
                self._crlf_left = 2
            self._decoded(taken)

    def _decoded(self, data: bytes) -> None:
        record = self.record
        if record.status != 200:
            room = _MAX_ERROR_BODY - len(record.body)
            record.body += data[:room]
            if room <= len(data) or self._remaining == 0:
                if not self.answered.done():
                    self.answered.set_result(None)
                self._close()
            return
        self._events += data
        if b"\r" in self._events:
            self._events[:] = self._events.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        while True:
            end = self._events.find(b"\n\n")
            if end < 0:
                return
            block = bytes(self._events[:end])
            del self._events[: end + 2]
            self._dispatch(block)

    def _dispatch(self, block: bytes) -> None:
        """One event block, per the HTML spec's event-stream rules (fields we use)."""
        record = self.record
        kind, data = "message", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith(":"):
                record.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "retry" and value.isdigit():
                record.retry_ms = int(value)
        if kind != "results" or not data:
            return
        received = time.monotonic()
        if record.first_event_at is None:
            record.first_event_at = received
        try:
            payload = json.loads("\n".join(data))
        except ValueError:
            return
        record.last_payload = payload
        total = payload.get("total") if isinstance(payload, dict) else None
        if isinstance(total, int):
            record.max_total = max(record.max_total, total)
            if len(record.events) < self.max_events:
                record.events.append((received, total))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SseCrowd:
    """Many concurrent SSE streams to one URL, on the running event loop.

    `async with SseCrowd(url, 500) as crowd:` opens 500 streams and returns once each has
    an answer or failed; `open()` adds more. Each stream waits at most `answer_timeout`
    for its response headers, and one `open()` call starts no connection after
    `open_timeout`: against a server that answers nobody, it still ends.
    """

    def __init__(
        self,
        url: str,
        streams: int = 0,
        *,
        connect_concurrency: int = 200,
        answer_timeout: float = 10.0,
        open_timeout: float = 60.0,
        max_events_per_stream: int = 10_000,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// URL is needed, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode("latin-1")
        self.initial = streams
        self.connect_concurrency = connect_concurrency
        self.answer_timeout = answer_timeout
        self.open_timeout = open_timeout
        self.max_events = max_events_per_stream
        self.fd_limit = raise_open_file_limit()
        self.streams: list[StreamRecord] = []
        self._protocols: dict[int, _StreamProtocol] = {}
        self._opening: set[asyncio.Task[None]] = set()
        self._gate: asyncio.Semaphore | None = None

    async def __aenter__(self) -> Self:
        if self.initial:
            await self.open(self.initial)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- opening and closing -------------------------------------------------------------
    async def open(self, count: int, *, wait: bool = True) -> list[StreamRecord]:
        """Start `count` more streams; with `wait`, return once each is answered or failed."""
        wanted = len(self._protocols) + len(self._opening) + count
        if wanted + _SPARE_FDS > self.fd_limit:
            raise ValueError(
                f"{wanted} streams need more file descriptors than RLIMIT_NOFILE allows "
                f"({self.fd_limit}); raise the hard limit (ulimit -Hn)"
            )
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.connect_concurrency)
        now = time.monotonic()
        records = [StreamRecord(len(self.streams) + n, now) for n in range(count)]
        self.streams.extend(records)
        deadline = now + self.open_timeout
        tasks = [asyncio.create_task(self._open_one(record, deadline)) for record in records]
        self._opening.update(tasks)
        for task in tasks:
            task.add_done_callback(self._opening.discard)
        if wait and tasks:
            await asyncio.gather(*tasks)
        return records

    async def _open_one(self, record: StreamRecord, deadline: float) -> None:
        assert self._gate is not None
        loop = asyncio.get_running_loop()
        async with self._gate:
            record.opened_at = time.monotonic()
            if record.opened_at >= deadline:
                record.error = f"not opened: open() ran past {self.open_timeout}s"
                return
            protocol: _StreamProtocol | None = None
            try:
                async with asyncio.timeout(min(self.answer_timeout, deadline - record.opened_at)):
                    _, protocol = await loop.create_connection(
                        lambda: _StreamProtocol(record, self.max_events), self.host, self.port
                    )
                    self._protocols[record.index] = protocol
                    assert protocol.transport is not None
                    protocol.transport.write(self._request)
                    await protocol.answered
            except TimeoutError:
                waited = time.monotonic() - record.opened_at
                record.error = f"no answer within {waited:.0f}s"
            except OSError as error:
                record.error = f"{type(error).__name__}: {error}"
            if record.error is not None and protocol is not None:
                self._drop(record.index)

    def close(self, records: list[StreamRecord]) -> None:
        """Close these streams from our side, as a viewer closing the tab would."""
        for record in records:
            record.closed_by_us = True
            self._drop(record.index, graceful=True)

    def _drop(self, index: int, graceful: bool = False) -> None:
        protocol = self._protocols.pop(index, None)
        if protocol is not None and protocol.transport is not None:
            if graceful:
                protocol.transport.close()
            else:
                protocol.transport.abort()

    async def aclose(self) -> None:
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        for index in list(self._protocols):
            self._drop(index)
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks

    # -- waiting -------------------------------------------------------------------------
    async def wait_for_first_events(self, timeout: float) -> int:
        """Wait until every answered-200 stream (and every one still connecting) has had
        a first `results` event; return how many have one. Bounded by `timeout`."""

        def settled(record: StreamRecord) -> bool:
            if record.first_event_at is not None:
                return True
            if record.status is None:
                return record.error is not None
            return record.status != 200 or record.ended_at is not None

        await self._wait(lambda: all(settled(r) for r in self.streams), timeout)
        return sum(1 for r in self.streams if r.first_event_at is not None)

    async def wait_for_total(self, total: int, timeout: float) -> int:
        """Wait until every live stream has seen an event with a total of at least `total`;
        return how many streams saw one. Bounded by `timeout`."""

        def waiting(record: StreamRecord) -> bool:
            if record.max_total >= total:
                return False
            return record.live or (record.status is None and record.error is None)

        await self._wait(lambda: not any(waiting(r) for r in self.streams), timeout)
        return sum(1 for r in self.streams if r.max_total >= total)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(_WAIT_INTERVAL)

    # -- reading -------------------------------------------------------------------------
    def live(self) -> list[StreamRecord]:
        return [r for r in self.streams if r.live]

    def outcomes(self) -> Counter[str]:
        """How the streams were answered: {"200": 98, "503": 2, "error": 0}-style counts."""
        return Counter(r.outcome for r in self.streams)

    def summary(self) -> str:
        """One line for an assertion message: outcomes, events, endings, a sample error."""
        errors = Counter(r.error for r in self.streams if r.error)
        first = sum(1 for r in self.streams if r.first_event_at is not None)
        ended = sum(
            1 for r in self.streams if r.status == 200 and r.ended_at and not r.closed_by_us
        )
        totals = Counter(r.max_total for r in self.streams)
        return (
            f"{len(self.streams)} streams: outcomes {dict(self.outcomes())}, "
            f"{first} with a first event, {ended} answered 200 then ended by the server, "
            f"highest totals {dict(totals.most_common(4))}, errors {dict(errors.most_common(3))}"
        )


class ThreadedSseCrowd:
    """An `SseCrowd` on its own event loop in a background thread, for synchronous callers.

    `with ThreadedSseCrowd(url, 100) as crowd: crowd.wait_for_total(5, timeout=10)`. Every
    call is bounded; records handed out are copies, safe to read on the caller's thread.
    """

    def __init__(self, url: str, streams: int = 0, **options: Any) -> None:
        self._crowd = SseCrowd(url, 0, **options)
        self.initial = streams
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sse-crowd", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            if self.initial:
                self.open(self.initial)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout + 30)  # the coroutine bounds itself; this is a backstop
        except BaseException:
            future.cancel()
            raise

    def open(self, count: int) -> list[StreamRecord]:
        """Open `count` more streams and return (copies of) their records once answered."""
        records = self._call(self._crowd.open(count), self._crowd.open_timeout)
        return self._copies(records)

    def wait_for_first_events(self, timeout: float) -> int:
        return self._call(self._crowd.wait_for_first_events(timeout), timeout)

    def wait_for_total(self, total: int, timeout: float) -> int:
        return self._call(self._crowd.wait_for_total(total, timeout), timeout)

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Call `function` on the crowd's loop, where its records are safe to touch."""

        async def call() -> T:
            return function()

        return self._call(call(), 10)

    def close_streams(self, records: list[StreamRecord]) -> None:
        """Close the streams these records (or copies of them) describe."""
        self._on_loop(lambda: self._crowd.close([self._crowd.streams[r.index] for r in records]))

    def streams(self) -> list[StreamRecord]:
        """A snapshot of every stream's record."""
        return self._on_loop(lambda: self._copies(self._crowd.streams))

    def live(self) -> list[StreamRecord]:
        return [r for r in self.streams() if r.live]

    def outcomes(self) -> Counter[str]:
        return Counter(r.outcome for r in self.streams())

    def summary(self) -> str:
        return self._on_loop(self._crowd.summary)

    @staticmethod
    def _copies(records: list[StreamRecord]) -> list[StreamRecord]:
        return [
            dataclasses.replace(r, events=list(r.events), headers=dict(r.headers)) for r in records
        ]

    def close(self) -> None:
        """Close every stream and stop the loop; idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._crowd.aclose(), 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
