"""What every web service shares: health, readiness, metrics, tracing, errors, CSRF."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, jsonify, render_template, request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from werkzeug.exceptions import HTTPException

from cloudvote.observability.identity import ServedBy
from cloudvote.observability.metrics import REQUEST_SECONDS, REQUESTS, render_metrics
from cloudvote.observability.tracing import Tracing, context_from_environ, fail, inject

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

log = logging.getLogger("cloudvote.web")

# Bodies are a vote or a short form; anything larger is refused before it is read.
MAX_BODY_BYTES = 4096
# Request headers a browser or script sends are well under 2 KiB; a bloated cookie past
# this gets cloudvote's 431. The servers in front allow more (gunicorn 16 KiB a field,
# entrypoints/server.py), so it is this answer a client sees, not a server's own page.
MAX_HEADER_BYTES = 8192
BODY_TOO_LARGE = f"the request body is larger than the 4 KiB limit ({MAX_BODY_BYTES} bytes)"
HEADERS_TOO_LARGE = (
    f"the request headers are larger than the 8 KiB limit ({MAX_HEADER_BYTES} bytes);"
    " a large cookie is the usual cause"
)
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Probes and scrapes come every few seconds from the platform, not from people: traced,
# they would be most of the traces and none of the interest.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def install_common(
    app: Flask,
    served_by: ServedBy,
    readiness: Mapping[str, Callable[[], None]],
    liveness: Callable[[], bool] = lambda: True,
    metrics_dir: str = "",
    tracing: Tracing | None = None,
) -> None:
    """What every service answers alike: its probes and metrics, the checks and headers
    around each request, and errors in cloudvote's words.

    `metrics_dir` is where the server processes write their metrics (PROMETHEUS_MULTIPROC_DIR);
    empty when this process is the only one. `tracing` gives each request a SERVER span;
    without it (the worker's side port) requests are not traced.
    """
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # The templates show who served the page in the footer.
    app.context_processor(lambda: {"served_by": served_by})
    install_request_hooks(app, served_by, tracing)
    install_probes(app, served_by.service, readiness, liveness, metrics_dir)
    install_error_handlers(app)


def install_request_hooks(app: Flask, served_by: ServedBy, tracing: Tracing | None = None) -> None:
    """Refuse what no route should see (oversized, cross-site), and time, trace and name
    every answer."""
    # Every answer names the instance that served it.
    served_by_headers = served_by.headers()
    # Every request passes these two hooks, so they read the WSGI environ directly and
    # look each metric child up once per (route, status), not per request.
    observers = _RequestMetrics(served_by.service)
    if tracing is not None:
        _install_server_spans(app, tracing.tracer)

    @app.before_request
    def start_request() -> Response | None:
        environ = request.environ
        g.started = time.perf_counter()
        if _header_bytes(environ) > MAX_HEADER_BYTES:
            return _error(431, HEADERS_TOO_LARGE)
        if environ["REQUEST_METHOD"] in _UNSAFE_METHODS:
            if _is_cross_site(environ):
                return _error(
                    403,
                    "cross-site request refused (CSRF protection): votes are accepted from"
                    " this site's own pages and from clients that are not browsers",
                )
            if not _body_within_limit(environ):
                return _error(413, BODY_TOO_LARGE)
        return None

    @app.after_request
    def finish_request(response: Response) -> Response:
        rule = request.url_rule
        requests, seconds = observers.children(
            rule.rule if rule else "unmatched", response.status_code
        )
        requests.inc()
        started = g.get("started")
        if started is not None:
            seconds.observe(time.perf_counter() - started)
        response.headers.extend(served_by_headers)
        return response


def _install_server_spans(app: Flask, tracer: trace.Tracer) -> None:
    """A SERVER span per request, continuing the caller's W3C trace when it sends one.

    The span is current while the request runs, so the vote's PRODUCER span is its child
    and votes.trace_id is its trace id. The answer's `traceparent` names this span, so a
    caller without tracing of its own can still find the trace. Registered before the
    other hooks: a request refused by them (431, 403, 413) is traced too.
    """

    @app.before_request
    def start_span() -> None:
        environ = request.environ
        if environ.get("PATH_INFO") in UNTRACED_PATHS:
            return
        method = environ["REQUEST_METHOD"]
        rule = request.url_rule
        # Named by the route, not the path: /polls/<poll_id>, not one name per poll.
        span = tracer.start_span(
            f"{method} {rule.rule}" if rule else method,
            context_from_environ(environ),
            SpanKind.SERVER,
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": method,
                    "http.route": rule.rule if rule else "",
                    "url.path": environ.get("PATH_INFO", ""),
                    "url.scheme": environ.get("wsgi.url_scheme", "http"),
                }
            )
        g.span = span
        g.span_token = otel_context.attach(trace.set_span_in_context(span))

    @app.after_request
    def name_the_trace(response: Response) -> Response:
        span: trace.Span | None = g.get("span")
        if span is None:
            return response
        headers: dict[str, str] = {}
        inject(headers, span)
        for name, value in headers.items():
            response.headers.add(name, value)
        if span.is_recording():
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        return response

    @app.teardown_request
    def end_span(error: BaseException | None) -> None:
        span: trace.Span | None = g.pop("span", None)
        if span is None:
            return
        if error is not None:
            fail(span, error)
        span.end()
        otel_context.detach(g.pop("span_token"))


def install_probes(
    app: Flask,
    service: str,
    readiness: Mapping[str, Callable[[], None]],
    liveness: Callable[[], bool],
    metrics_dir: str,
) -> None:
    """/healthz, /readyz and /metrics."""

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """Liveness: the process works. Never checks dependencies, so a database
        outage does not make Kubernetes restart every healthy pod."""
        if not liveness():
            return jsonify(status="stuck", service=service), 503
        return jsonify(status="ok", service=service), 200

    checks = {name: DeadlineCheck(check) for name, check in readiness.items()}

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        """Readiness: dependencies answer, so the pod may receive traffic."""
        for check in checks.values():
            check.start()
        failures = {}
        for name, check in checks.items():
            failure = check.outcome()
            if failure is not None:
                failures[name] = failure
        if failures:
            return jsonify(status="unavailable", service=service, failing=failures), 503
        return jsonify(status="ready", service=service), 200

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = render_metrics(metrics_dir)
        return Response(body, content_type=content_type)


def install_error_handlers(app: Flask) -> None:
    """Every error, werkzeug's or unexpected, answered in cloudvote's words."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        """Werkzeug's own errors (no route, wrong method, body too large), in our words."""
        status = error.code or 500
        allowed: list[str] = getattr(error, "valid_methods", None) or []
        response = _error(status, _explain(status, allowed) or error.description or error.name)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("http.unhandled", extra={"path": request.path})
        return _error(500, "internal error; it has been logged")


class DeadlineCheck:
    """A readiness check that answers within `deadline_s`, even against a hung server.

    A frozen Redis or PostgreSQL accepts the connection and then never replies, so a check
    run on the request would hold the probe far past its timeout. The check runs on its
    own thread instead; the probe waits at most the deadline, then reports the dependency
    as not answering. Probes arriving while an attempt is still out share that attempt,
    so a hung dependency costs one stuck thread, not one per probe.
    """

    def __init__(self, check: Callable[[], None], deadline_s: float = 1.5) -> None:
        self.check = check
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._attempt: _Attempt | None = None

    def start(self) -> None:
        with self._lock:
            if self._attempt is None or self._attempt.done.is_set():
                self._attempt = _Attempt(self.check)

    def outcome(self) -> str | None:
        """None when the check passed; otherwise why it did not."""
        with self._lock:
            attempt = self._attempt
        if attempt is None:
            return "not checked yet"
        if not attempt.done.wait(max(0.0, attempt.started + self.deadline_s - time.monotonic())):
            return f"no answer within {self.deadline_s:g} s"
        return attempt.error


class _Attempt:
    def __init__(self, check: Callable[[], None]) -> None:
        self.started = time.monotonic()
        self.done = threading.Event()
        self.error: str | None = None
        threading.Thread(target=self._run, args=(check,), name="readiness", daemon=True).start()

    def _run(self, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            self.error = str(error) or type(error).__name__
        finally:
            self.done.set()


class _RequestMetrics:
    """The request counter and histogram children per (route, status), made on first use.

    Routes are the app's own rules (or "unmatched") and statuses the few the app sends,
    so the cache stays as small as the label sets Prometheus keeps anyway.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def children(self, endpoint: str, status: int) -> tuple[Counter, Histogram]:
        key = (endpoint, status)
        found = self._children.get(key)
        if found is None:
            found = (
                REQUESTS.labels(self.service, endpoint, str(status)),
                REQUEST_SECONDS.labels(self.service, endpoint),
            )
            self._children[key] = found
        return found


def _is_cross_site(environ: Mapping[str, Any]) -> bool:
    """Browsers label cross-site requests; refusing those stops CSRF without a token.

    Fetch metadata (`Sec-Fetch-Site`) is sent by every current browser; `Origin` covers
    older ones. Non-browser clients send neither and are not CSRF vectors, so scripts
    and example-voting-app style `curl -d vote=a` keep working.
    """
    site: str | None = environ.get("HTTP_SEC_FETCH_SITE")
    if site is not None:
        return site not in ("same-origin", "none")
    origin: str | None = environ.get("HTTP_ORIGIN")
    if origin is None or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc != request.host


def _body_within_limit(environ: dict[str, Any]) -> bool:
    """False when the body is over the limit, sized or chunked; nothing more is read then.

    A sized body is judged by its Content-Length before routing, so a too-large post to
    any path gets the same 413. Werkzeug checks MAX_CONTENT_LENGTH against Content-Length
    only; a chunked body has none, and its stream then stops silently at the limit, so a
    truncated form would still be accepted. So it is read here, bounded, and Flask is
    handed the buffered copy.
    """
    if "CONTENT_LENGTH" in environ:
        length = environ["CONTENT_LENGTH"]
        return not (length.isdigit() and int(length) > MAX_BODY_BYTES)
    if "wsgi.input_terminated" not in environ:
        return True  # no length and no terminated stream: there is no body to read
    stream = environ["wsgi.input"]
    body = bytearray()
    while len(body) <= MAX_BODY_BYTES:
        chunk = stream.read(MAX_BODY_BYTES + 1 - len(body))
        if not chunk:
            environ["wsgi.input"] = io.BytesIO(bytes(body))
            environ["CONTENT_LENGTH"] = str(len(body))
            return True
        body += chunk
    return False


def _header_bytes(environ: Mapping[str, Any]) -> int:
    """The request's header block, roughly as sent: each name, value and separator."""
    return sum(
        len(key) - 1 + len(value) + 4 for key, value in environ.items() if key[:5] == "HTTP_"
    )


def _explain(status: int, allowed: list[str]) -> str | None:
    """cloudvote's words for the errors werkzeug raises before a view runs."""
    if status == 404:
        return (
            f"there is nothing at {request.path}: the ballot is at /, the results at /results,"
            " and the API at /api/polls"
        )
    if status == 405:
        return f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}"
    if status == 413:
        return BODY_TOO_LARGE
    if status == 431:
        return HEADERS_TOO_LARGE
    return None


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _wants_html() -> bool:
    """A browser asks for HTML first; curl and scripts (`*/*`) get one line of text."""
    return request.accept_mimetypes.best in ("text/html", "application/xhtml+xml")


def _error(status: int, message: str) -> Response:
    if wants_json():
        response = jsonify(error=message, status=status)
    elif _wants_html():
        page = render_template("error.html", status=status, message=message)
        response = Response(page, content_type="text/html; charset=utf-8")
    else:
        response = Response(f"{status} {message}\n", content_type="text/plain; charset=utf-8")
    response.status_code = status
    return response


def error_response(status: int, message: str, **headers: str) -> Response:
    response = _error(status, message)
    response.headers.update(headers)
    return response
