"""W3C traceparent: join a valid caller's trace, else start one; a fresh span either way."""

from __future__ import annotations

import pytest

from cloudvote.observability.tracing import TraceContext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_a_valid_header_keeps_its_trace_and_flags_with_a_new_span() -> None:
    context = TraceContext.continue_or_start(f"00-{TRACE}-{SPAN}-00")

    assert (context.trace_id, context.flags) == (TRACE, "00")
    assert context.span_id != SPAN
    assert context.header == f"00-{TRACE}-{context.span_id}-00"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"01-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
    ],
)
def test_an_absent_or_invalid_header_starts_a_new_sampled_trace(header: str | None) -> None:
    context = TraceContext.continue_or_start(header)

    assert context.trace_id != TRACE
    assert len(context.trace_id) == 32 and int(context.trace_id, 16) != 0
    assert len(context.span_id) == 16 and int(context.span_id, 16) != 0
    assert context.flags == "01"
