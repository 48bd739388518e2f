"""Tracing: what OpenTelemetry costs the vote service per vote, at each sampling ratio.

Four vote services run side by side, each a `cloudvote vote` under its production server
(gunicorn, gevent, WEB_CONCURRENCY=2), differing only in tracing:

- off:   OTEL_SDK_DISABLED=true, no spans and no trace ids (the floor);
- 0:     OTEL_TRACES_SAMPLER_ARG=0, every span non-recording (what ids alone cost);
- 0.1:   the default ratio;
- 1.0:   every vote recorded.

All but "off" export over OTLP/HTTP to a receiver in this process that decodes and counts
what it gets, so the cost of encoding and sending spans is in the figures, and the count
shows that sampling did what it says. They take turns under the same wrk load as the
ingest harness (`POST /` form `vote=a`), order rotated each round. CPU per vote counts the
vote server's processes only (gunicorn master and workers, where the tracing runs); Redis
is left out, so the ratios are the overhead of tracing on the service itself, the
stricter reading. Every ratio is taken within a round, then its median and range.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from bench.ingest import WRK_POST_SCRIPT, compare_interleaved, cpu_seconds, paired_ratio
from bench.ingest import summarize_target as summarize
from bench.stack import Stack

# Label -> the environment that sets it up; "off" has no exporter and no SDK.
SETUPS: dict[str, dict[str, str]] = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "0": {"OTEL_TRACES_SAMPLER_ARG": "0"},
    "0.1": {"OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "1.0": {"OTEL_TRACES_SAMPLER_ARG": "1.0"},
}
# The issue's bound on the overhead at the default ratio, against ratio 0.
OVERHEAD_LIMIT = 0.10


@dataclass
class OtlpSink:
    """Spans received per service.name, from the OTLP/HTTP POSTs it was sent."""

    url: str = ""
    spans: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        counted: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            names = [
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ]
            count = sum(len(scope.spans) for scope in resource_spans.scope_spans)
            counted[names[0] if names else "?"] += count
        with self.lock:
            self.spans.update(counted)
            self.requests += 1
            self.bytes += len(body)


@contextmanager
def running_sink() -> Iterator[OtlpSink]:
    """A local OTLP/HTTP receiver: POST /v1/traces, decoded, counted, then discarded."""
    sink = OtlpSink()

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector would offer

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/traces":
                sink.receive(body)
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


class _TimedExporter(SpanExporter):
    """The real OTLP exporter, with the CPU its thread spends exporting counted."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self.cpu_s = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        started = time.thread_time()
        try:
            return self.exporter.export(spans)
        finally:
            self.cpu_s += time.thread_time() - started

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def _in_process_runs(rounds: int, votes: int) -> None:
    """In a fresh process: the vote app once per setup, each on the real Redis.

    The app is put together as the composition root does (the Redis adapter, the vote
    blueprint, the request hooks), with the setup's tracer and the real OTLP exporter to
    the bench's receiver. The setups take turns in short runs of `votes` form votes from
    werkzeug's test client, one after another; the main thread's CPU is read around each
    run. The exporter's thread is timed apart, and its CPU is added per vote at the end.
    Prints each setup's request CPU per run and export CPU in total, as JSON.
    """
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from cloudvote.adapters.redis_streams import RedisVoteQueue, connect_redis
    from cloudvote.application.voting import VoteCaster
    from cloudvote.bootstrap import VoteService, load_catalog
    from cloudvote.config import Settings
    from cloudvote.entrypoints.web.apps import _base_app
    from cloudvote.entrypoints.web.vote import vote_blueprint
    from cloudvote.observability.tracing import Tracing

    sink = os.environ["BENCH_OTLP_SINK"]
    settings = Settings.from_env(service="vote")
    catalog = load_catalog(settings)
    clients = {}
    exporters: dict[str, _TimedExporter] = {}
    for label, environment in SETUPS.items():
        if label == "off":
            tracing = Tracing(trace.NoOpTracerProvider())
        else:
            exporters[label] = _TimedExporter(OTLPSpanExporter(endpoint=f"{sink}/v1/traces"))
            ratio = float(environment["OTEL_TRACES_SAMPLER_ARG"])
            processor = BatchSpanProcessor(exporters[label])
            tracing = Tracing.build(f"in-process-{label}", ratio, processor)
        redis = connect_redis(settings.require_redis_url(), settings.redis_password)
        queue = RedisVoteQueue(redis, stream=settings.stream, tracing=tracing)
        service = VoteService(
            settings=settings,
            catalog=catalog,
            tracing=tracing,
            caster=VoteCaster(catalog, queue, "bench"),
        )
        app = _base_app("vote", service)
        app.register_blueprint(vote_blueprint(service.caster))
        clients[label] = app.test_client()
    for client in clients.values():  # warm-up: imports, templates, connections
        for _ in range(200):
            client.post("/", data={"vote": "a"})
    for exporter in exporters.values():
        exporter.cpu_s = 0.0
    runs: dict[str, list[float]] = {label: [] for label in SETUPS}
    labels = list(SETUPS)
    for number in range(rounds):
        shift = number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            client = clients[label]
            before = time.thread_time()
            for _ in range(votes):
                client.post("/", data={"vote": "a"})
            runs[label].append((time.thread_time() - before) / votes * 1e6)
    for label in exporters:
        # Counted up to here; what is still queued belongs to votes counted above too.
        clients[label].application.extensions["cloudvote"].tracing.shutdown()
    exported = {label: exporters[label].cpu_s if label in exporters else 0.0 for label in SETUPS}
    print(json.dumps({"runs": runs, "export_cpu_s": exported, "votes": rounds * votes}))


def measure_in_process(
    stack: Stack, sink: OtlpSink, rounds: int = 30, votes: int = 100
) -> dict[str, Any]:
    """The same four setups without a server, load generator or other requests around.

    One new process drives the real vote app (Flask, the Redis adapter, the tracer, the
    OTLP exporter) of each setup through werkzeug's test client, one vote at a time, the
    setups taking turns in short runs. The request thread's CPU is read around each run and
    the exporter thread's CPU is added per vote, so no other thread or process is counted:
    what differs between setups is the tracing code itself and its export.
    """
    output = subprocess.run(
        [sys.executable, "-m", "bench.tracing", str(rounds), str(votes)],
        env=stack.env(BENCH_OTLP_SINK=sink.url),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    measured = json.loads(output.splitlines()[-1])
    # Each run's request CPU plus the setup's export CPU, spread over all its votes.
    export_us = {
        label: cpu_s / measured["votes"] * 1e6 for label, cpu_s in measured["export_cpu_s"].items()
    }
    runs: dict[str, list[float]] = {
        label: [value + export_us[label] for value in values]
        for label, values in measured["runs"].items()
    }
    medians = {label: round(statistics.median(values), 1) for label, values in runs.items()}

    def paired(label: str, baseline: str) -> dict[str, Any]:
        per_round = [
            round(top / bottom, 3) for top, bottom in zip(runs[label], runs[baseline], strict=True)
        ]
        return {
            "median": round(statistics.median(per_round), 3),
            "range": [min(per_round), max(per_round)],
        }

    return {
        "method": (
            f"one process, {rounds} rounds of {votes} form votes per setup through the vote "
            "app and real Redis with werkzeug's test client, order rotated; the request "
            "thread's CPU per run, plus the exporter thread's CPU over all votes"
        ),
        "cpu_us_per_vote": medians,
        "export_cpu_us_per_vote": {label: round(value, 1) for label, value in export_us.items()},
        "runs": {label: [round(value, 1) for value in values] for label, values in runs.items()},
        "cpu_over_ratio_0": {label: paired(label, "0") for label in ("off", "0.1", "1.0")},
        "cpu_over_off": {label: paired(label, "off") for label in ("0", "0.1", "1.0")},
        "spans_exported": {label: sink.spans.get(f"in-process-{label}", 0) for label in SETUPS},
    }


def measure_tracing(
    stack: Stack, seconds: int = 5, rounds: int = 3, web_concurrency: int = 2
) -> dict[str, Any]:
    script = stack.workdir / "post.lua"
    script.write_text(WRK_POST_SCRIPT)
    with running_sink() as sink:
        bases: dict[str, str] = {}
        clocks = {}
        for label, environment in SETUPS.items():
            exporting = {} if label == "off" else {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
            base = stack.start(
                "vote",
                WEB_CONCURRENCY=str(web_concurrency),
                OTEL_SERVICE_NAME=f"vote-{label}",
                **environment,
                **exporting,
            )
            bases[label] = f"{base}/"
            clocks[label] = functools.partial(cpu_seconds, [psutil.Process(stack.pid_of(base))])
        compared = compare_interleaved(bases, seconds, rounds, script, cpu_clocks=clocks)
        # SIGTERM: each server process flushes what its exporter still holds (worker_exit).
        stack.stop_all()
        in_process = measure_in_process(stack, sink)
        exported = dict(sink.spans)
        sink_requests, sink_bytes = sink.requests, sink.bytes
    setups = {label: summarize(compared[label]) for label in SETUPS}
    key = "server_cpu_us_per_request"

    def ratio(label: str, baseline: str) -> dict[str, Any]:
        return paired_ratio(setups[label]["rounds"], setups[baseline]["rounds"], key)

    over_zero = {label: ratio(label, "0") for label in ("off", "0.1", "1.0")}
    over_off = {label: ratio(label, "off") for label in ("0", "0.1", "1.0")}
    for label, setup in setups.items():
        # Votes sent, counting wrk's 2 s warm-up, which compare_interleaved adds per target.
        sent = sum(run["requests"] for run in setup["rounds"])
        setup["spans_exported"] = exported.get(f"vote-{label}", 0)
        # Two spans per recorded vote (SERVER and PRODUCER); the warm-up adds a little.
        setup["spans_per_measured_vote"] = round(setup["spans_exported"] / sent, 4) if sent else 0
    default = over_zero["0.1"]["median"]
    return {
        "request": "POST / vote=a (form), wrk -t2 -c16 on the same machine",
        "method": (
            f"{rounds} rounds of {seconds} s per setup, order rotated each round; CPU per "
            "vote of the vote server's processes (Redis left out); ratios within each round, "
            "then median and range; spans exported over OTLP/HTTP to a local receiver"
        ),
        "web_concurrency": web_concurrency,
        "setups": setups,
        "cpu_over_ratio_0": over_zero,
        "cpu_over_off": over_off,
        "overhead_at_default_ratio": None if default is None else round(default - 1, 3),
        "overhead_limit": OVERHEAD_LIMIT,
        "within_limit": None if default is None else default - 1 < OVERHEAD_LIMIT,
        "otlp_requests": sink_requests,
        "otlp_bytes": sink_bytes,
        "in_process": in_process,
    }


if __name__ == "__main__":
    _in_process_runs(int(sys.argv[1]), int(sys.argv[2]))
