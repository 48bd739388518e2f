"""One vote's trace through the Compose stack: the collector's output holds it whole.

A vote cast with a sampled traceparent (flags 01) is recorded whatever the sampling
ratio, and its spans reach the otel-collector service, which writes them as OTLP JSON
lines to its stdout (`docker compose logs otel-collector`). The trace must be connected
by parent ids from the caller's span to the PostgreSQL write (tests/support/otlp_traces.py
says how it is followed), and the vote's row must carry the same trace id.
"""

from __future__ import annotations

import os
import secrets
import time

from tests.compose.project import Project
from tests.support.otlp_traces import Caller, describe, spans_in, vote_chain
from tests.support.waiting import wait_until

# The worker's batch, the SDK's export delay (5 s) and the collector's batch (1 s).
TRACE_SECONDS = 60


def collector_spans(stack: Project) -> str:
    return stack.compose("logs", "--no-color", "--no-log-prefix", "otel-collector").stdout


def test_sampled_vote_is_one_trace_from_the_request_to_the_database(
    stack: Project, timings: dict[str, float]
) -> None:
    caller = Caller.new()
    voter = secrets.token_hex(16)  # a new voter, whose row is found below
    response = stack.http.vote("a", voter=voter, traceparent=caller.traceparent)
    assert response.status_code == 202, response.text
    started = time.monotonic()

    chain = wait_until(
        lambda: vote_chain(spans_in(collector_spans(stack)), caller),
        lambda found: found is not None,
        timeout=TRACE_SECONDS,
        interval=1,
        what=f"the trace of {caller.traceparent} in the collector's output",
    )
    timings["sampled vote to its whole trace in the collector"] = time.monotonic() - started
    assert chain is not None
    server, _producer, consumer, store = chain
    assert server.parent_span_id == caller.span_id, describe(chain, caller)
    assert consumer.attributes.get("messaging.system") == "redis", consumer.attributes
    assert store.attributes["db.system"] == "postgresql"

    # The row the worker wrote names the same trace.
    sql = f"SELECT trace_id FROM votes WHERE voter_id = '{voter}'"
    user = os.environ.get("POSTGRES_USER", "cloudvote")
    database = os.environ.get("POSTGRES_DB", "cloudvote")
    stored = stack.compose(
        "exec", "-T", "postgres", "psql", "-U", user, "-d", database, "-At", "-c", sql
    ).stdout.strip()
    assert stored == caller.trace_id, f"votes.trace_id {stored!r}"
