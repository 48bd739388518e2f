"""The worker's spans and the tracer a service builds from its settings.

The vote side (SERVER spans, the traceparent answer) is in tests/unit/entrypoints; the
PRODUCER span on a real stream, and the whole chain into PostgreSQL, in
tests/integration/test_tracing.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, format_span_id, format_trace_id

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.adapters.redis_streams import stream_fields
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.config import Settings
from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.votes import AcceptedVote, Ballot
from cloudvote.observability.tracing import (
    BATCH_SIZE,
    STORE_SPAN,
    TRACEPARENT_FIELD,
    StreamBatchTracer,
    Tracing,
    inject,
    trace_id_of,
)
from cloudvote.ports.store import StoreUnavailable
from tests.support.fakes import CATALOG, voter


def queue_votes(
    queue: InMemoryVoteQueue, producer: Tracing, count: int, sampled: Sequence[bool] = ()
) -> list[ReadableSpan | str]:
    """Queue `count` votes as the vote service does: each message carries its PRODUCER
    span's context. A vote whose entry in `sampled` is False gets an unsampled parent."""
    made: list[ReadableSpan | str] = []
    for n in range(count):
        recorded = sampled[n] if sampled else True
        tracer = producer.tracer if recorded else Tracing.unexported().tracer
        span = tracer.start_span("send votes", kind=SpanKind.PRODUCER)
        fields = stream_fields(Ballot("default", "a", voter(n), trace_id_of(span)))
        inject(fields, span)
        span.end()
        queue.enqueue_fields(fields)
        made.append(span if recorded else trace_id_of(span))  # type: ignore[arg-type]
    return made


def drain(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, worker: Tracing, batch: int = 100
) -> None:
    tracer = StreamBatchTracer(worker, "votes", db_system="postgresql")
    settings = DrainSettings(batch_size=batch, block_ms=0, claim_every_s=3600)
    VoteDrainer(CATALOG, queue, store, settings, tracer=tracer).drain_once()


def ids(context: SpanContext | None) -> tuple[int, int]:
    """A span context's trace and span id: the same span, seen remote or local."""
    assert context is not None
    return (context.trace_id, context.span_id)


class WriteRefusingStore(InMemoryVoteStore):
    """Reports go through, the batch's write does not: PostgreSQL gone mid-batch."""

    def apply(self, votes: Sequence[AcceptedVote], report: WorkerReport | None = None) -> int:
        raise StoreUnavailable("postgres: connection lost")


def by_kind(exporter: InMemorySpanExporter, kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.kind is kind]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def test_each_message_gets_a_consumer_span_whose_parent_is_its_producer_span(
    exporter: InMemorySpanExporter,
) -> None:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    producers = queue_votes(queue, Tracing.exporting_to(exporter, "vote"), 3)

    drain(queue, store, Tracing.exporting_to(exporter, "worker"))

    consumers = by_kind(exporter, SpanKind.CONSUMER)
    assert [ids(span.parent) for span in consumers] == [ids(p.context) for p in producers]  # type: ignore[union-attr]
    assert all(span.context and span.parent for span in consumers)
    assert {span.resource.attributes["service.name"] for span in consumers} == {"worker"}
    attributes = consumers[0].attributes or {}
    assert attributes["messaging.destination.name"] == "votes"
    assert attributes["messaging.operation.type"] == "process"


def test_the_store_span_is_a_child_of_a_consumer_span_and_links_the_other_messages(
    exporter: InMemorySpanExporter,
) -> None:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    producers = queue_votes(queue, Tracing.exporting_to(exporter, "vote"), 4)

    drain(queue, store, Tracing.exporting_to(exporter, "worker"))

    (write,) = by_kind(exporter, SpanKind.CLIENT)
    first, *_ = by_kind(exporter, SpanKind.CONSUMER)
    assert write.name == STORE_SPAN
    assert write.parent == first.context
    assert [ids(link.context) for link in write.links] == [ids(p.context) for p in producers[1:]]  # type: ignore[union-attr]
    attributes = write.attributes or {}
    assert attributes["db.system"] == "postgresql"
    assert attributes[BATCH_SIZE] == 4


def test_unrecorded_votes_get_no_span_and_no_link(exporter: InMemorySpanExporter) -> None:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    made = queue_votes(
        queue, Tracing.exporting_to(exporter, "vote"), 4, sampled=[False, True, False, True]
    )
    recorded = [span for span in made if isinstance(span, ReadableSpan)]

    drain(queue, store, Tracing.exporting_to(exporter, "worker"))

    consumers = by_kind(exporter, SpanKind.CONSUMER)
    (write,) = by_kind(exporter, SpanKind.CLIENT)
    assert [ids(span.parent) for span in consumers] == [ids(span.context) for span in recorded]
    # The first recorded message leads; the one other recorded message is linked.
    assert write.parent == consumers[0].context
    assert [ids(link.context) for link in write.links] == [ids(recorded[1].context)]
    # Every vote is stored under its own trace id, recorded or not.
    stored = [vote.trace_id for vote in store.votes.values()]
    assert stored == [span if isinstance(span, str) else trace_id_of(span) for span in made]  # type: ignore[arg-type]


def test_a_batch_of_unrecorded_votes_exports_nothing(exporter: InMemorySpanExporter) -> None:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    queue_votes(queue, Tracing.exporting_to(exporter, "vote"), 3, sampled=[False] * 3)

    drain(queue, store, Tracing.exporting_to(exporter, "worker", ratio=1.0))

    assert exporter.get_finished_spans() == ()
    assert len(store.votes) == 3


def test_a_message_without_trace_context_starts_a_trace_at_the_worker(
    exporter: InMemorySpanExporter,
) -> None:
    """Messages queued before the vote service carried a traceparent are still traced."""
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    queue.enqueue(Ballot("default", "a", voter(1)))

    drain(queue, store, Tracing.exporting_to(exporter, "worker", ratio=1.0))

    (consumer,) = by_kind(exporter, SpanKind.CONSUMER)
    (write,) = by_kind(exporter, SpanKind.CLIENT)
    assert consumer.parent is None
    assert write.parent == consumer.context


def test_messages_without_trace_context_at_ratio_zero_export_nothing(
    exporter: InMemorySpanExporter,
) -> None:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    for n in range(3):
        queue.enqueue(Ballot("default", "a", voter(n)))

    drain(queue, store, Tracing.exporting_to(exporter, "worker", ratio=0.0))

    assert exporter.get_finished_spans() == ()


def test_a_failed_write_marks_the_batch_spans_as_failed(exporter: InMemorySpanExporter) -> None:
    queue, store = InMemoryVoteQueue(), WriteRefusingStore()
    queue_votes(queue, Tracing.exporting_to(exporter, "vote"), 2)

    with pytest.raises(StoreUnavailable):
        drain(queue, store, Tracing.exporting_to(exporter, "worker"))

    failed = by_kind(exporter, SpanKind.CONSUMER) + by_kind(exporter, SpanKind.CLIENT)
    assert len(failed) == 3
    assert {span.status.status_code for span in failed} == {StatusCode.ERROR}


def test_the_link_limit_holds_a_whole_batch(exporter: InMemorySpanExporter) -> None:
    """The SDK keeps 128 links by default; the worker's tracer keeps a batch's worth."""
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    queue_votes(queue, Tracing.exporting_to(exporter, "vote"), 300)
    worker = Tracing.build("worker", 1.0, SimpleSpanProcessor(exporter), max_links=300)

    drain(queue, store, worker, batch=300)

    (write,) = by_kind(exporter, SpanKind.CLIENT)
    assert len(write.links) == 299


def test_the_service_name_is_the_services_own_unless_otel_service_name_is_set() -> None:
    def name(settings: Settings) -> object:
        return Tracing.from_settings(settings, "vote").provider.resource.attributes[  # type: ignore[attr-defined]
            "service.name"
        ]

    assert name(Settings()) == "vote"
    assert name(Settings.from_env({"OTEL_SERVICE_NAME": "ballots"})) == "ballots"


def test_without_an_endpoint_there_is_no_exporter_yet_spans_have_ids() -> None:
    tracing = Tracing.from_settings(Settings(), "vote")
    span = tracing.tracer.start_span("GET /")

    assert tracing.provider._active_span_processor._span_processors == ()  # type: ignore[attr-defined]
    assert len(trace_id_of(span)) == 32 and trace_id_of(span) != "0" * 32


def test_the_sdk_switched_off_makes_no_trace_ids() -> None:
    tracing = Tracing.from_settings(Settings.from_env({"OTEL_SDK_DISABLED": "true"}), "vote")

    assert trace_id_of(tracing.tracer.start_span("GET /")) == ""


def test_a_ratio_samples_new_traces_by_their_trace_id(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing.exporting_to(exporter, "vote", ratio=0.25)

    spans = [tracing.tracer.start_span("GET /") for _ in range(4000)]
    for span in spans:
        span.end()

    recorded = len(exporter.get_finished_spans())
    assert 800 < recorded < 1200
    assert all(format_trace_id(s.context.trace_id) for s in exporter.get_finished_spans())  # type: ignore[union-attr]


def test_the_message_field_is_the_w3c_traceparent() -> None:
    tracing = Tracing.exporting_to(InMemorySpanExporter(), "vote")
    span = tracing.tracer.start_span("send votes", kind=SpanKind.PRODUCER)
    fields: dict[str, str] = {}

    inject(fields, span)

    # Flags 03: sampled, and (W3C Trace Context level 2) a random trace id.
    span_id = format_span_id(span.get_span_context().span_id)
    assert fields == {TRACEPARENT_FIELD: f"00-{trace_id_of(span)}-{span_id}-03"}
