"""What every service shares (web/observed.py): body and header limits, CSRF, errors in
cloudvote's words, probes, metrics, tracing, and the served-by headers and footer."""

from __future__ import annotations

import io
import json
import re
import socket

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from cloudvote import __version__
from cloudvote.config import Settings
from tests.unit.entrypoints.conftest import (
    PARENT_SPAN,
    TRACE_ID,
    Harness,
    Shown,
    result_app,
    vote_app,
)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@pytest.mark.parametrize(
    ("path", "data", "content_type"),
    [
        ("/", "vote=a&pad=" + "x" * 4100, "application/x-www-form-urlencoded"),
        ("/polls/lunch", "vote=pizza&pad=" + "x" * 4100, "application/x-www-form-urlencoded"),
        (
            "/api/polls/default/votes",
            json.dumps({"option": "a", "pad": "x" * 4100}),
            "application/json",
        ),
    ],
)
def test_a_body_over_4_kib_is_413(
    harness: Harness, client: FlaskClient, path: str, data: str, content_type: str
) -> None:
    response = client.post(path, data=data, content_type=content_type)

    assert response.status_code == 413
    assert harness.queue.depth() == 0


def _post_chunked(app: Flask, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    """POST a body without Content-Length, as gunicorn and werkzeug hand a chunked one on:
    a stream the server ends at the body's end (wsgi.input_terminated)."""
    builder = EnvironBuilder(
        path=path, method="POST", content_type=content_type, input_stream=io.BytesIO(body)
    )
    try:
        environ = builder.get_environ()
        del environ["CONTENT_LENGTH"]
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
        app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    finally:
        builder.close()
    return int(status.split()[0]), b"".join(app_iter)


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status"),
    [
        ("/", b"vote=a", "application/x-www-form-urlencoded", 303),
        ("/api/polls/default/votes", b'{"option": "a"}', "application/json", 202),
    ],
)
def test_a_small_chunked_body_without_content_length_is_accepted(
    harness: Harness, path: str, body: bytes, content_type: str, status: int
) -> None:
    answered, _ = _post_chunked(harness.app, path, body, content_type)

    assert answered == status
    assert harness.queue.depth() == 1


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/", b"vote=a&pad=" + b"x" * 5000, "application/x-www-form-urlencoded"),
        (
            "/api/polls/default/votes",
            json.dumps({"option": "a", "pad": "x" * 5000}).encode(),
            "application/json",
        ),
    ],
    ids=["form", "json"],
)
def test_a_chunked_body_over_4_kib_is_413_and_nothing_is_queued(
    harness: Harness, path: str, body: bytes, content_type: str
) -> None:
    answered, _ = _post_chunked(harness.app, path, body, content_type)

    assert (answered, harness.queue.depth()) == (413, 0)


def test_a_body_just_under_4_kib_is_accepted(harness: Harness, client: FlaskClient) -> None:
    data = "vote=a&pad=" + "x" * (4096 - len("vote=a&pad="))

    response = client.post("/", data=data, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 303
    assert harness.queue.depth() == 1


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

    assert response.status_code == 405
    assert allowed in response.headers["Allow"]
    message = response.get_data(as_text=True)
    assert f"{method} is not allowed on {path}; allowed: " in message
    assert allowed in message.split("allowed: ")[1]
    assert harness.queue.depth() == 0


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

    assert response.status_code == 403
    assert "CSRF" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


def test_a_cross_site_api_vote_is_refused(harness: Harness, client: FlaskClient) -> None:
    response = client.post(
        "/api/polls/default/votes", json={"option": "a"}, headers={"Origin": "http://evil.example"}
    )

    assert response.status_code == 403
    error = response.get_json()["error"]
    assert "cross-site request" in error and "form" not in error
    assert harness.queue.depth() == 0


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

    assert page.status_code == status
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f"<h1>{status}</h1>" in html and words in html
    assert 'href="/results"' in html and 'id="served-by"' in html  # the site's own page
    assert "Werkzeug" not in html and f"<title>{status} · cloudvote</title>" in html
    assert api.status_code == status and api.mimetype == "application/json"
    assert set(api.get_json()) == {"error", "status"}
    assert harness.queue.depth() == 0


def test_an_api_404_is_json_naming_where_things_are(client: FlaskClient) -> None:
    response = client.get("/api/nothing-here", headers={"Accept": BROWSER_ACCEPT})

    assert response.status_code == 404
    assert response.get_json() == {
        "error": "there is nothing at /api/nothing-here: the ballot is at /, the results at"
        " /results, and the API at /api/polls",
        "status": 404,
    }


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_the_413_names_the_4_kib_limit_whether_sized_or_chunked(
    harness: Harness, client: FlaskClient, chunked: bool
) -> None:
    body = json.dumps({"option": "a", "pad": "x" * 5000})
    if chunked:
        status, answer = _post_chunked(
            harness.app, "/api/polls/default/votes", body.encode(), "application/json"
        )
        error = json.loads(answer)["error"]
    else:
        response = client.post(
            "/api/polls/default/votes", data=body, content_type="application/json"
        )
        status, error = response.status_code, response.get_json()["error"]

    assert status == 413
    assert error == "the request body is larger than the 4 KiB limit (4096 bytes)"
    assert harness.queue.depth() == 0


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

    response = client.post(path, headers=headers, **kwargs)  # type: ignore[arg-type]

    assert response.status_code == 431
    assert response.mimetype == mimetype
    assert "8 KiB limit" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


def test_headers_just_under_the_limit_are_accepted(harness: Harness, client: FlaskClient) -> None:
    response = client.post("/", data={"vote": "a"}, headers={"X-Tracking": "x" * 7000})

    assert response.status_code == 303
    assert harness.queue.depth() == 1


def test_queue_down_fails_readiness_but_not_liveness(harness: Harness, client: FlaskClient) -> None:
    assert client.get("/readyz").status_code == 200
    harness.queue.available = False

    ready = client.get("/readyz")
    alive = client.get("/healthz")

    assert ready.status_code == 503
    assert set(ready.get_json()["failing"]) == {"queue"}
    assert alive.status_code == 200


def test_readiness_returns_when_the_queue_comes_back(harness: Harness, client: FlaskClient) -> None:
    harness.queue.available = False
    assert client.get("/readyz").status_code == 503

    harness.queue.available = True

    assert client.get("/readyz").get_json() == {"status": "ready", "service": "monolith"}


def test_an_incoming_traceparent_keeps_its_trace_id_with_a_new_span_id(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post(
        "/", data={"vote": "a"}, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"}
    )

    match = _TRACEPARENT.match(response.headers["traceparent"])
    assert match is not None
    assert match[1] == TRACE_ID
    assert match[2] != PARENT_SPAN


@pytest.mark.parametrize(
    "incoming", [None, "garbage", f"00-{'0' * 32}-{PARENT_SPAN}-01"], ids=["none", "bad", "zero"]
)
def test_without_a_valid_traceparent_a_new_trace_is_started(
    client: FlaskClient, incoming: str | None
) -> None:
    headers = {"traceparent": incoming} if incoming else {}

    response = client.get("/healthz", headers=headers)

    match = _TRACEPARENT.match(response.headers["traceparent"])
    assert match is not None
    assert match[1] != "0" * 32


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


def test_an_unknown_path_is_404_not_500(client: FlaskClient) -> None:
    assert client.get("/no/such/page").status_code == 404


SERVED_BY_HEADERS = {
    "Cloudvote-Service": "monolith",
    "Cloudvote-Instance": "cloudvote-6d5f-x7k2p",
    "Cloudvote-Node": "node-3",
    "Cloudvote-Version": f"{__version__}+r7",
    "Cloudvote-Shape": "monolith",
}


def _served_by(response: TestResponse) -> dict[str, str]:
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
    ],
)
def test_every_page_and_api_answer_names_the_instance_that_served_it(
    shown: Shown, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    # Closed, as a server closes every answer: a static file's answer holds the file open.
    with shown.client.open(path, method=method, **kwargs) as response:
        assert response.status_code == status
        assert _served_by(response) == SERVED_BY_HEADERS


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
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
)
def test_error_answers_name_the_instance_too(
    shown: Shown, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    response = shown.client.open(path, method=method, **kwargs)

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


def test_the_stream_names_the_instance_in_its_headers(shown: Shown) -> None:
    response = shown.client.get("/api/polls/default/results/stream", buffered=False)
    try:
        assert _served_by(response) == SERVED_BY_HEADERS
    finally:
        response.close()


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
