"""Live results: one reader per process, fanned out to every open stream.

A room of 1,000 phones watching one chart must cost the database what one viewer costs.
So viewers never read the store. One feed thread per process waits for the store to say
which polls changed (PostgreSQL LISTEN/NOTIFY, or polling where the store cannot say),
reads each changed poll once, and hands the same encoded snapshot to every subscriber.
Bursts are coalesced: a poll is read at most once per `min_interval_s`, and always after
its last change, so viewers see the latest counts a few times a second at most.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from cloudvote.application.pipeline import PipelineView
from cloudvote.application.results import ResultsView
from cloudvote.domain.pipeline import PipelineStatus
from cloudvote.domain.results import PollResults
from cloudvote.ports.store import StoreUnavailable, TallyChanges

log = logging.getLogger("cloudvote.live_results")


class StreamLimitReached(RuntimeError):
    """This process already serves its maximum of open streams; try again later."""


class LiveResultsObserver(Protocol):
    def store_read(self) -> None: ...
    def streams_open(self, delta: int) -> None: ...
    def stream_refused(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What every viewer of a poll is shown, encoded once for all of them."""

    version: int
    results: PollResults | None  # None: the store is down and nothing was seen yet
    json: str
    # The pipeline panel's state, shared by every poll's viewers; a stream sends it when
    # it is not the object it last sent.
    pipeline_json: str | None = None


def encode(poll_id: str, results: PollResults | None) -> str:
    body = results.as_json() if results is not None else {"poll": poll_id, "unavailable": True}
    return json.dumps(body, separators=(",", ":"))


class _Channel:
    """A poll's latest snapshot, and an event that is set (then replaced) when it changes.

    Waking a room through one set() matters: with a shared Condition every woken stream
    queues for the one lock in turn, and under gevent 2,500 streams a process took over a
    second to wake; an Event wakes all its waiters in one pass.
    """

    __slots__ = ("changed", "loading", "snapshot", "subscribers")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.changed = threading.Event()
        self.subscribers = 0
        self.loading = False

    def publish(self, snapshot: Snapshot | None) -> None:
        # Snapshot first, then the new event, then wake: a reader that takes the event
        # before the snapshot (see _next_snapshot) can never miss this change.
        self.snapshot = snapshot
        changed, self.changed = self.changed, threading.Event()
        changed.set()


class PollingTallyChanges:
    """The fallback for stores that cannot announce changes (SQLite, the fakes): it says
    "cannot tell" every interval, and the feed re-reads the polls it shows and compares."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self._closed = threading.Event()

    def wait(self, timeout: float) -> set[str] | None:
        self._closed.wait(min(timeout, self.interval_s))
        return None

    def close(self) -> None:
        self._closed.set()


class Subscription:
    """One open stream's place in a poll's channel; close it when the stream ends."""

    def __init__(self, live: LiveResults, poll_id: str) -> None:
        self.live = live
        self.poll_id = poll_id
        self._closed = False

    def latest_pipeline_json(self) -> str | None:
        """The pipeline state as last read, for a stream's first pipeline event.

        A snapshot carries the state encoded when it last changed, and its `as_of` dates
        it: a viewer that arrives a minute later must start from the latest read, or
        every age on its panel would be a minute short.
        """
        return self.live._pipeline_latest_json

    def next(self, after_version: int, timeout: float) -> Snapshot | None:
        """The poll's snapshot once it is newer than `after_version`; None on timeout
        or when the process is stopping."""
        return self.live._next_snapshot(self.poll_id, after_version, timeout)

    @property
    def ended(self) -> bool:
        """The process is stopping: the stream should finish now."""
        return self.live.stopped

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.live._unsubscribe(self.poll_id)


class LiveResults:
    def __init__(
        self,
        view: ResultsView,
        changes: TallyChanges,
        *,
        max_streams: int,
        min_interval_s: float = 0.2,
        resync_s: float = 30.0,
        observer: LiveResultsObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        pipeline: PipelineView | None = None,
        pipeline_every_s: float = 1.0,
    ) -> None:
        self.view = view
        self.changes = changes
        self.max_streams = max_streams
        self.min_interval_s = min_interval_s
        self.resync_s = resync_s
        self.observer = observer
        self.clock = clock
        self._lock = threading.Lock()
        self._channels: dict[str, _Channel] = {}
        self._open_streams = 0
        self._version = 0
        self._stopped = threading.Event()
        self._feed: threading.Thread | None = None
        # One read of the workers' reports per interval per process, however many watch.
        self.pipeline = pipeline
        self.pipeline_every_s = pipeline_every_s
        self._pipeline: PipelineStatus | None = None
        self._pipeline_json: str | None = None  # encoded when it last changed
        self._pipeline_latest_json: str | None = None  # encoded at every read
        self._pipeline_read_at = 0.0
        self._pipeline_seen_at = 0.0

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def open_streams(self) -> int:
        return self._open_streams

    # -- what viewers call -------------------------------------------------------------------

    def current(self, poll_id: str) -> PollResults:
        """The poll's counts: the feed's snapshot while someone watches it, else one read.

        Raises UnknownPoll, or StoreUnavailable when there is nothing to show.
        """
        self.view.catalog.require(poll_id)
        with self._lock:
            channel = self._channels.get(poll_id)
            if channel is not None and channel.subscribers and channel.snapshot is not None:
                if channel.snapshot.results is None:
                    raise StoreUnavailable("the vote store has not answered yet")
                return channel.snapshot.results
        return self._read(poll_id)

    def pipeline_status(self) -> PipelineStatus | None:
        """The pipeline panel's state: the feed's copy while it is fresh, else one read;
        None when this shape has no pipeline to show."""
        if self.pipeline is None:
            return None
        with self._lock:
            kept, read_at = self._pipeline, self._pipeline_seen_at
        if kept is not None and self.clock() - read_at <= 2 * self.pipeline_every_s:
            return kept
        return self.pipeline.status()

    def subscribe(self, poll_id: str) -> Subscription:
        """Join a poll's channel; raises StreamLimitReached past `max_streams`."""
        self.view.catalog.require(poll_id)
        with self._lock:
            if self._open_streams >= self.max_streams:
                refused = True
            else:
                refused = False
                self._open_streams += 1
                channel = self._channels.setdefault(poll_id, _Channel())
                channel.subscribers += 1
                first_read = channel.snapshot is None and not channel.loading
                if first_read:
                    channel.loading = True
        if refused:
            if self.observer:
                self.observer.stream_refused()
            raise StreamLimitReached(
                f"this server already streams results to {self.max_streams} viewers"
            )
        if self.observer:
            self.observer.streams_open(1)
        self._start_feed()
        subscription = Subscription(self, poll_id)
        if first_read:
            # Only the first viewer of a quiet poll reads it; a crowd that arrives at once
            # waits for that one read instead of each sending its own.
            try:
                self._refresh(poll_id)
            except BaseException:
                subscription.close()
                raise
            finally:
                with self._lock:
                    channel.loading = False
        return subscription

    def stop(self) -> None:
        """End the feed and wake every stream, so they finish (SIGTERM)."""
        self._stopped.set()
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            channel.publish(channel.snapshot)

    # -- subscription internals --------------------------------------------------------------

    def _next_snapshot(self, poll_id: str, after_version: int, timeout: float) -> Snapshot | None:
        channel = self._channels[poll_id]
        deadline = self.clock() + timeout
        while not self._stopped.is_set():
            changed = channel.changed
            snapshot = channel.snapshot
            if snapshot is not None and snapshot.version > after_version:
                return snapshot
            remaining = deadline - self.clock()
            if remaining <= 0 or not changed.wait(remaining):
                return None
        return None

    def _unsubscribe(self, poll_id: str) -> None:
        with self._lock:
            self._open_streams -= 1
            channel = self._channels[poll_id]
            channel.subscribers -= 1
            if not channel.subscribers:
                # Nobody watches it now, so the feed stops refreshing it: the next viewer
                # must start from a fresh read, not from this snapshot.
                channel.snapshot = None
        if self.observer:
            self.observer.streams_open(-1)

    # -- the feed ----------------------------------------------------------------------------

    def _start_feed(self) -> None:
        with self._lock:
            if self._feed is not None or self._stopped.is_set():
                return
            # Started by the first viewer, in the serving process itself: after gunicorn's
            # fork, and after gevent has patched threading, so the feed is a greenlet there.
            self._feed = threading.Thread(target=self._run_feed, name="results-feed", daemon=True)
        self._feed.start()

    def _watched(self) -> set[str]:
        with self._lock:
            return {poll for poll, channel in self._channels.items() if channel.subscribers}

    def _run_feed(self) -> None:
        backoff = 0.1
        last_read = 0.0
        next_resync = self.clock() + self.resync_s
        while not self._stopped.is_set():
            next_pipeline = self._refresh_pipeline_if_due()
            try:
                changed = self.changes.wait(
                    max(0.0, min(next_resync, next_pipeline) - self.clock())
                )
                if self._stopped.is_set():
                    break
                # Coalesce: however many commits arrive, read each poll at most once per
                # interval; commits that land while we wait join this same read.
                pause = last_read + self.min_interval_s - self.clock()
                if changed and pause > 0:
                    self._stopped.wait(pause)
                    more = self.changes.wait(0)
                    changed = None if more is None else changed | more
                backoff = 0.1
                watched = self._watched()
                if changed is None or self.clock() >= next_resync:
                    to_read = watched
                    next_resync = self.clock() + self.resync_s
                else:
                    to_read = changed & watched
                    self._forget(changed - watched)
                for poll_id in sorted(to_read):
                    self._refresh(poll_id)
                if to_read:
                    last_read = self.clock()
            except StoreUnavailable as error:
                log.warning("results.feed_down", extra={"error": str(error), "retry_in_s": backoff})
                self._mark_stale()
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                # Anything else (a schema not migrated yet, a bug) must not end the one
                # feed of the process for good: every viewer would freeze on old counts.
                log.exception("results.feed_failed", extra={"retry_in_s": backoff})
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                # The changes this round took are gone with it: re-read everything watched.
                next_resync = 0.0
        # Closed here, by the thread that waits on it, never from under its wait.
        self.changes.close()

    def _refresh_pipeline_if_due(self) -> float:
        """Read the pipeline when due and someone watches; returns when it is due next.

        Viewers get a new snapshot only when what they see changes: a steady idle report
        costs one read per interval and no write to any stream.
        """
        if self.pipeline is None:
            return float("inf")
        now = self.clock()
        due = self._pipeline_read_at + self.pipeline_every_s
        if now < due:
            return due
        self._pipeline_read_at = now
        if not self._watched():
            return now + self.pipeline_every_s
        try:
            status = self.pipeline.status()
        except Exception:
            # Not the store being down (the view reports that), but, say, a schema not
            # migrated yet: the chart must go on; try again in a few intervals.
            log.exception("results.pipeline_failed")
            self._pipeline_read_at = now + 4 * self.pipeline_every_s
            return self._pipeline_read_at + self.pipeline_every_s
        encoded = json.dumps(status.as_json(), separators=(",", ":"))
        with self._lock:
            unchanged = status.same_state(self._pipeline)
            self._pipeline, self._pipeline_seen_at = status, now
            self._pipeline_latest_json = encoded
            if unchanged:
                return now + self.pipeline_every_s
            self._pipeline_json = encoded
            for channel in self._channels.values():
                if channel.subscribers and channel.snapshot is not None:
                    self._version += 1
                    channel.publish(
                        replace(
                            channel.snapshot,
                            version=self._version,
                            pipeline_json=self._pipeline_json,
                        )
                    )
        return now + self.pipeline_every_s

    def _read(self, poll_id: str) -> PollResults:
        if self.observer:
            self.observer.store_read()
        return self.view.results(poll_id)

    def _refresh(self, poll_id: str) -> None:
        try:
            results: PollResults | None = self._read(poll_id)
        except StoreUnavailable:
            results = None
        self._publish(poll_id, results)

    def _publish(self, poll_id: str, results: PollResults | None) -> None:
        with self._lock:
            channel = self._channels.setdefault(poll_id, _Channel())
            if channel.snapshot is not None and channel.snapshot.results == results:
                return
            if results is None and channel.snapshot is not None:
                return  # keep showing what we had; the view marks it stale when it can
            self._version += 1
            channel.publish(
                Snapshot(self._version, results, encode(poll_id, results), self._pipeline_json)
            )

    def _mark_stale(self) -> None:
        """The feed lost the store: viewers keep their counts, marked stale."""
        for poll_id in self._watched():
            with self._lock:
                snapshot = self._channels[poll_id].snapshot
            if snapshot is not None and snapshot.results is not None:
                last = snapshot.results
                self._publish(poll_id, PollResults(last.poll_id, dict(last.counts), stale=True))

    def _forget(self, poll_ids: set[str]) -> None:
        """Changed polls nobody watches: drop their snapshot, so the next reader reads."""
        with self._lock:
            for poll_id in poll_ids:
                channel = self._channels.get(poll_id)
                if channel is not None and not channel.subscribers:
                    channel.snapshot = None
