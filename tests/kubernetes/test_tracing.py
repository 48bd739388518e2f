"""One vote's trace on the cluster (components/tracing): from the gateway to PostgreSQL.

A vote cast through the gateway's NodePort with a sampled traceparent (flags 01) is
recorded whatever OTEL_TRACES_SAMPLER_ARG says. vote and worker send its spans to the
otel-collector Service (which only they and result may reach: the component's
NetworkPolicies), and the collector writes them as OTLP JSON lines to its log. The trace
must be connected by parent ids, vote SERVER -> PRODUCER -> worker CONSUMER -> CLIENT
(db.system=postgresql), and the vote's row must carry its trace id.
"""

from __future__ import annotations

import secrets
import time

from tests.kubernetes.app import Cloudvote
from tests.kubernetes.conftest import TIMINGS
from tests.support.kube import kubectl
from tests.support.otlp_traces import Caller, describe, spans_in, vote_chain
from tests.support.waiting import wait_until

# The worker's batch, the SDK's export delay (5 s) and the collector's batch (1 s), on a
# busy two-CPU node.
TRACE_SECONDS = 90


def collector_output(app: Cloudvote) -> str:
    # The last few minutes only: earlier tests (the KEDA backlog) leave megabytes of spans.
    return kubectl("logs", "-n", app.namespace, "deployment/otel-collector", "--since=3m").stdout


def test_sampled_vote_is_one_trace_from_the_gateway_to_postgres(app: Cloudvote) -> None:
    assert app.ready_pods("otel-collector"), "no ready collector"
    caller = Caller.new()
    voter = secrets.token_hex(16)
    response = app.http.vote("a", voter=voter, traceparent=caller.traceparent)
    assert response.status_code == 202, response.text
    started = time.monotonic()

    chain = wait_until(
        lambda: vote_chain(spans_in(collector_output(app)), caller),
        lambda found: found is not None,
        timeout=TRACE_SECONDS,
        interval=2,
        what=f"the trace of {caller.traceparent} in the collector's log",
    )
    TIMINGS["tracing: sampled vote to its whole trace in the collector (s)"] = (
        time.monotonic() - started
    )
    assert chain is not None
    server, _producer, _consumer, store = chain
    # The gateway adds no span of its own: the vote's request continues the caller's.
    assert server.parent_span_id == caller.span_id, describe(chain, caller)
    assert store.attributes["db.system"] == "postgresql"

    stored = app.psql(f"SELECT trace_id FROM votes WHERE voter_id = '{voter}'").strip()
    assert stored == caller.trace_id, f"votes.trace_id {stored!r}, trace {caller.trace_id}"
