"""Traces with OpenTelemetry: one trace follows a vote from the request to its row.

The chain, by span kind (the names are for people; tests and tools key on the kinds):

    vote    SERVER    "POST /"                  the request, continuing the caller's
                                                W3C traceparent when it sends a valid one
    vote    PRODUCER  "send votes"              the XADD; its context rides in the stream
                                                message as the fields "traceparent" (and
                                                "tracestate" when there is one)
    worker  CONSUMER  "process votes"           one per message, a child of that PRODUCER
    worker  CLIENT    "INSERT votes"            the batch's transaction, a child of one
                                                CONSUMER span, linked to the other messages

Sampling is parent-based: a caller's decision is kept, and a new trace is recorded with
the probability OTEL_TRACES_SAMPLER_ARG. A span that is not recorded is the SDK's
non-recording span: it has ids, so votes.trace_id and the traceparent response header
work at any ratio, but it collects nothing and is never exported.

Nothing here touches OpenTelemetry's global providers: each shape builds its own
`Tracing` after the process forks (gunicorn builds the app in each worker), so a test can
hand a shape an in-memory exporter and no two tests share spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cloudvote import __version__
from cloudvote.config import Settings
from cloudvote.ports.queue import Delivery

# The instrumentation scope every cloudvote span carries.
SCOPE = "cloudvote"
# The stream message fields that carry the producer's context (W3C Trace Context).
TRACEPARENT_FIELD = "traceparent"
TRACESTATE_FIELD = "tracestate"
# Span names and attributes, shared by the code that makes the spans and its tests.
PRODUCER_SPAN = "send {stream}"
CONSUMER_SPAN = "process {stream}"
STORE_SPAN = "INSERT votes"
BATCH_SIZE = "db.operation.batch.size"
# Bounds on export at shutdown (see Tracing.shutdown): one request, then the whole flush.
EXPORT_TIMEOUT_SECONDS = 2.0
FLUSH_TIMEOUT_MILLIS = 3000
# A batch's store span links every other recorded message of the batch; the SDK's default
# limit (128 links) would cut a batch of 2,000 at 10 % short.
MIN_LINKS = 128

# W3C Trace Context only: it is what the gateway, browsers' tooling and collectors speak,
# and a stream message carries no baggage.
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """One process's tracer and what it must flush before the process exits."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer(SCOPE, __version__)

    @classmethod
    def from_settings(cls, settings: Settings, service: str, max_links: int = 0) -> Tracing:
        """The tracer a service runs with: OTLP over HTTP when an endpoint is set.

        `service` names the spans' service.name unless OTEL_SERVICE_NAME does; `max_links`
        is the most links one span keeps (the worker passes its batch size).
        """
        if settings.otel_sdk_disabled:
            return cls(trace.NoOpTracerProvider())
        processor: SpanProcessor | None = None
        endpoint = _traces_endpoint(settings)
        if endpoint:
            # Imported only when used: a process without an endpoint never loads the
            # exporter's HTTP and protobuf modules.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            # A 2 s export timeout (the SDK's default is 10 s): the last flush at shutdown
            # must fit gunicorn's graceful timeout (8 s) even with the collector down.
            processor = BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS)
            )
        return cls.build(
            settings.otel_service_name or service,
            settings.otel_traces_sampler_arg,
            processor,
            instance=settings.instance_name(),
            max_links=max_links,
        )

    @classmethod
    def build(
        cls,
        service: str,
        ratio: float,
        processor: SpanProcessor | None = None,
        instance: str = "",
        max_links: int = 0,
    ) -> Tracing:
        attributes: dict[str, str] = {"service.name": service, "service.version": __version__}
        if instance:
            attributes["service.instance.id"] = instance
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(ratio)),
            # Resource.create adds OTEL_RESOURCE_ATTRIBUTES (a deployment's own labels);
            # the attributes given here win over it.
            resource=Resource.create(attributes),
            span_limits=SpanLimits(max_links=max(MIN_LINKS, max_links)),
            # The shape flushes it when it closes (Shape.close, gunicorn's worker_exit).
            shutdown_on_exit=False,
        )
        if processor is not None:
            provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def exporting_to(
        cls, exporter: SpanExporter, service: str = "cloudvote", ratio: float = 1.0
    ) -> Tracing:
        """Every span handed to `exporter` as it ends: for tests, with an in-memory one."""
        return cls.build(service, ratio, SimpleSpanProcessor(exporter))

    @classmethod
    def unexported(cls, service: str = "cloudvote") -> Tracing:
        """Ids and sampling decisions, no exporter: a shape's default."""
        return cls.build(service, 0.0)

    def shutdown(self) -> None:
        """Export what is still queued, within a bound, and stop the exporter's thread.

        The bounded flush first: shutdown alone waits up to the SDK's 30 s, longer than
        gunicorn's graceful timeout and the pod's grace period, which would end in a
        SIGKILL with the spans lost anyway.
        """
        force_flush = getattr(self.provider, "force_flush", None)
        if force_flush is not None:
            force_flush(FLUSH_TIMEOUT_MILLIS)
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _traces_endpoint(settings: Settings) -> str:
    """OTLP/HTTP's rule: the signal's own URL as given, else the base URL + /v1/traces."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return ""


# -- propagation ---------------------------------------------------------------------------


class _EnvironGetter(Getter[Mapping[str, Any]]):
    """Request headers straight from the WSGI environ: `traceparent` is HTTP_TRACEPARENT."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key[:5] == "HTTP_"]


_ENVIRON = _EnvironGetter()


def context_from_environ(environ: Mapping[str, Any]) -> Context:
    """The caller's trace context from a request's headers; empty when absent or invalid."""
    return _PROPAGATOR.extract(environ, getter=_ENVIRON)


def context_from_fields(fields: Mapping[str, str]) -> Context:
    """The producer's trace context from a stream message's fields."""
    return _PROPAGATOR.extract(fields)


def inject(carrier: MutableMapping[str, str], span: trace.Span) -> None:
    """Write `span`'s context as traceparent (and tracestate) into headers or fields."""
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))


def trace_id_of(span: trace.Span) -> str:
    """The span's trace id as 32 hex digits; empty when it has none (tracing disabled)."""
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def current_trace_id() -> str:
    """The trace id of the span this request or batch runs in (votes.trace_id)."""
    return trace_id_of(trace.get_current_span())


@contextlib.contextmanager
def current(span: trace.Span) -> Iterator[None]:
    """Run the block with `span` as the current span (children made inside join it)."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def fail(span: trace.Span, error: BaseException) -> None:
    """Mark a recorded span as failed by `error`, naming only the error's type.

    Not its message, nor record_exception's (which copies the message and traceback): a
    database error's message can quote a row, voter id included, and traces leave the
    app for a collector. The log line of the same failure carries the traceback and the
    trace id, so the two still meet.
    """
    if span.is_recording():
        span.add_event("exception", {"exception.type": type(error).__name__})
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


# -- the worker's side ---------------------------------------------------------------------


class StreamBatchTracer:
    """The worker's spans for one batch (application.draining.DrainTracer).

    Each message gets a CONSUMER span whose parent is the PRODUCER span that queued it, so
    every vote's trace reaches the worker. The batch is written in one transaction, which
    serves many traces at once; OpenTelemetry's messaging conventions model a batch with
    links. So the store's CLIENT span is a child of one recorded consumer span (the
    batch's first), which keeps one trace connected end to end by parent ids, and it links
    to the contexts of the other recorded messages, so each of their traces can find the
    write too. Messages whose trace is not recorded get non-recording spans and no link:
    a link to a trace that was never recorded leads nowhere.
    """

    def __init__(self, tracing: Tracing, stream: str, db_system: str) -> None:
        self.tracer = tracing.tracer
        self.stream = stream
        self.db_system = db_system
        self._consumer_name = CONSUMER_SPAN.format(stream=stream)

    @contextlib.contextmanager
    def batch(self, deliveries: Sequence[Delivery]) -> Iterator[StreamBatch]:
        spans: list[trace.Span] = []
        lead: Context | None = None
        links: list[Link] = []
        for delivery in deliveries:
            parent = context_from_fields(delivery.fields)
            producer = trace.get_current_span(parent).get_span_context()
            if lead is None:
                # Until a recorded span leads, the store's span follows the first message,
                # so a batch of unrecorded votes makes no recorded span either.
                lead = parent
            if producer.is_valid and not producer.trace_flags.sampled:
                # Parent-based sampling would make this a span that records nothing and
                # that nothing downstream sees: skip it. Most messages at a low ratio.
                continue
            span = self.tracer.start_span(self._consumer_name, parent, SpanKind.CONSUMER)
            spans.append(span)
            if not span.is_recording():
                if not trace.get_current_span(lead).get_span_context().is_valid:
                    lead = trace.set_span_in_context(span)  # an unrecorded new trace
                continue
            span.set_attributes(
                {
                    "messaging.system": "redis",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.stream,
                    "messaging.message.id": delivery.message_id,
                }
            )
            if not trace.get_current_span(lead).is_recording():
                lead = trace.set_span_in_context(span)
            else:
                links.append(Link(producer if producer.is_valid else span.get_span_context()))
        try:
            yield StreamBatch(self, lead, links)
        except BaseException as error:
            for span in spans:
                fail(span, error)
            raise
        finally:
            for span in spans:
                span.end()


class StreamBatch:
    """One batch in flight: the store's write is traced under its lead consumer span."""

    def __init__(self, tracer: StreamBatchTracer, lead: Context | None, links: list[Link]):
        self._tracer = tracer
        self._lead = lead
        self._links = links

    @contextlib.contextmanager
    def storing(self, size: int) -> Iterator[None]:
        span = self._tracer.tracer.start_span(
            STORE_SPAN, self._lead, SpanKind.CLIENT, links=self._links
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "db.system": self._tracer.db_system,
                    "db.system.name": self._tracer.db_system,
                    "db.operation.name": "INSERT",
                    "db.collection.name": "votes",
                    BATCH_SIZE: size,
                }
            )
        try:
            with current(span):
                yield
        except BaseException as error:
            fail(span, error)
            raise
        finally:
            span.end()
