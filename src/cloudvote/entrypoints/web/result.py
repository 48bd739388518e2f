"""The result service's routes: the live chart page, the JSON API and the SSE stream."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request

from cloudvote.application.live_results import LiveResults, StreamLimitReached, Subscription
from cloudvote.domain.polls import Poll
from cloudvote.domain.results import PollResults
from cloudvote.entrypoints.web.observed import error_response
from cloudvote.ports.store import StoreUnavailable

# A comment line keeps idle proxies (nginx, cloud load balancers) from closing the stream.
STREAM_HEARTBEAT_SECONDS = 15.0
# Streams end after a while and the browser reconnects by itself; this spreads clients
# across new pods after a rollout instead of pinning them to old ones forever. Each stream
# lives a random 75-100 % of it, so a room that connected together does not reconnect
# together every five minutes.
STREAM_MAX_SECONDS = 300.0
STREAM_LIFE_JITTER = (0.75, 1.0)
# Browsers reconnect after this many ms, each picking its own delay in the range, so a
# thousand viewers dropped at once by a restart do not all come back in the same instant.
RECONNECT_MS = (1000, 5000)
# A viewer refused at the cap tries again after this; the page adds its own backoff.
FULL_RETRY_AFTER_SECONDS = "5"


def result_blueprint(live: LiveResults, stopping: threading.Event) -> Blueprint:
    """`stopping` is set when the process is asked to stop: every open stream ends then."""
    catalog = live.view.catalog
    bp = Blueprint("result", __name__)
    stop_streams_on_shutdown(live, stopping)

    @bp.get("/results")
    def default_page() -> Response:
        return _page(live, catalog.default)

    @bp.get("/results/<poll_id>")
    def poll_page(poll_id: str) -> Response:
        return _page(live, catalog.require(poll_id))

    @bp.get("/api/polls/<poll_id>/results")
    def api_results(poll_id: str) -> Response:
        try:
            results = live.current(poll_id)
        except StoreUnavailable:
            return error_response(
                503,
                "results are unavailable: the vote store cannot be reached",
                **{"Retry-After": "2"},
            )
        response = jsonify(results.as_json())
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/api/pipeline")
    def api_pipeline() -> Response:
        """The pipeline panel's data: queue, lag, last batch, store, vote replicas."""
        status = live.pipeline_status()
        if status is None:
            return error_response(404, "this service shows no pipeline")
        response = jsonify(status.as_json())
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/api/polls/<poll_id>/results/stream")
    def api_results_stream(poll_id: str) -> Response:
        try:
            subscription = live.subscribe(poll_id)
        except StreamLimitReached as error:
            return error_response(
                503,
                f"{error}; nothing is lost, retry in a few seconds",
                **{"Retry-After": FULL_RETRY_AFTER_SECONDS},
            )
        response = Response(
            _stream(subscription, request.environ), content_type="text/event-stream"
        )
        # The slot is also freed when the stream never starts: werkzeug closes a HEAD
        # answer's body unread, so the generator's own cleanup would never run.
        response.call_on_close(subscription.close)
        response.headers["Cache-Control"] = "no-store"
        # Tell nginx not to buffer, or updates would arrive in bursts.
        response.headers["X-Accel-Buffering"] = "no"
        return response

    return bp


def stop_streams_on_shutdown(live: LiveResults, stopping: threading.Event) -> None:
    """On SIGTERM, end every open stream at once, so the process exits well within its
    grace period; the browsers reconnect to another pod."""

    def wait_then_stop() -> None:
        stopping.wait()
        live.stop()

    threading.Thread(target=wait_then_stop, name="streams-shutdown", daemon=True).start()


def _page(live: LiveResults, poll: Poll) -> Response:
    # Rendered with the current counts, so the page is right on first paint, with
    # JavaScript off and for curl; the stream then moves the bars from there.
    results: PollResults | None
    try:
        results = live.current(poll.id)
    except StoreUnavailable:
        results = None
    catalog = live.view.catalog
    pipeline = live.pipeline_status()
    html = render_template(
        "results.html",
        poll=poll,
        polls=list(catalog),
        results=results,
        pipeline=pipeline.as_json() if pipeline is not None else None,
        lag=pipeline.lag() if pipeline is not None else None,
        stream_url=f"/api/polls/{poll.id}/results/stream",
        api_url=f"/api/polls/{poll.id}/results",
        vote_url="/" if poll.id == catalog.default.id else f"/polls/{poll.id}",
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


def _stream(subscription: Subscription, environ: Mapping[str, Any]) -> Iterator[str]:
    """Server-sent events: the snapshot the feed encoded once for every viewer.

    A snapshot carries the poll's counts and the pipeline panel's state; each is sent only
    when it is not the very object this stream sent last (an identity check, no compare).
    """
    try:
        yield f"retry: {random.randint(*RECONNECT_MS)}\n\n"
        seen = 0
        sent_results: str | None = None
        sent_pipeline: str | None = None
        ends_at = time.monotonic() + STREAM_MAX_SECONDS * random.uniform(*STREAM_LIFE_JITTER)
        while not subscription.ended:
            remaining = ends_at - time.monotonic()
            if remaining <= 0:
                break
            snapshot = subscription.next(seen, min(STREAM_HEARTBEAT_SECONDS, remaining))
            if snapshot is not None:
                seen = snapshot.version
                if snapshot.json is not sent_results:
                    sent_results = snapshot.json
                    yield f"event: results\ndata: {snapshot.json}\n\n"
                if (
                    snapshot.pipeline_json is not None
                    and snapshot.pipeline_json is not sent_pipeline
                ):
                    # The first state this stream sends is the latest read, so its ages
                    # are current; after that, only a changed state is news.
                    first = sent_pipeline is None
                    sent_pipeline = snapshot.pipeline_json
                    data = (first and subscription.latest_pipeline_json()) or sent_pipeline
                    yield f"event: pipeline\ndata: {data}\n\n"
            elif _viewer_left(environ):
                break  # its slot goes to the next viewer now, not after two failed writes
            elif not subscription.ended:
                yield ": keep-alive\n\n"
    finally:
        subscription.close()


def _viewer_left(environ: Mapping[str, Any]) -> bool:
    """True when the viewer has closed the stream's connection.

    A server learns of a closed connection only when a write fails, and the first write
    after the close still succeeds, so a closed tab would hold its stream slot for two
    keep-alives. A viewer never sends anything after its request, so a readable socket
    means the end of the connection. A non-blocking peek checks without waiting, under
    gevent and threads alike (select() would refuse descriptors above 1,023, which a
    process holding thousands of streams has).
    """
    connection = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if connection is None:
        return False
    try:
        previous = connection.gettimeout()
        connection.settimeout(0)
        try:
            return bool(connection.recv(1, socket.MSG_PEEK) == b"")
        except BlockingIOError:
            return False  # nothing to read: the viewer is still there
        finally:
            connection.settimeout(previous)
    except OSError:
        return True
