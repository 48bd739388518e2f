"""The result service's routes: the live chart page, the JSON API and the SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, render_template

from cloudvote.application.results import ResultsView
from cloudvote.domain.polls import Poll
from cloudvote.entrypoints.web.observed import error_response, shutting_down
from cloudvote.ports.store import StoreUnavailable

# How often a stream re-reads the tallies; the freshness benchmark measures the result.
STREAM_POLL_SECONDS = 0.25
# A comment line keeps idle proxies (nginx, cloud load balancers) from closing the stream.
STREAM_HEARTBEAT_SECONDS = 15.0
# Streams end after a while and the browser reconnects by itself; this spreads clients
# across new pods after a rollout instead of pinning them to old ones forever.
STREAM_MAX_SECONDS = 300.0


def result_blueprint(view: ResultsView) -> Blueprint:
    catalog = view.catalog
    bp = Blueprint("result", __name__)

    @bp.get("/results")
    def default_page() -> Response:
        return _page(view, catalog.default)

    @bp.get("/results/<poll_id>")
    def poll_page(poll_id: str) -> Response:
        return _page(view, catalog.require(poll_id))

    @bp.get("/api/polls/<poll_id>/results")
    def api_results(poll_id: str) -> Response:
        catalog.require(poll_id)
        try:
            results = view.results(poll_id)
        except StoreUnavailable:
            return error_response(
                503,
                "results are unavailable: the vote store cannot be reached",
                **{"Retry-After": "2"},
            )
        response = jsonify(results.as_json())
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/api/polls/<poll_id>/results/stream")
    def api_results_stream(poll_id: str) -> Response:
        catalog.require(poll_id)
        response = Response(_stream(view, poll_id), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-store"
        # Tell nginx not to buffer, or updates would arrive in bursts.
        response.headers["X-Accel-Buffering"] = "no"
        return response

    return bp


def _page(view: ResultsView, poll: Poll) -> Response:
    html = render_template(
        "results.html",
        poll=poll,
        polls=list(view.catalog),
        stream_url=f"/api/polls/{poll.id}/results/stream",
        api_url=f"/api/polls/{poll.id}/results",
        vote_url="/" if poll.id == view.catalog.default.id else f"/polls/{poll.id}",
    )
    return Response(html, content_type="text/html; charset=utf-8")


def _stream(view: ResultsView, poll_id: str) -> Iterator[str]:
    yield "retry: 1000\n\n"
    last_sent: str | None = None
    started = last_write = time.monotonic()
    while not shutting_down.is_set() and time.monotonic() - started < STREAM_MAX_SECONDS:
        try:
            payload = json.dumps(view.results(poll_id).as_json(), separators=(",", ":"))
        except StoreUnavailable:
            payload = json.dumps({"poll": poll_id, "unavailable": True})
        now = time.monotonic()
        if payload != last_sent:
            yield f"event: results\ndata: {payload}\n\n"
            last_sent, last_write = payload, now
        elif now - last_write >= STREAM_HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            last_write = now
        shutting_down.wait(STREAM_POLL_SECONDS)
