"""The gunicorn server's options per service, and its worker's answer past the header limit."""

from __future__ import annotations

import json
import logging
import socket
from types import SimpleNamespace

from flask import Flask
from gunicorn.http.errors import LimitRequestHeaders
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloudvote.config import Settings
from cloudvote.entrypoints.server import (
    HEADER_FIELD_LIMIT_BYTES,
    RESULT_SPARE_CONNECTIONS,
    OwnWordsGeventWorker,
    ServiceServer,
)
from cloudvote.entrypoints.web.observed import HEADERS_TOO_LARGE
from cloudvote.observability.tracing import Tracing
from tests.unit.entrypoints.conftest import vote_app


def _never_built(settings: Settings) -> Flask:
    raise AssertionError("the app is built in the worker processes, not here")


def test_vote_runs_gevent_workers_with_cloudvotes_header_answer_and_no_stream_capacity() -> None:
    server = ServiceServer(_never_built, Settings(port=8001, web_concurrency=3), "vote")

    assert server.cfg.bind == ["0.0.0.0:8001"]
    assert server.cfg.workers == 3
    assert server.options["worker_class"] == "cloudvote.entrypoints.server.OwnWordsGeventWorker"
    assert server.cfg.worker_connections == 256
    assert server.cfg.limit_request_field_size == HEADER_FIELD_LIMIT_BYTES


def test_result_takes_its_stream_limit_plus_spare_connections() -> None:
    server = ServiceServer(_never_built, Settings(max_streams=50), "result")

    assert server.cfg.worker_connections == 50 + RESULT_SPARE_CONNECTIONS
    assert server.cfg.proc_name == "cloudvote-result"


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    debug = warning


def test_an_oversized_header_gets_cloudvotes_431_json() -> None:
    worker = OwnWordsGeventWorker.__new__(OwnWordsGeventWorker)
    worker.log = _Log()
    ours, theirs = socket.socketpair()
    try:
        worker.handle_error(None, ours, ("127.0.0.1", 0), LimitRequestHeaders("too many"))
        ours.close()
        answer = b"".join(iter(lambda: theirs.recv(4096), b""))
    finally:
        theirs.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/json" in head
    assert json.loads(body) == {"error": HEADERS_TOO_LARGE, "status": 431}
    assert worker.log.lines == ["http.headers_too_large: too many"]


def test_json_logging_config_names_the_service_and_drops_access_lines() -> None:
    server = ServiceServer(_never_built, Settings(log_level="debug"), "vote")
    config = server.cfg.logconfig_dict

    assert config["formatters"]["json"]["service"] == "vote"
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["gunicorn.access"]["handlers"] == []
    assert logging.getLevelName(config["loggers"]["gunicorn.error"]["level"]) == logging.INFO


def test_a_server_process_exports_the_spans_it_still_holds_as_it_exits() -> None:
    exporter = InMemorySpanExporter()
    # A delay no test waits out: only the exit can have sent the span.
    batches = BatchSpanProcessor(exporter, schedule_delay_millis=600_000)
    app = vote_app(Settings(), tracing=Tracing.build("vote", 1.0, batches))
    app.test_client().get("/")
    assert exporter.get_finished_spans() == ()

    server = ServiceServer(_never_built, Settings(), "vote")
    server.cfg.worker_exit(server, SimpleNamespace(wsgi=app))

    assert [span.name for span in exporter.get_finished_spans()] == ["GET /"]
