"""Freshness: the delay from a 202 to the vote showing in the result API."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlsplit

from bench.stack import Stack

_BODY = json.dumps({"option": "a"})


def _connection(base: str) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)


def measure_freshness(stack: Stack, rate: int, seconds: int) -> dict[str, object]:
    stack.reset_data()
    stack.migrate()
    vote = stack.start("vote")
    result = stack.start("result")
    stack.start("worker")
    accepted_at: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    senders = 8
    interval = senders / rate

    def send() -> None:
        conn = _connection(vote)
        next_at = time.monotonic()
        deadline = next_at + seconds
        while next_at < deadline:
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            # No cookie: every request is a new voter, so the total grows by exactly one.
            conn.request(
                "POST", "/api/polls/default/votes", _BODY, {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            if response.status == 202:
                with lock:
                    accepted_at.append(time.monotonic())
            next_at += interval
        conn.close()

    delays: list[float] = []

    def watch() -> None:
        conn = _connection(result)
        seen = 0
        end = time.monotonic() + seconds + 30
        while time.monotonic() < end:
            conn.request("GET", "/api/polls/default/results")
            total = json.loads(conn.getresponse().read())["total"]
            now = time.monotonic()
            with lock:
                visible = min(total, len(accepted_at))
                delays.extend(now - t for t in accepted_at[seen:visible])
            seen = max(seen, visible)
            if stop.is_set() and seen >= len(accepted_at):
                break
            time.sleep(0.01)
        conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    stack.stop_all()
    delays.sort()
    quantiles = statistics.quantiles(delays, n=100) if len(delays) >= 2 else [0.0] * 99
    return {
        "target_rate": rate,
        "achieved_rate": round(len(accepted_at) / seconds, 1),
        "accepted": len(accepted_at),
        "seen": len(delays),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "max_ms": round(max(delays, default=0.0) * 1000, 1),
        # Every 10th sorted delay: enough for the histogram, small enough to commit.
        "delays_ms": [round(d * 1000, 2) for d in delays[::10]],
    }
