"""The worker pod's adapter container (POD-06): the worker's /stats JSON as Prometheus text.

    python stats_adapter.py --listen=0.0.0.0:9100 --stats-url=http://127.0.0.1:8080/stats

The worker reports its internal counters in its own format (GET /stats, plain JSON). A
monitoring system that speaks only Prometheus cannot read that, and the app should not
have to learn every format a platform team picks. This adapter sits in the same pod,
reads /stats over localhost on every scrape, and answers GET /metrics in the Prometheus
text exposition format. When /stats does not answer, /metrics still answers, with
cloudvote_worker_stats_up 0, as exporters do, so an alert can tell "worker down" from
"adapter down". GET /healthz is the adapter's own liveness.

Standard library only: it runs on the worker image's Python (deploy/k8s/base/worker.yaml).
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# /stats field -> (metric name, type, help). Fields not listed are ignored, so a new
# counter in the worker never breaks the adapter; it just is not exported until added.
METRICS: Mapping[str, tuple[str, str, str]] = {
    "batches": (
        "cloudvote_worker_stats_batches_total",
        "counter",
        "Batches the worker has committed since it started",
    ),
    "votes_received": (
        "cloudvote_worker_stats_votes_received_total",
        "counter",
        "Votes read from the stream since the worker started",
    ),
    "votes_changed": (
        "cloudvote_worker_stats_votes_changed_total",
        "counter",
        "Votes that changed a stored row since the worker started",
    ),
    "dead_letters": (
        "cloudvote_worker_stats_dead_letters_total",
        "counter",
        "Messages parked in the dead-letter stream since the worker started",
    ),
    "retries": (
        "cloudvote_worker_stats_retries_total",
        "counter",
        "Waits for a dependency that was down since the worker started",
    ),
    "last_batch_size": (
        "cloudvote_worker_stats_last_batch_size",
        "gauge",
        "Votes in the most recent batch",
    ),
    "seconds_since_progress": (
        "cloudvote_worker_stats_seconds_since_progress",
        "gauge",
        "Seconds since the drain loop last made progress",
    ),
    "queue_depth": (
        "cloudvote_worker_stats_queue_depth",
        "gauge",
        "Votes in the stream not yet acknowledged",
    ),
}


def to_prometheus(stats: Mapping[str, object] | None) -> str:
    """Render the stats (None when /stats did not answer) in the text exposition format."""
    lines = [
        "# HELP cloudvote_worker_stats_up 1 if the worker's /stats answered this scrape",
        "# TYPE cloudvote_worker_stats_up gauge",
        f"cloudvote_worker_stats_up {0 if stats is None else 1}",
    ]
    for field, (name, kind, text) in METRICS.items():
        value = None if stats is None else stats.get(field)
        # null (say, queue_depth while Redis is down) or a non-number: leave the series out
        # for this scrape rather than invent a value.
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(lines) + "\n"


def fetch_stats(url: str, timeout: float) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed http URL
            body = json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def make_handler(stats_url: str, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, to_prometheus(fetch_stats(stats_url, timeout)), CONTENT_TYPE)
            elif self.path == "/healthz":
                self._answer(200, "ok\n", "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found: try /metrics\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # One line per scrape every 15 s adds nothing; errors still reach stderr.
            return

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:9100", help="host:port to serve on")
    parser.add_argument("--stats-url", default="http://127.0.0.1:8080/stats")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per /stats read")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), make_handler(args.stats_url, args.timeout))
    print(
        json.dumps({"event": "stats_adapter.listening", "listen": args.listen}),
        flush=True,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
