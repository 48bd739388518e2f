"""Time health probes the way a kubelet sends them: sequential GETs, a new connection each.

Shared by the e2e tests (a probe bound) and bench/fanout.py (p50/p99 under load).
"""

from __future__ import annotations

import http.client
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

# A probe that failed or timed out counts as infinitely slow.
FAILED = math.inf


@dataclass
class ProbeRun:
    """Latencies (seconds) and answers of a series of probes, in the order they ran."""

    url: str
    seconds: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile: p99 of 100 probes is the second slowest."""
        if not self.seconds:
            return FAILED
        ranked = sorted(self.seconds)
        return ranked[max(0, math.ceil(q * len(ranked)) - 1)]

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def describe(self) -> str:
        slowest = sorted(self.seconds)[-3:]
        shown = ", ".join("failed" if s == FAILED else f"{s * 1000:.1f} ms" for s in slowest)
        answers = {status: self.statuses.count(status) for status in set(self.statuses)}
        return (
            f"{len(self.seconds)} probes of {self.url}: p50 {self.p50 * 1000:.1f} ms, "
            f"p99 {self.p99 * 1000:.1f} ms, slowest {shown}; answers {answers}"
        )


@dataclass(frozen=True)
class Answer:
    """One GET: the status ("200") or the error's name ("TimeoutError"), and how long."""

    status: str
    seconds: float
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


def timed_get(url: str, timeout: float) -> Answer:
    """One GET on a fresh connection, timed until the body is read; never raises."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout)
    try:
        connection.request("GET", path or "/")
        response = connection.getresponse()
        body = response.read()
        return Answer(str(response.status), time.monotonic() - started, body)
    except (OSError, http.client.HTTPException) as error:
        return Answer(type(error).__name__, time.monotonic() - started)
    finally:
        connection.close()


def probe_latencies(
    url: str,
    calls: int = 100,
    *,
    timeout: float = 2.0,
    interval: float = 0.01,
    slow: float = 0.1,
    stop_after_slow: int | None = None,
) -> ProbeRun:
    """`calls` sequential probes, `interval` apart. A probe counts as slow above `slow`
    seconds; after `stop_after_slow` slow ones the run stops early (the bound is already
    broken, and a hung service would otherwise cost `calls` x `timeout`)."""
    run = ProbeRun(url)
    slow_seen = 0
    for _ in range(calls):
        answer = timed_get(url, timeout)
        ok = answer.status.isdigit() and int(answer.status) < 500
        run.statuses.append(answer.status)
        run.seconds.append(answer.seconds if ok else FAILED)
        if not ok or answer.seconds > slow:
            slow_seen += 1
            if stop_after_slow is not None and slow_seen >= stop_after_slow:
                break
        time.sleep(interval)
    return run
