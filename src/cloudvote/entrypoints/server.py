"""Running a Flask app under gunicorn, configured from our settings.

A programmatic gunicorn keeps one command per service (`cloudvote vote`) with the same
flags and variables everywhere, instead of a gunicorn command line per Dockerfile.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.workers.ggevent import GeventWorker
from prometheus_client import multiprocess

from cloudvote.bootstrap import Shape
from cloudvote.config import Settings
from cloudvote.entrypoints.web.observed import HEADERS_TOO_LARGE

# SIGTERM → stop accepting, finish in-flight requests, exit: all within 10 s, inside
# Kubernetes' default 30 s grace period and Docker's default 10 s stop timeout.
GRACEFUL_TIMEOUT_SECONDS = 8


# How each service serves its requests, chosen by measurement (docs/performance.md).
WORKER_MODELS: dict[str, dict[str, Any]] = {
    # vote: short requests that each wait on a Redis round trip. gevent's greenlets wait
    # without OS thread switches, and concurrent votes share one pipelined round trip
    # (GroupCommitWriter); measured 604 CPU µs per vote against 785 with 8 threads.
    "vote": {
        "worker_class": "cloudvote.entrypoints.server.OwnWordsGeventWorker",
        "worker_connections": 256,
    },
    # result: thousands of idle SSE streams that wait on one in-process feed. A greenlet
    # per stream costs a few KB where a thread costs a stack and a slot in a fixed pool
    # (gthread's 32 threads froze at 64 viewers, probes included). psycopg waits through
    # gevent's patched select, so a slow database blocks only the greenlet that asked.
    # worker_connections is set from RESULT_MAX_STREAMS below.
    "result": {"worker_class": "cloudvote.entrypoints.server.OwnWordsGeventWorker"},
}
# A header field gunicorn still parses; the app refuses a header block past 8 KiB itself
# (observed.MAX_HEADER_BYTES), so that answer, by path a page or JSON, is the one clients
# meet. gunicorn's default, 8,190 bytes a field, would answer first with its own page.
HEADER_FIELD_LIMIT_BYTES = 16384
# Connections a result process takes beyond its stream limit: probes, pages and the API
# still get in when every stream slot is taken, and a stream past the limit gets its 503.
# A refused viewer's connection stays open for the keep-alive (5 s) after its 503, so the
# spare room is sized for a crowd over the limit retrying, not only for the probes; an
# unused slot costs nothing.
RESULT_SPARE_CONNECTIONS = 1000


class ServiceServer(BaseApplication):  # type: ignore[misc]
    """`owns_metrics_dir`: the metrics directory was made for this server, which removes
    it when it exits."""

    def __init__(
        self,
        factory: Callable[[Settings], Flask],
        settings: Settings,
        service: str,
        owns_metrics_dir: bool = False,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.owns_metrics_dir = owns_metrics_dir
        self.options: dict[str, Any] = {
            "bind": f"0.0.0.0:{settings.port}",
            "workers": settings.web_concurrency,
            **WORKER_MODELS[service],
            **_stream_capacity(service, settings),
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "timeout": 30,
            "keepalive": 5,
            "limit_request_field_size": HEADER_FIELD_LIMIT_BYTES,
            # Per-request access lines would cost more CPU than the vote itself; the
            # gateway (nginx, an Ingress) logs requests, and /metrics counts them.
            "accesslog": None,
            # ...and gunicorn still builds every access line (all of environ) whenever a
            # logconfig_dict is set, only for the logger to drop it: this skips the work.
            "logger_class": _NoAccessLogger,
            # gunicorn's control socket lives under $HOME, which is read-only in our
            # containers; nothing here uses it.
            "control_socket_disable": True,
            # /tmp is the one writable path under a read-only root filesystem.
            "worker_tmp_dir": "/tmp",  # noqa: S108
            "logconfig_dict": _json_logging(service, settings.log_level),
            "on_starting": _raise_open_file_limit,
            "post_worker_init": _end_streams_on_sigterm,
            "worker_exit": _flush_spans,
            "child_exit": self._forget_dead_worker_metrics,
            "on_exit": self._remove_metrics_dir,
            "proc_name": f"cloudvote-{service}",
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.factory(self.settings)

    def _forget_dead_worker_metrics(self, server: Any, worker: Any) -> None:
        if self.settings.metrics_dir:
            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                worker.pid, self.settings.metrics_dir
            )

    def _remove_metrics_dir(self, server: Any) -> None:
        """Runs in the master only, after every worker has gone."""
        if self.settings.metrics_dir and self.owns_metrics_dir:
            shutil.rmtree(self.settings.metrics_dir, ignore_errors=True)


class OwnWordsGeventWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with cloudvote's answer to a header too large to parse.

    Such a request never reaches the app, and gunicorn would answer with its own HTML
    page. The path is unknown at that point (the headers did not parse), so the answer is
    cloudvote's JSON, which a script can parse and a browser still shows as text.
    """

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, LimitRequestHeaders):
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("http.headers_too_large: %s", exc)
        body = json.dumps({"error": HEADERS_TOO_LARGE, "status": 431}).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            gunicorn_util.write_nonblock(client, head.encode() + body)
        except OSError:
            self.log.debug("could not send the 431 answer")


def _stream_capacity(service: str, settings: Settings) -> dict[str, Any]:
    if service != "result":
        return {}
    return {"worker_connections": settings.max_streams + RESULT_SPARE_CONNECTIONS}


def _raise_open_file_limit(server: Any) -> None:
    """Every open stream is a socket. Many systems start a process with a soft limit of
    1,024 files and a much higher hard limit; raising the soft one needs no privilege,
    and the workers inherit it. A hard limit below what the streams need is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:  # e.g. an unlimited hard limit on macOS
            server.log.warning("could not raise the open-file limit to %s: %s", hard, error)
    needed = server.cfg.workers * server.cfg.worker_connections + 100
    if hard != resource.RLIM_INFINITY and hard < needed:
        server.log.warning(
            "open-file limit %d is below the %d the configured connections need", hard, needed
        )


class _NoAccessLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger without access lines; its error log is unchanged."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def _json_logging(service: str, level: str) -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "cloudvote.observability.logging.JsonFormatter", "service": service}
        },
        "handlers": {"stdout": handler},
        "root": {"handlers": ["stdout"], "level": level.upper()},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def _flush_spans(server: Any, worker: Any) -> None:
    """Export the spans a server process still holds before it exits.

    Each server process built its own tracer with its app, after gunicorn forked it (no
    preload), so each has its own exporter thread and queue to flush here.
    """
    shape: Shape | None = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("cloudvote")
    if shape is not None:
        shape.tracing.shutdown()


def _end_streams_on_sigterm(worker: Any) -> None:
    """Wrap gunicorn's SIGTERM handler so open SSE streams finish instead of holding
    the worker until the graceful timeout."""
    shape: Shape = worker.wsgi.extensions["cloudvote"]
    previous = signal.getsignal(signal.SIGTERM)

    def handle(signum: int, frame: FrameType | None) -> None:
        shape.stopping.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handle)
