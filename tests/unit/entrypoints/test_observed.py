"""What every service shares (web/observed.py): body and header limits, CSRF, errors in
cloudvote's words, probes, metrics, tracing, and the served-by headers and footer."""

from __future__ import annotations

import io
import re
import socket
from typing import Any

import pytest
from flask.testing import FlaskClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Response

from cloudvote import __version__
from cloudvote.adapters.memory import InMemoryVoteQueue
from cloudvote.config import Settings
from cloudvote.observability.tracing import Tracing
from tests.unit.entrypoints.conftest import (
    PARENT_SPAN,
    TRACE_ID,
    Harness,
    Shown,
    result_app,
    vote_app,
)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


SIZED_OR_CHUNKED = pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])


def _post_vote(harness: Harness, path: str, size: int, chunked: bool) -> Response:
    """POST a good vote padded to exactly `size` bytes. A chunked one goes without
    Content-Length, as gunicorn and werkzeug hand it on: a stream the server ends at the
    body's end (wsgi.input_terminated)."""
    if path.startswith("/api/"):
        start, end, content_type = '{"option": "a", "pad": "', '"}', "application/json"
    else:
        option = "a" if path == "/" else "pizza"
        start, end, content_type = f"vote={option}&pad=", "", "application/x-www-form-urlencoded"
    body = (start + "x" * (size - len(start) - len(end)) + end).encode()
    if not chunked:
        return harness.client.post(path, data=body, content_type=content_type)
    builder = EnvironBuilder(
        path=path, method="POST", content_type=content_type, input_stream=io.BytesIO(body)
    )
    try:
        environ = builder.get_environ()
        del environ["CONTENT_LENGTH"]
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
        app_iter, status, headers = run_wsgi_app(harness.app, environ, buffered=True)
    finally:
        builder.close()
    return Response(b"".join(app_iter), status, headers)


@SIZED_OR_CHUNKED
@pytest.mark.parametrize(
    ("path", "status"), [("/", 303), ("/polls/lunch", 303), ("/api/polls/default/votes", 202)]
)
def test_a_body_of_exactly_4_kib_is_accepted(
    harness: Harness, path: str, status: int, chunked: bool
) -> None:
    response = _post_vote(harness, path, 4096, chunked)

    assert response.status_code == status
    assert harness.queue.depth() == 1


@SIZED_OR_CHUNKED
@pytest.mark.parametrize("path", ["/", "/polls/lunch", "/api/polls/default/votes"])
def test_a_body_over_4_kib_is_413_naming_the_limit_and_nothing_is_queued(
    harness: Harness, path: str, chunked: bool
) -> None:
    response = _post_vote(harness, path, 4097, chunked)

    assert harness.refused(response, 413) == (
        "the request body is larger than the 4 KiB limit (4096 bytes)"
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/", "POST"),
        ("DELETE", "/polls/lunch", "POST"),
        ("GET", "/api/polls/default/votes", "POST"),
        ("PUT", "/api/polls/default/votes", "POST"),
        ("POST", "/api/polls/default/results", "GET"),
        ("POST", "/api/polls", "GET"),
        ("POST", "/results", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_an_allow_header(
    harness: Harness, client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    response = client.open(path, method=method, data={"vote": "a"})

    message = harness.refused(response, 405)
    assert allowed in response.headers["Allow"]
    assert message.startswith(f"{method} is not allowed on {path}; allowed: ")
    assert allowed in message.split("allowed: ")[1]


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        # Fetch metadata wins over a forged-looking same-origin Origin header.
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
    ],
    ids=["fetch-cross-site", "fetch-same-site", "evil-origin", "null-origin", "fetch-wins"],
)
@pytest.mark.parametrize("path", ["/", "/polls/lunch"])
def test_a_cross_site_form_post_is_refused_and_nothing_is_queued(
    harness: Harness, client: FlaskClient, path: str, headers: dict[str, str]
) -> None:
    option = "a" if path == "/" else "pizza"

    response = client.post(path, data={"vote": option}, headers=headers)

    assert "CSRF" in harness.refused(response, 403)


def test_a_cross_site_api_vote_is_refused(harness: Harness, client: FlaskClient) -> None:
    response = client.post(
        "/api/polls/default/votes", json={"option": "a"}, headers={"Origin": "http://evil.example"}
    )

    error = harness.refused(response, 403)
    assert "cross-site request" in error and "form" not in error


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://localhost"},
        {},
    ],
    ids=["fetch-same-origin", "fetch-user-typed", "same-origin", "no-headers-like-curl"],
)
def test_a_same_origin_or_header_less_form_post_is_accepted(
    harness: Harness, client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.post("/", data={"vote": "a"}, headers=headers)

    assert response.status_code == 303
    assert harness.queue.depth() == 1


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("method", "path", "api_path", "body", "status", "words"),
    [
        (
            "GET",
            "/no-such-page",
            "/api/no-such-thing",
            "",
            404,
            "there is nothing at /no-such-page",
        ),
        ("PUT", "/", "/api/polls/default/votes", "", 405, "PUT is not allowed on /; allowed: "),
        ("POST", "/", "/api/polls/default/votes", "x" * 5000, 413, "4 KiB limit"),
    ],
    ids=["404", "405", "413"],
)
def test_a_browser_gets_an_error_page_and_an_api_client_json_in_cloudvotes_words(
    harness: Harness,
    client: FlaskClient,
    method: str,
    path: str,
    api_path: str,
    body: str,
    status: int,
    words: str,
) -> None:
    page = client.open(path, method=method, data=body, headers={"Accept": BROWSER_ACCEPT})
    api = client.open(api_path, method=method, data=body, headers={"Accept": BROWSER_ACCEPT})

    html = harness.refused(page, status)
    assert page.mimetype == "text/html"
    assert f"<h1>{status}</h1>" in html and words in html
    assert 'href="/results"' in html and 'id="served-by"' in html  # the site's own page
    assert "Werkzeug" not in html and f"<title>{status} · cloudvote</title>" in html
    harness.refused(api, status)
    assert api.mimetype == "application/json"


def test_an_api_404_is_json_naming_where_things_are(harness: Harness) -> None:
    response = harness.client.get("/api/nothing-here", headers={"Accept": BROWSER_ACCEPT})

    assert response.is_json
    assert harness.refused(response, 404) == (
        "there is nothing at /api/nothing-here: the ballot is at /, the results at /results,"
        " and the API at /api/polls"
    )


@pytest.mark.parametrize(
    ("path", "accept", "mimetype"),
    [
        ("/api/polls/default/votes", None, "application/json"),
        ("/", BROWSER_ACCEPT, "text/html"),
        ("/", None, "text/plain"),
    ],
)
def test_headers_over_8_kib_are_431_in_cloudvotes_words_and_nothing_is_queued(
    harness: Harness, client: FlaskClient, path: str, accept: str | None, mimetype: str
) -> None:
    headers = {"X-Tracking": "x" * 8200}  # the test client keeps its own Cookie header
    if accept:
        headers["Accept"] = accept
    kwargs: dict[str, object] = (
        {"json": {"option": "a"}} if path.startswith("/api") else {"data": {"vote": "a"}}
    )

    response = client.post(path, headers=headers, **kwargs)

    assert "8 KiB limit" in harness.refused(response, 431)
    assert response.mimetype == mimetype


def test_headers_just_under_the_limit_are_accepted(harness: Harness, client: FlaskClient) -> None:
    response = client.post("/", data={"vote": "a"}, headers={"X-Tracking": "x" * 7000})

    assert response.status_code == 303
    assert harness.queue.depth() == 1


def test_queue_down_fails_readiness_until_it_comes_back_but_never_liveness(
    harness: Harness, client: FlaskClient
) -> None:
    assert client.get("/readyz").status_code == 200
    harness.queue.available = False

    ready = client.get("/readyz")
    alive = client.get("/healthz")

    assert ready.status_code == 503
    assert set(ready.get_json()["failing"]) == {"queue"}
    assert alive.status_code == 200
    harness.queue.available = True
    assert client.get("/readyz").get_json() == {"status": "ready", "service": "monolith"}


def traced_vote_app(ratio: float) -> tuple[FlaskClient, InMemorySpanExporter, InMemoryVoteQueue]:
    exporter, queue = InMemorySpanExporter(), InMemoryVoteQueue()
    tracing = Tracing.exporting_to(exporter, "vote", ratio)
    return vote_app(Settings(), queue, tracing).test_client(), exporter, queue


def server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_a_sampled_traceparent_is_continued_even_at_ratio_zero() -> None:
    client, exporter, queue = traced_vote_app(ratio=0.0)

    response = client.post(
        "/", data={"vote": "a"}, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
    )

    (span,) = server_spans(exporter)
    assert span.name == "POST /"
    assert span.context is not None and span.parent is not None
    assert format_trace_id(span.context.trace_id) == TRACE_ID
    assert format_span_id(span.parent.span_id) == PARENT_SPAN
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 303
    # The answer names this hop's span, in the caller's trace, still sampled.
    assert response.headers["traceparent"] == (
        f"00-{TRACE_ID}-{format_span_id(span.context.span_id)}-01"
    )
    assert queue.receive(10, 0)[0].fields["trace"] == TRACE_ID


@pytest.mark.parametrize(
    "incoming",
    [None, "garbage", f"00-{'0' * 32}-{PARENT_SPAN}-01", f"00-{TRACE_ID}-{'0' * 16}-01"],
    ids=["none", "bad", "zero-trace", "zero-span"],
)
def test_without_a_valid_traceparent_a_new_trace_is_started(incoming: str | None) -> None:
    client, exporter, _queue = traced_vote_app(ratio=1.0)
    headers = {"traceparent": incoming} if incoming else {}

    response = client.get("/", headers=headers)

    (span,) = server_spans(exporter)
    assert span.parent is None and span.context is not None
    trace_id = format_trace_id(span.context.trace_id)
    assert trace_id not in (TRACE_ID, "0" * 32)
    match = _TRACEPARENT.match(response.headers["traceparent"])
    assert match is not None
    assert (match[1], match[2]) == (trace_id, format_span_id(span.context.span_id))


def test_an_unsampled_caller_is_not_recorded_but_keeps_its_trace_id() -> None:
    client, exporter, queue = traced_vote_app(ratio=1.0)

    response = client.post(
        "/", data={"vote": "a"}, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-00"}
    )

    assert exporter.get_finished_spans() == ()
    assert response.headers["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert response.headers["traceparent"].endswith("-00")
    assert queue.receive(10, 0)[0].fields["trace"] == TRACE_ID


def test_ratio_zero_exports_nothing_yet_every_vote_has_its_own_trace_id() -> None:
    client, exporter, queue = traced_vote_app(ratio=0.0)

    answers = [client.post("/", data={"vote": "a"}) for _ in range(3)]

    assert exporter.get_finished_spans() == ()
    headers = [_TRACEPARENT.match(answer.headers["traceparent"]) for answer in answers]
    trace_ids = [match[1] for match in headers if match is not None]
    assert [d.fields["trace"] for d in queue.receive(10, 0)] == trace_ids
    assert len(set(trace_ids)) == 3


def test_probes_and_metrics_are_not_traced() -> None:
    client, exporter, _queue = traced_vote_app(ratio=1.0)

    for path in ("/healthz", "/readyz", "/metrics"):
        assert "traceparent" not in client.get(path).headers
    client.get("/about")

    assert [span.name for span in exporter.get_finished_spans()] == ["GET /about"]


def test_a_refused_request_is_traced_with_its_status() -> None:
    client, exporter, _queue = traced_vote_app(ratio=1.0)

    response = client.post("/", data={"vote": "a"}, headers={"Sec-Fetch-Site": "cross-site"})

    assert response.status_code == 403
    (span,) = server_spans(exporter)
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 403


def test_metrics_count_accepted_votes_and_each_route_with_its_status(
    client: FlaskClient,
) -> None:
    def sample(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    accepted = 'cloudvote_votes_accepted_total{poll="default"}'
    answered = 'cloudvote_http_requests_total{endpoint="/",service="monolith",status="303"}'
    before = client.get("/metrics").get_data(as_text=True)

    client.post("/", data={"vote": "a"})
    client.post("/", data={"vote": "b"})

    after = client.get("/metrics").get_data(as_text=True)
    assert sample(after, accepted) - sample(before, accepted) == 2
    assert sample(after, answered) - sample(before, answered) == 2


def test_metrics_are_prometheus_text_with_request_counts(client: FlaskClient) -> None:
    client.get("/healthz")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert "cloudvote_http_requests_total{" in text
    assert 'service="monolith"' in text
    assert 'endpoint="/healthz"' in text
    assert "cloudvote_http_request_duration_seconds_bucket" in text


def test_healthz_answers_200(client: FlaskClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": "monolith"}


SERVED_BY_HEADERS = {
    "Cloudvote-Service": "monolith",
    "Cloudvote-Instance": "cloudvote-6d5f-x7k2p",
    "Cloudvote-Node": "node-3",
    "Cloudvote-Version": f"{__version__}+r7",
    "Cloudvote-Shape": "monolith",
}


def _served_by(response: Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("Cloudvote-")}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/", {}, 200),
        ("GET", "/polls/lunch", {}, 200),
        ("GET", "/results", {}, 200),
        ("GET", "/results/lunch", {}, 200),
        ("GET", "/about", {}, 200),
        ("POST", "/", {"data": {"vote": "a"}}, 303),
        ("POST", "/api/polls/default/votes", {"json": {"option": "b"}}, 202),
        ("GET", "/api/polls", {}, 200),
        ("GET", "/api/polls/default/results", {}, 200),
        ("GET", "/api/pipeline", {}, 200),
        ("GET", "/healthz", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/static/cloudvote.css", {}, 200),
        ("GET", "/api/polls/default/results/stream", {"buffered": False}, 200),
        # Errors too.
        ("GET", "/no/such/page", {}, 404),
        ("GET", "/results/nope", {}, 404),
        ("GET", "/api/polls/nope/results", {}, 404),
        ("POST", "/", {"data": {"vote": "zebra"}}, 400),
        (
            "POST",
            "/api/polls/default/votes",
            {"data": "{", "content_type": "application/json"},
            400,
        ),
        ("PUT", "/", {"data": {"vote": "a"}}, 405),
        ("POST", "/", {"data": {"vote": "a"}, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        ("POST", "/", {"data": "vote=a&pad=" + "x" * 5000}, 413),
    ],
    ids=lambda value: "+".join(value) if isinstance(value, dict) else None,
)
def test_every_page_api_and_error_answer_names_the_instance_that_served_it(
    shown: Shown, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    # Closed, as a server closes every answer: a static file's answer holds the file open.
    with shown.client.open(path, method=method, **kwargs) as response:
        assert response.status_code == status
        assert _served_by(response) == SERVED_BY_HEADERS


def test_outage_and_internal_error_answers_name_the_instance_too(shown: Shown) -> None:
    @shown.app.get("/broken")
    def broken() -> str:
        raise RuntimeError("a bug")

    shown.queue.available = False
    shown.store.available = False
    answers = [
        shown.client.post("/", data={"vote": "a"}),  # the queue is down
        shown.client.get("/api/polls/default/results"),  # the store is down, nothing seen
        shown.client.get("/readyz"),
        shown.client.get("/broken"),
    ]

    assert [a.status_code for a in answers] == [503, 503, 503, 500]
    for answer in answers:
        assert _served_by(answer) == SERVED_BY_HEADERS


def _footer(html: str) -> str:
    match = re.search(r'<footer class="served-by" id="served-by">(.*?)</footer>', html, re.S)
    assert match, "no served-by footer"
    return " ".join(re.sub(r"<[^>]+>", "", match[1]).split())


@pytest.mark.parametrize("path", ["/", "/results", "/about"])
def test_every_page_has_a_footer_naming_service_pod_node_version_and_shape(
    shown: Shown, path: str
) -> None:
    html = shown.client.get(path).get_data(as_text=True)

    assert _footer(html) == (
        f"Served by monolith · instance cloudvote-6d5f-x7k2p · node node-3"
        f" · version {__version__}+r7 · monolith"
    )


def test_outside_kubernetes_the_host_name_is_the_instance_and_no_node_is_claimed(
    client: FlaskClient,
) -> None:
    response = client.get("/")

    assert response.headers["Cloudvote-Instance"] == socket.gethostname()
    assert "Cloudvote-Node" not in response.headers
    footer = _footer(response.get_data(as_text=True))
    assert f"instance {socket.gethostname()}" in footer
    assert "node" not in footer


def test_the_vote_and_result_services_name_themselves_as_microservices() -> None:
    settings = Settings.from_env({"POD_NAME": "p-1", "NODE_NAME": "n-1"})
    vote = vote_app(settings).test_client().get("/")
    result = result_app(settings).test_client().get("/results")

    for response, service in ((vote, "vote"), (result, "result")):
        assert response.status_code == 200
        assert _served_by(response) == {
            "Cloudvote-Service": service,
            "Cloudvote-Instance": "p-1",
            "Cloudvote-Node": "n-1",
            "Cloudvote-Version": __version__,
            "Cloudvote-Shape": "microservices",
        }
        assert f"Served by {service} · instance p-1 · node n-1" in _footer(
            response.get_data(as_text=True)
        )
