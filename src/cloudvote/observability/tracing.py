"""W3C Trace Context: one trace id follows a vote from the vote service to the worker.

Only the `traceparent` header is needed here (version-traceid-parentid-flags), so it is
parsed directly rather than pulling in a tracing SDK on the hot path. A collector such
as OpenTelemetry can still join these ids because the format is the standard one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @classmethod
    def continue_or_start(cls, header: str | None) -> TraceContext:
        """Join the caller's trace if its header is valid, else start a new trace.

        Either way this hop gets a fresh span id, as the spec asks of each participant.
        """
        if header:
            match = _TRACEPARENT.match(header.strip().lower())
            if match and match[1] != _INVALID_TRACE and match[2] != _INVALID_SPAN:
                return cls(match[1], _random_hex(64), match[3])
        return cls(_random_hex(128), _random_hex(64))


def _random_hex(bits: int) -> str:
    """Trace ids must be unique, not secret: the fast PRNG is enough, as in OpenTelemetry."""
    value = 0
    while value == 0:  # all-zero ids are invalid in the spec
        value = random.getrandbits(bits)
    return f"{value:0{bits // 4}x}"
