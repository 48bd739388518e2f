"""Prometheus metrics shared by every service.

Under gunicorn each worker process keeps its own counters; with PROMETHEUS_MULTIPROC_DIR
set (the CLI does it before the server forks), prometheus-client writes them to files
and `/metrics` adds them up, so a scrape sees the whole pod, not one random process.
The directory reaches this module as `Settings.metrics_dir`.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

REQUESTS = Counter(
    "cloudvote_http_requests_total", "HTTP requests answered", ["service", "endpoint", "status"]
)
REQUEST_SECONDS = Histogram(
    "cloudvote_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
VOTES_ACCEPTED = Counter("cloudvote_votes_accepted_total", "Votes durably queued", ["poll"])
VOTES_REJECTED = Counter("cloudvote_votes_rejected_total", "Votes refused", ["reason"])
VOTES_APPLIED = Counter(
    "cloudvote_votes_applied_total", "Votes committed to the store by the worker"
)
VOTES_CHANGED = Counter(
    "cloudvote_votes_changed_total", "Applied votes that changed a stored row (not replays)"
)
BATCH_SIZE = Histogram(
    "cloudvote_worker_batch_size",
    "Votes per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS = Histogram(
    "cloudvote_worker_batch_seconds",
    "Time to commit one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
DEAD_LETTERS = Counter("cloudvote_votes_dead_lettered_total", "Messages parked as unusable")
DEPENDENCY_RETRIES = Counter(
    "cloudvote_dependency_retries_total", "Waits for a dependency that was down", ["dependency"]
)
# Read by the worker's drain loop about once a second; "max" because one process sets it.
QUEUE_DEPTH = Gauge(
    "cloudvote_queue_depth", "Votes queued but not yet acknowledged", multiprocess_mode="max"
)


RESULT_STREAMS_OPEN = Gauge(
    "cloudvote_result_streams_open",
    "Live-result streams open now, summed over the live server processes",
    multiprocess_mode="livesum",
)
RESULT_STREAMS_REFUSED = Counter(
    "cloudvote_result_streams_refused_total", "Streams refused at RESULT_MAX_STREAMS (503)"
)
RESULTS_STORE_READS = Counter(
    "cloudvote_results_store_reads_total",
    "Tally reads the result service made; flat however many viewers there are",
)


class PrometheusLiveResultsObserver:
    """Feeds the live-results fan-out's events into the metrics above."""

    def store_read(self) -> None:
        RESULTS_STORE_READS.inc()

    def streams_open(self, delta: int) -> None:
        RESULT_STREAMS_OPEN.inc(delta)

    def stream_refused(self) -> None:
        RESULT_STREAMS_REFUSED.inc()


class PrometheusDrainObserver:
    """Feeds the worker's drain events into the counters above."""

    def batch_applied(self, size: int, changed: int, seconds: float) -> None:
        VOTES_APPLIED.inc(size)
        VOTES_CHANGED.inc(changed)
        BATCH_SIZE.observe(size)
        BATCH_SECONDS.observe(seconds)

    def dead_lettered(self, reason: str) -> None:
        DEAD_LETTERS.inc()

    def retried(self, dependency: str) -> None:
        DEPENDENCY_RETRIES.labels(dependency).inc()

    def depth_measured(self, depth: int) -> None:
        QUEUE_DEPTH.set(depth)


def render_metrics(metrics_dir: str = "") -> tuple[bytes, str]:
    """The exposition text for this process, or, given the server processes' metrics
    directory, for all of them."""
    if metrics_dir:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, path=metrics_dir
        )
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
