"""Read the OpenTelemetry Collector's output and find one vote's trace in it.

The collector (deploy/otel-collector/config.yaml) writes each batch of spans it exports as
one OTLP JSON line on its stdout, so a container's log holds them between its own log
lines. The chain a vote makes (src/cloudvote/observability/tracing.py) is found by span
kind and service.name, following parent span ids, never by span names:

    vote SERVER -> vote PRODUCER -> worker CONSUMER -> worker CLIENT (db.system=postgresql)

Each link may have spans between it and the previous one; it must descend from it. One
database span stores a whole batch: it is a child of the first recorded message's
CONSUMER span and links the others' (src/cloudvote/observability/tracing.py). The tests
cast one sampled vote with no other recorded traffic, so its batch's store span is in its
own trace; `links` lets a caller follow the others.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# OTLP's SpanKind: the JSON encoding writes the number, a protobuf-to-JSON tool the name.
KINDS = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
# The chain's links: (service.name, kind, required attributes).
CHAIN: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("vote", "SERVER", {}),
    ("vote", "PRODUCER", {}),
    ("worker", "CONSUMER", {}),
    ("worker", "CLIENT", {"db.system": "postgresql"}),
)


@dataclass(frozen=True)
class Span:
    service: str
    kind: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    # (trace id, span id) of every span this one links to.
    links: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"{self.service} {self.kind} {self.name!r} {self.span_id}<-{self.parent_span_id}"


@dataclass(frozen=True)
class Caller:
    """A client's own span context, sent as a sampled W3C traceparent (flags 01)."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> Caller:
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


def _value(value: dict[str, Any]) -> Any:
    """An AnyValue's content; OTLP JSON writes 64-bit integers as strings."""
    if "intValue" in value:
        return int(value["intValue"])
    return next(iter(value.values()), None)


def _kind(raw: Any) -> str:
    if isinstance(raw, int):
        return KINDS.get(raw, str(raw))
    return str(raw).removeprefix("SPAN_KIND_")


def spans_in(output: str) -> list[Span]:
    """Every span in the OTLP JSON lines of `output`; other lines are skipped."""
    found = []
    for raw in output.splitlines():
        line = raw.strip()
        if not line.startswith('{"resourceSpans"'):
            continue
        try:
            batch = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short (a restart mid-write): the next batch is whole
        for resource_spans in batch["resourceSpans"]:
            resource = {
                a["key"]: _value(a["value"])
                for a in resource_spans.get("resource", {}).get("attributes", [])
            }
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    found.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            kind=_kind(span.get("kind", 0)),
                            name=span.get("name", ""),
                            trace_id=span["traceId"].lower(),
                            span_id=span["spanId"].lower(),
                            parent_span_id=span.get("parentSpanId", "").lower(),
                            attributes={
                                a["key"]: _value(a["value"]) for a in span.get("attributes", [])
                            },
                            links=tuple(
                                (link["traceId"].lower(), link["spanId"].lower())
                                for link in span.get("links", [])
                            ),
                        )
                    )
    return found


def _descends(span: Span, ancestor: Span, by_id: dict[str, Span]) -> bool:
    seen: set[str] = set()
    current: Span | None = span
    while current is not None and current.span_id not in seen:
        if current.parent_span_id == ancestor.span_id:
            return True
        seen.add(current.span_id)
        current = by_id.get(current.parent_span_id)
    return False


def _fits(span: Span, service: str, kind: str, attributes: dict[str, Any]) -> bool:
    return (
        span.service == service
        and span.kind == kind
        and all(span.attributes.get(k) == v for k, v in attributes.items())
    )


def vote_chain(spans: Iterable[Span], caller: Caller) -> list[Span] | None:
    """The four spans of the vote cast with `caller`'s traceparent, or None while the
    collector has not written them all (the worker's spans come a batch later)."""
    in_trace = [s for s in spans if s.trace_id == caller.trace_id]
    by_id = {s.span_id: s for s in in_trace}
    chain: list[Span] = []
    for link in CHAIN:
        candidates = [
            s
            for s in in_trace
            if _fits(s, *link)
            and (_descends(s, chain[-1], by_id) if chain else s.parent_span_id == caller.span_id)
        ]
        if not candidates:
            return None
        chain.append(candidates[0])
    return chain


def describe(spans: Iterable[Span], caller: Caller) -> str:
    """The trace's spans, one a line, for an assertion message."""
    lines = [s.describe() for s in spans if s.trace_id == caller.trace_id]
    return f"trace {caller.trace_id} (caller span {caller.span_id}):\n  " + (
        "\n  ".join(lines) or "no span"
    )
