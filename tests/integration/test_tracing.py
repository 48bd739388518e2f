"""One trace from the vote request, through a real Redis stream and a real worker batch,
into PostgreSQL; and spans leaving the process over OTLP/HTTP."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from flask.testing import FlaskClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, format_trace_id

from cloudvote.adapters.postgres import (
    PostgresVoteStore,
    conninfo_with_password,
    create_pool,
    migrate,
)
from cloudvote.adapters.redis_streams import RedisVoteQueue, connect_redis
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.application.voting import VoteCaster
from cloudvote.bootstrap import VoteService
from cloudvote.config import Settings
from cloudvote.entrypoints.web.apps import _base_app
from cloudvote.entrypoints.web.vote import vote_blueprint
from cloudvote.observability.tracing import (
    BATCH_SIZE,
    TRACEPARENT_FIELD,
    StreamBatchTracer,
    Tracing,
)
from tests.support.fakes import CATALOG
from tests.support.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.new_database("tracing")
    migrate(conninfo_with_password(url, postgres_server.password))
    return url


def ids(context: SpanContext | None) -> tuple[int, int]:
    assert context is not None
    return (context.trace_id, context.span_id)


def one(spans: list[ReadableSpan], kind: SpanKind, trace_id: str) -> ReadableSpan:
    (found,) = [
        span
        for span in spans
        if span.kind is kind
        and span.context is not None
        and format_trace_id(span.context.trace_id) == trace_id
    ]
    return found


def test_a_vote_is_one_trace_from_request_to_row_through_real_redis_and_postgres(
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    database_url: str,
    clients: list[redis.Redis],
) -> None:
    exporter = InMemorySpanExporter()
    # Ratio 0: only votes whose caller sampled them are recorded, the rest keep ids.
    vote_tracing = Tracing.exporting_to(exporter, "vote", ratio=0.0)
    worker_tracing = Tracing.exporting_to(exporter, "worker", ratio=0.0)
    stream = f"votes-{secrets.token_hex(4)}"
    for _ in range(2):
        clients.append(connect_redis(redis_server.url, redis_server.password))
    producer = RedisVoteQueue(clients[0], stream=stream, tracing=vote_tracing)
    consumer = RedisVoteQueue(clients[1], stream=stream, consumer="w-1", tracing=worker_tracing)
    consumer.ensure_group()
    service = VoteService(
        settings=Settings(),
        catalog=CATALOG,
        tracing=vote_tracing,
        caster=VoteCaster(CATALOG, producer, "vote-1"),
    )
    app = _base_app("vote", service)
    app.register_blueprint(vote_blueprint(service.caster))

    def vote(client: FlaskClient, traceparent: str | None = None) -> str:
        headers = {"traceparent": traceparent} if traceparent else {}
        response = client.post("/", data={"vote": "a"}, headers=headers)
        assert response.status_code == 303
        return response.headers["traceparent"].split("-")[1]

    sampled = [secrets.token_hex(16) for _ in range(3)]
    for trace_id in sampled:
        # A new client each: a new voter each, so every vote is a row of its own.
        vote(app.test_client(), f"00-{trace_id}-{secrets.token_hex(8)}-01")
    unsampled = vote(app.test_client())

    # The message carries the PRODUCER span's W3C context beside the plain trace id.
    messages = [fields for _, fields in clients[0].xrange(stream)]
    assert [fields["trace"] for fields in messages] == [*sampled, unsampled]
    assert [fields[TRACEPARENT_FIELD].split("-")[1] for fields in messages] == [
        *sampled,
        unsampled,
    ]

    pool = create_pool(database_url, postgres_server.password, max_size=2)
    try:
        tracer = StreamBatchTracer(worker_tracing, stream, db_system="postgresql")
        drainer = VoteDrainer(
            CATALOG,
            consumer,
            PostgresVoteStore(pool),
            DrainSettings(block_ms=1000, claim_every_s=3600),
            tracer=tracer,
        )
        assert drainer.drain_once() == 4
        with pool.connection() as conn:
            stored = {str(row[0]) for row in conn.execute("SELECT trace_id FROM votes")}
    finally:
        pool.close()

    assert stored == {*sampled, unsampled}
    spans = list(exporter.get_finished_spans())
    first = sampled[0]
    server = one(spans, SpanKind.SERVER, first)
    send = one(spans, SpanKind.PRODUCER, first)
    process = one(spans, SpanKind.CONSUMER, first)
    write = one(spans, SpanKind.CLIENT, first)
    # Parent ids connect the whole chain, across Redis and the two processes' tracers.
    assert ids(send.parent) == ids(server.context)
    assert ids(process.parent) == ids(send.context)
    assert ids(write.parent) == ids(process.context)
    assert [span.resource.attributes["service.name"] for span in (server, send)] == ["vote"] * 2
    assert [span.resource.attributes["service.name"] for span in (process, write)] == ["worker"] * 2
    assert write.attributes is not None
    assert (write.attributes["db.system"], write.attributes[BATCH_SIZE]) == ("postgresql", 4)
    # The other recorded votes' traces are linked from the one write that stored them.
    others = [ids(one(spans, SpanKind.PRODUCER, trace_id).context) for trace_id in sampled[1:]]
    assert [ids(link.context) for link in write.links] == others
    for trace_id in sampled[1:]:
        assert ids(one(spans, SpanKind.CONSUMER, trace_id).parent) == ids(
            one(spans, SpanKind.PRODUCER, trace_id).context
        )
    # The unsampled vote left no span anywhere, but its row has its trace id.
    assert all(format_trace_id(span.context.trace_id) != unsampled for span in spans)  # type: ignore[union-attr]


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps what it is sent."""

    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_leave_over_otlp_http_to_the_endpoint_and_are_flushed_at_shutdown(
    receiver: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    endpoint, received = receiver
    settings = Settings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint + "/", "OTEL_TRACES_SAMPLER_ARG": "1"}
    )
    tracing = Tracing.from_settings(settings, "worker")
    tracing.tracer.start_span("process votes", kind=SpanKind.CONSUMER).end()

    tracing.shutdown()

    ((path, content_type, body),) = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "worker"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == [
        "process votes"
    ]
