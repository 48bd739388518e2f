"""The Flask apps through the test client, over the in-memory queue and store.

The app is built like `create_monolith_app` builds it, but from hand-made Components, so
every outage is a switch on a fake. Each bad input checks that nothing was queued, and the
fixture fails any test whose app answered a 500.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

from cloudvote import __version__
from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.application.live_results import LiveResults, PollingTallyChanges
from cloudvote.application.pipeline import PipelineView
from cloudvote.application.results import ResultsView
from cloudvote.application.voting import VoteCaster
from cloudvote.bootstrap import Components
from cloudvote.config import Settings
from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.polls import Option, Poll, PollCatalog
from cloudvote.domain.votes import Ballot
from cloudvote.entrypoints.web.apps import _base_app, create_monolith_app
from cloudvote.entrypoints.web.result import result_blueprint
from cloudvote.entrypoints.web.vote import vote_blueprint

CATALOG = PollCatalog(
    [
        *PollCatalog.default_catalog(),
        Poll("lunch", "What for lunch?", (Option("pizza", "Pizza"), Option("salad", "Salad"))),
    ]
)
VOTER = "0123456789abcdef0123456789abcdef"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    queue: InMemoryVoteQueue
    store: InMemoryVoteStore
    statuses: list[int] = field(default_factory=list)

    def drain(self) -> None:
        """Run the worker's logic once, as the monolith's background thread would."""
        settings = DrainSettings(block_ms=0, claim_every_s=3600)
        VoteDrainer(CATALOG, self.queue, self.store, settings).drain_once()

    def results(self, poll: str = "default") -> dict[str, object]:
        response = self.client.get(f"/api/polls/{poll}/results")
        assert response.status_code == 200
        body: dict[str, object] = response.get_json()
        return body


def _components(
    queue: InMemoryVoteQueue, store: InMemoryVoteStore, max_streams: int = 100
) -> Components:
    view = ResultsView(CATALOG, store)
    changes = PollingTallyChanges(interval_s=0.01)
    return Components(
        settings=Settings(),
        catalog=CATALOG,
        caster=VoteCaster(CATALOG, queue),
        results=view,
        live=LiveResults(view, changes, max_streams=max_streams, min_interval_s=0.01),
        queue=queue,
        store=store,
        readiness={"queue": queue.ping, "store": store.ping},
    )


@pytest.fixture
def harness() -> Iterator[Harness]:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    app = create_monolith_app(components=_components(queue, store))
    h = Harness(app, app.test_client(), queue, store)

    @app.after_request
    def record(response: Response) -> Response:
        h.statuses.append(response.status_code)
        return response

    yield h
    assert 500 not in h.statuses, "the app answered 500"


@pytest.fixture
def client(harness: Harness) -> FlaskClient:
    return harness.client


def _set_cookies(response: TestResponse, name: str) -> list[str]:
    return [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]


# -- voting: happy paths -----------------------------------------------------------------


def test_form_vote_on_the_default_poll_answers_303_to_the_page_and_is_queued(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/", data={"vote": "a"})

    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert harness.queue.depth() == 1
    harness.drain()
    assert harness.results() == {"poll": "default", "counts": {"a": 1, "b": 0}, "total": 1}


def test_a_new_voter_gets_a_random_128_bit_http_only_same_site_lax_cookie(
    client: FlaskClient,
) -> None:
    response = client.post("/", data={"vote": "a"})

    [cookie] = _set_cookies(response, "voter_id")
    value = cookie.split(";", 1)[0].removeprefix("voter_id=")
    assert re.fullmatch(r"[0-9a-f]{32}", value)
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=lax" in attributes


def test_two_new_voters_get_different_ids(harness: Harness) -> None:
    first = harness.app.test_client().post("/", data={"vote": "a"})
    second = harness.app.test_client().post("/", data={"vote": "a"})

    assert _set_cookies(first, "voter_id") != _set_cookies(second, "voter_id")
    harness.drain()
    assert harness.results()["total"] == 2


def test_a_returning_voter_keeps_the_cookie_and_is_not_given_a_new_one(
    client: FlaskClient,
) -> None:
    client.set_cookie("voter_id", VOTER)

    response = client.post("/", data={"vote": "a"})

    assert response.status_code == 303
    assert _set_cookies(response, "voter_id") == []


def test_a_forged_voter_cookie_is_replaced_by_a_fresh_id(
    harness: Harness, client: FlaskClient
) -> None:
    client.set_cookie("voter_id", "admin")

    response = client.post("/", data={"vote": "a"})

    [cookie] = _set_cookies(response, "voter_id")
    assert "voter_id=admin" not in cookie
    [delivery] = harness.queue.receive(10, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", delivery.fields["voter"])


def test_a_revote_with_the_same_cookie_replaces_the_previous_vote_in_the_tallies(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/", data={"vote": "a"})
    harness.drain()
    assert harness.results()["counts"] == {"a": 1, "b": 0}

    client.post("/", data={"vote": "b"})
    harness.drain()

    assert harness.results() == {"poll": "default", "counts": {"a": 0, "b": 1}, "total": 1}


def test_a_multipart_form_vote_is_accepted_like_a_url_encoded_one(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/", data={"vote": "b"}, content_type="multipart/form-data")

    assert response.status_code == 303
    harness.drain()
    assert harness.results()["counts"] == {"a": 0, "b": 1}


def test_the_form_vote_redirect_has_no_body_and_remembers_the_choice_for_a_year(
    client: FlaskClient,
) -> None:
    response = client.post("/", data={"vote": "b"})

    assert response.status_code == 303
    assert response.get_data() == b""
    [cookie] = _set_cookies(response, "voted_default")
    assert cookie.split(";", 1)[0] == "voted_default=b"
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "max-age=31536000" in attributes
    assert "samesite=lax" in attributes


def test_form_vote_on_a_named_poll_redirects_back_to_that_poll(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/polls/lunch", data={"vote": "salad"})

    assert response.status_code == 303
    assert response.headers["Location"] == "/polls/lunch"
    harness.drain()
    assert harness.results("lunch")["counts"] == {"pizza": 0, "salad": 1}


def test_the_page_remembers_the_choice_after_the_redirect(client: FlaskClient) -> None:
    client.post("/", data={"vote": "b"})

    page = client.get("/")

    assert page.status_code == 200
    assert 'id="voted"' in page.get_data(as_text=True)


def test_json_vote_answers_202_with_exactly_poll_option_and_status(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/api/polls/lunch/votes", json={"option": "pizza"})

    assert response.status_code == 202
    assert response.get_json() == {"poll": "lunch", "option": "pizza", "status": "accepted"}
    assert len(_set_cookies(response, "voter_id")) == 1
    harness.drain()
    assert harness.results("lunch")["counts"] == {"pizza": 1, "salad": 0}


def test_json_revote_by_the_same_voter_replaces_the_vote(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/api/polls/default/votes", json={"option": "a"})
    client.post("/api/polls/default/votes", json={"option": "b"})
    harness.drain()

    assert harness.results()["counts"] == {"a": 0, "b": 1}


def test_the_vote_page_shows_every_option_and_sets_the_voter_cookie(client: FlaskClient) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    page = response.get_data(as_text=True)
    assert 'value="a"' in page
    assert "Cats" in page
    assert "Dogs" in page
    assert len(_set_cookies(response, "voter_id")) == 1


def test_a_named_poll_has_its_own_vote_page(client: FlaskClient) -> None:
    response = client.get("/polls/lunch")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "What for lunch?" in page
    assert 'action="/polls/lunch"' in page


# -- results -----------------------------------------------------------------------------


def test_the_polls_api_lists_every_poll_with_its_options(client: FlaskClient) -> None:
    response = client.get("/api/polls")

    assert response.status_code == 200
    assert response.get_json() == {
        "polls": [
            {
                "id": "default",
                "question": "Cats or Dogs?",
                "options": [{"id": "a", "label": "Cats"}, {"id": "b", "label": "Dogs"}],
            },
            {
                "id": "lunch",
                "question": "What for lunch?",
                "options": [{"id": "pizza", "label": "Pizza"}, {"id": "salad", "label": "Salad"}],
            },
        ]
    }


def test_results_api_has_exactly_poll_counts_and_total_with_zeros(client: FlaskClient) -> None:
    response = client.get("/api/polls/default/results")

    assert response.status_code == 200
    body = response.get_json()
    assert body == {"poll": "default", "counts": {"a": 0, "b": 0}, "total": 0}
    assert list(body) == ["poll", "counts", "total"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(("path", "poll"), [("/results", "default"), ("/results/lunch", "lunch")])
def test_results_pages_point_the_chart_at_their_poll(
    client: FlaskClient, path: str, poll: str
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    assert f"/api/polls/{poll}/results/stream" in response.get_data(as_text=True)


@pytest.mark.timeout(20)
def test_head_requests_on_the_stream_never_keep_a_slot() -> None:
    """Uptime checkers and `curl -I` send HEAD: werkzeug closes that body unread."""
    components = _components(InMemoryVoteQueue(), InMemoryVoteStore(), max_streams=2)
    client = create_monolith_app(components=components).test_client()
    assert components.live is not None

    for _ in range(5):
        # Closed as a server closes every answer once it is sent.
        with client.head("/api/polls/default/results/stream") as response:
            assert response.status_code == 200

    assert components.live.open_streams == 0
    response = client.get("/api/polls/default/results/stream", buffered=False)
    try:
        assert response.status_code == 200
    finally:
        response.close()
    assert components.live.open_streams == 0


def test_the_results_stream_sends_the_current_counts_first(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/", data={"vote": "b"})
    harness.drain()

    response = client.get("/api/polls/default/results/stream", buffered=False)
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-store"
        received = b""
        for chunk in response.iter_encoded():
            received += chunk
            if b"event: results" in received and received.endswith(b"\n\n"):
                break
            assert len(received) < 4096, "no results event in the first 4 KiB"
    finally:
        response.close()

    text = received.decode()
    assert text.startswith("retry: ")
    data_line = next(line for line in text.splitlines() if line.startswith("data: "))
    assert json.loads(data_line.removeprefix("data: ")) == {
        "poll": "default",
        "counts": {"a": 0, "b": 1},
        "total": 1,
    }


# -- every bad input: clear message, nothing queued, no 500 -------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/polls/nope"),
        ("POST", "/polls/nope"),
        ("POST", "/api/polls/nope/votes"),
        ("GET", "/results/nope"),
        ("GET", "/api/polls/nope/results"),
        ("GET", "/api/polls/nope/results/stream"),
    ],
)
def test_an_unknown_poll_is_404_and_nothing_is_queued(
    harness: Harness, client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method, data={"vote": "a"})

    assert response.status_code == 404
    assert "unknown poll 'nope'" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


def test_an_unknown_poll_in_the_json_api_is_404_even_with_a_good_body(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/api/polls/nope/votes", json={"option": "a"})

    assert response.status_code == 404
    assert response.get_json() == {"error": "unknown poll 'nope'", "status": 404}
    assert harness.queue.depth() == 0


def test_an_unknown_option_in_the_form_is_400_naming_the_valid_options(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/", data={"vote": "c"})

    assert response.status_code == 400
    assert "valid options: a, b" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


def test_an_unknown_option_in_the_api_is_400_naming_the_valid_options(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/api/polls/lunch/votes", json={"option": "soup"})

    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == 400
    assert "valid options: pizza, salad" in body["error"]
    assert harness.queue.depth() == 0


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{",
        "not json",
        "[]",
        '"a"',
        "null",
        "{}",
        '{"option": ""}',
        '{"option": 1}',
        '{"option": null}',
        '{"option": ["a"]}',
        '{"choice": "a"}',
    ],
)
def test_a_missing_or_malformed_json_body_is_400(
    harness: Harness, client: FlaskClient, body: str
) -> None:
    response = client.post("/api/polls/default/votes", data=body, content_type="application/json")

    assert response.status_code == 400
    assert '"option"' in response.get_json()["error"]
    assert harness.queue.depth() == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"option": "a"}', "text/plain"),
        ("option=a", "application/x-www-form-urlencoded"),
        ('{"option": "a"}', None),
    ],
)
def test_a_vote_api_body_that_is_not_declared_json_is_415_naming_application_json(
    harness: Harness, client: FlaskClient, data: str, content_type: str | None
) -> None:
    response = client.post("/api/polls/default/votes", data=data, content_type=content_type)

    assert response.status_code == 415
    assert "Content-Type: application/json" in response.get_json()["error"]
    assert harness.queue.depth() == 0


@pytest.mark.parametrize(
    "data", [{}, {"vote": ""}, {"choice": "a"}], ids=["no-field", "empty", "other-field"]
)
@pytest.mark.parametrize("path", ["/", "/polls/lunch"])
def test_a_form_post_without_the_vote_field_is_400(
    harness: Harness, client: FlaskClient, path: str, data: dict[str, str]
) -> None:
    response = client.post(path, data=data)

    assert response.status_code == 400
    assert "missing form field 'vote'" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


def test_a_form_post_with_a_json_body_is_400(harness: Harness, client: FlaskClient) -> None:
    response = client.post("/", json={"vote": "a"})

    assert response.status_code == 400
    assert harness.queue.depth() == 0


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


# -- errors in cloudvote's words -----------------------------------------------------------

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


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"option": 1}', '"option" must be a string, not a number'),
        ('{"option": true}', '"option" must be a string, not true or false'),
        ('{"option": ["a"]}', '"option" must be a string, not a list'),
        ('{"option": ""}', '"option" must not be empty'),
        ('{"choice": "a"}', 'missing "option"'),
        ("[1]", "the body is not a JSON object"),
        ("{", "the body is not a JSON object"),
    ],
)
def test_a_bad_json_vote_is_told_exactly_what_is_wrong(
    harness: Harness, client: FlaskClient, body: str, error: str
) -> None:
    response = client.post("/api/polls/default/votes", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.get_json()["error"] == f'{error}; expected {{"option": "<option id>"}}'
    assert harness.queue.depth() == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"vote=%ff%fe", "application/x-www-form-urlencoded"),
        (b"vote=\xff", "application/x-www-form-urlencoded"),
        (
            b'--x\r\nContent-Disposition: form-data; name="vote"\r\n\r\n\xff\xfe\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
        ),
    ],
    ids=["percent-encoded", "raw", "multipart"],
)
def test_a_form_value_that_is_not_utf8_is_a_clear_400(
    harness: Harness, client: FlaskClient, body: bytes, content_type: str
) -> None:
    response = client.post("/", data=body, content_type=content_type)

    assert response.status_code == 400
    assert "form field 'vote' is not valid UTF-8 text" in response.get_data(as_text=True)
    assert harness.queue.depth() == 0


# -- outages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/", {"data": {"vote": "a"}}),
        ("/polls/lunch", {"data": {"vote": "pizza"}}),
        ("/api/polls/default/votes", {"json": {"option": "a"}}),
    ],
)
def test_queue_down_answers_503_with_retry_after_and_stores_nothing(
    harness: Harness, client: FlaskClient, path: str, kwargs: dict[str, object]
) -> None:
    harness.queue.available = False

    response = client.post(path, **kwargs)

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "nothing was stored" in response.get_data(as_text=True)
    harness.queue.available = True
    assert harness.queue.depth() == 0


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


def test_store_down_serves_the_last_counts_seen_marked_stale(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/", data={"vote": "a"})
    harness.drain()
    assert harness.results()["counts"] == {"a": 1, "b": 0}
    harness.store.available = False

    response = client.get("/api/polls/default/results")

    assert response.status_code == 200
    assert response.get_json() == {
        "poll": "default",
        "counts": {"a": 1, "b": 0},
        "total": 1,
        "stale": True,
    }
    assert client.get("/readyz").status_code == 503


def test_store_down_before_any_counts_were_seen_is_503_with_retry_after(
    harness: Harness, client: FlaskClient
) -> None:
    harness.store.available = False

    response = client.get("/api/polls/default/results")

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "unavailable" in response.get_json()["error"]


def test_store_down_does_not_stop_votes_being_accepted(
    harness: Harness, client: FlaskClient
) -> None:
    harness.store.available = False

    response = client.post("/", data={"vote": "a"})

    assert response.status_code == 303
    assert harness.queue.depth() == 1


# -- tracing, metrics, health ------------------------------------------------------------


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


def test_the_trace_id_travels_with_the_vote_into_the_queue(
    harness: Harness, client: FlaskClient
) -> None:
    client.post(
        "/api/polls/default/votes",
        json={"option": "b"},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"},
    )

    [delivery] = harness.queue.receive(10, 0)
    assert delivery.fields["trace"] == TRACE_ID


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


def test_the_vote_app_alone_serves_no_result_routes() -> None:
    queue = InMemoryVoteQueue()
    components = Components(
        Settings(), CATALOG, caster=VoteCaster(CATALOG, queue), readiness={"queue": queue.ping}
    )
    app = _base_app("vote", components)
    app.register_blueprint(vote_blueprint(VoteCaster(CATALOG, queue)))
    client = app.test_client()

    assert client.post("/", data={"vote": "a"}).status_code == 303
    assert client.get("/api/polls/default/results").status_code == 404
    assert client.get("/api/polls").status_code == 200
    assert queue.depth() == 1


# -- who served you: headers on every answer, the footer on every page ---------------------

POD = {"POD_NAME": "cloudvote-6d5f-x7k2p", "NODE_NAME": "node-3", "CLOUDVOTE_RELEASE": "r7"}
SERVED_BY_HEADERS = {
    "Cloudvote-Service": "monolith",
    "Cloudvote-Instance": "cloudvote-6d5f-x7k2p",
    "Cloudvote-Node": "node-3",
    "Cloudvote-Version": f"{__version__}+r7",
    "Cloudvote-Shape": "monolith",
}


class FakeClock:
    """Seconds since the epoch, moved by hand: the store's clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Shown:
    """A monolith on fakes, with a pod's identity and the pipeline panel switched on."""

    app: Flask
    client: FlaskClient
    queue: InMemoryVoteQueue
    store: InMemoryVoteStore
    live: LiveResults
    clock: FakeClock

    def drain(self, worker: str = "worker-1") -> None:
        settings = DrainSettings(block_ms=0, claim_every_s=3600)
        VoteDrainer(CATALOG, self.queue, self.store, settings, name=worker).drain_once()


def _shown_components(
    settings: Settings, clock: FakeClock, pipeline_every_s: float = 1.0
) -> tuple[Components, InMemoryVoteQueue, InMemoryVoteStore, LiveResults]:
    queue, store = InMemoryVoteQueue(clock), InMemoryVoteStore(clock)
    view = ResultsView(CATALOG, store)
    live = LiveResults(
        view,
        PollingTallyChanges(interval_s=0.01),
        max_streams=10,
        min_interval_s=0.01,
        pipeline=PipelineView(store, clock),
        pipeline_every_s=pipeline_every_s,
    )
    components = Components(
        settings=settings,
        catalog=CATALOG,
        caster=VoteCaster(CATALOG, queue, settings.instance_name()),
        results=view,
        live=live,
        queue=queue,
        store=store,
        readiness={"queue": queue.ping, "store": store.ping},
    )
    return components, queue, store, live


@pytest.fixture
def shown() -> Iterator[Shown]:
    clock = FakeClock()
    components, queue, store, live = _shown_components(Settings.from_env(POD), clock)
    app = create_monolith_app(components=components)
    yield Shown(app, app.test_client(), queue, store, live, clock)
    live.stop()


def _result_app(settings: Settings) -> Flask:
    components, _queue, _store, live = _shown_components(settings, FakeClock())
    app = _base_app("result", components)
    app.register_blueprint(result_blueprint(live))
    return app


def _vote_app(settings: Settings) -> Flask:
    queue = InMemoryVoteQueue()
    caster = VoteCaster(CATALOG, queue, settings.instance_name())
    components = Components(settings, CATALOG, caster=caster, readiness={"queue": queue.ping})
    app = _base_app("vote", components)
    app.register_blueprint(vote_blueprint(caster))
    return app


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
    vote = _vote_app(settings).test_client().get("/")
    result = _result_app(settings).test_client().get("/results")

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


def test_a_vote_carries_the_name_of_the_replica_that_accepted_it(shown: Shown) -> None:
    shown.client.post("/", data={"vote": "a"})

    [delivery] = shown.queue.receive(10, 0)
    assert delivery.fields["via"] == "cloudvote-6d5f-x7k2p"


# -- /about ----------------------------------------------------------------------------------


def _sections(html: str) -> dict[str, tuple[str, str]]:
    """Each shape's section: (its class, its paragraph as plain text)."""
    found = re.findall(
        r'<section id="([a-z]+)"(?: class="([a-z]+)")?>\s*<h2>[^<]*</h2>\s*<p>(.*?)</p>', html, re.S
    )
    return {name: (cls, " ".join(re.sub(r"<[^>]+>", "", p).split())) for name, cls, p in found}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def test_about_explains_each_shape_in_three_sentences(shown: Shown) -> None:
    html = shown.client.get("/about").get_data(as_text=True)

    sections = _sections(html)
    assert set(sections) == {"monolith", "compose", "kubernetes"}
    for name, (_, text) in sections.items():
        assert len(_sentences(text)) == 3, (name, _sentences(text))


@pytest.mark.parametrize(
    ("app", "current"),
    [
        (
            lambda: create_monolith_app(
                components=_components(InMemoryVoteQueue(), InMemoryVoteStore())
            ),
            "monolith",
        ),
        (lambda: _vote_app(Settings()), "compose"),
        (
            lambda: _result_app(Settings.from_env({"POD_NAME": "r-1", "NODE_NAME": "n"})),
            "kubernetes",
        ),
    ],
    ids=["monolith", "compose", "kubernetes"],
)
def test_about_marks_the_shape_that_served_it(app: Callable[[], Flask], current: str) -> None:
    html = app().test_client().get("/about").get_data(as_text=True)

    marked = [name for name, (cls, _) in _sections(html).items() if cls == "current"]
    assert marked == [current]


def test_about_links_the_concept_map() -> None:
    settings = Settings.from_env(
        {"CLOUDVOTE_DOCS_URL": "https://example.org/cloudvote/docs/concepts.md"}
    )
    html = _vote_app(settings).test_client().get("/about").get_data(as_text=True)

    assert '<a href="https://example.org/cloudvote/docs/concepts.md">docs/concepts.md</a>' in html


def test_about_names_the_concept_map_where_no_docs_url_is_set(shown: Shown) -> None:
    html = shown.client.get("/about").get_data(as_text=True)

    assert "docs/concepts.md" in html


# -- the results page at first paint: the chart ----------------------------------------------


def _text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:dd|span|p)>', html, re.S)
    assert match, f"no #{element_id}"
    return " ".join(re.sub(r"<[^>]+>", "", match[1]).split())


def test_the_chart_has_counts_shares_and_bars_in_the_html_at_first_paint(shown: Shown) -> None:
    for n, option in enumerate("aab"):
        shown.queue.enqueue(Ballot("default", option, f"{n:032x}"))
    shown.drain()

    html = shown.client.get("/results").get_data(as_text=True)

    assert (_text(html, "count-a"), _text(html, "share-a")) == ("2", "67%")
    assert (_text(html, "count-b"), _text(html, "share-b")) == ("1", "33%")
    assert _text(html, "total") == "3"
    assert 'id="bar-a" style="width:66.7%"' in html
    assert 'id="bar-b" style="width:33.3%"' in html


def test_each_option_has_its_own_colour_and_the_changes_are_announced(shown: Shown) -> None:
    html = shown.client.get("/results/lunch").get_data(as_text=True)

    colours = re.findall(r'class="bar (option-\d)" id="bar-(\w+)"', html)
    assert colours == [("option-0", "pizza"), ("option-1", "salad")]
    assert re.search(r'<p id="announce" [^>]*aria-live="polite"', html)


# -- the results page at first paint: the pipeline panel -------------------------------------


def _panel(html: str) -> dict[str, str]:
    return {
        row: _text(html, f"pipe-{row}")
        for row in ("queue", "lag", "batch", "workers", "store", "replicas")
    }


def _panel_classes(html: str) -> set[str]:
    match = re.search(r'<section class="([^"]*)" id="pipeline"', html)
    assert match, "no pipeline panel"
    return set(match[1].split())


def test_the_panel_shows_the_queue_the_lag_the_last_batch_and_the_replicas(
    shown: Shown,
) -> None:
    for n, (option, via) in enumerate([("a", "vote-1"), ("b", "vote-2")]):
        shown.queue.enqueue(Ballot("default", option, f"{n:032x}", via=via))
    shown.drain("worker-1")  # reports an empty queue, then applies the two
    shown.clock.now += 1
    shown.queue.enqueue(Ballot("default", "a", f"{9:032x}"))
    shown.clock.now += 4.5
    shown.store.record_report(
        WorkerReport("worker-1", shown.queue.depth(), shown.queue.oldest_waiting())
    )

    html = shown.client.get("/results").get_data(as_text=True)

    assert _panel(html) == {
        "queue": "1 waiting",
        "lag": "4.5 s",
        "batch": "2 votes, 6 s ago, by worker-1",
        "workers": "1 reporting: worker-1",
        "store": "reachable",
        "replicas": "2 took votes in the last minute: vote-1, vote-2",
    }
    assert "alarm" not in _panel_classes(html)


def test_a_silent_worker_shows_the_last_measure_and_a_lag_that_grows(shown: Shown) -> None:
    shown.drain("worker-1")
    shown.clock.now += 20
    shown.client.post("/", data={"vote": "a"})  # waits: no worker runs

    html = shown.client.get("/results").get_data(as_text=True)

    assert _panel(html) | {"store": "", "replicas": ""} == {
        "queue": "0 waiting when last measured, 20 s ago",
        "lag": "up to 20 s",
        "batch": "none yet",
        "workers": "silent for 20 s: votes wait in the queue, none are lost",
        "store": "",
        "replicas": "",
    }
    assert "alarm" in _panel_classes(html)


def test_before_any_worker_reported_the_panel_says_what_it_does_not_know(shown: Shown) -> None:
    html = shown.client.get("/results").get_data(as_text=True)

    assert _panel(html) == {
        "queue": "unknown",
        "lag": "unknown",
        "batch": "none yet",
        "workers": "none has reported yet",
        "store": "reachable",
        "replicas": "0 took votes in the last minute",
    }


def test_a_worker_that_cannot_reach_the_queue_leaves_queue_and_lag_unknown(
    shown: Shown,
) -> None:
    shown.store.record_report(WorkerReport("worker-1", None, None))

    panel = _panel(shown.client.get("/results").get_data(as_text=True))

    assert panel["queue"] == "unknown: the worker cannot reach the queue"
    assert panel["lag"] == "unknown"
    assert panel["workers"] == "1 reporting: worker-1"


def test_with_the_store_down_the_panel_claims_nothing_but_that(shown: Shown) -> None:
    shown.drain("worker-1")
    shown.store.available = False

    response = shown.client.get("/results")

    assert response.status_code == 200
    assert _panel(response.get_data(as_text=True)) == {
        "queue": "unknown",
        "lag": "unknown",
        "batch": "unknown",
        "workers": "unknown",
        "store": "unreachable: counts are the last seen",
        "replicas": "unknown",
    }


def test_the_pipeline_api_answers_what_the_panel_shows(shown: Shown) -> None:
    shown.queue.enqueue(Ballot("default", "a", f"{1:032x}", via="vote-1"))
    shown.drain("worker-1")

    response = shown.client.get("/api/pipeline")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "as_of": shown.clock.now,
        "store_reachable": True,
        "queue_depth": 1,  # measured before the batch it then applied
        "oldest_waiting_at": shown.clock.now,
        "last_report_at": shown.clock.now,
        "workers_reporting": ["worker-1"],
        "last_batch": {"at": shown.clock.now, "worker": "worker-1", "size": 1},
        "vote_replicas": ["vote-1"],
    }


def test_the_vote_service_shows_no_pipeline() -> None:
    client = _vote_app(Settings()).test_client()

    assert client.get("/api/pipeline").status_code == 404


def _pipeline_events(response: TestResponse, wanted: int) -> list[dict[str, object]]:
    """The first `wanted` pipeline events of an open stream."""
    events: list[dict[str, object]] = []
    buffer = ""
    for chunk in response.iter_encoded():
        buffer += chunk.decode()
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            if event.startswith("event: pipeline\n"):
                events.append(json.loads(event.split("data: ", 1)[1]))
                if len(events) == wanted:
                    return events
    raise AssertionError(f"the stream ended after {events}")


@pytest.mark.timeout(20)
def test_a_viewer_who_arrives_later_gets_the_pipeline_as_of_now() -> None:
    """The state encoded at its last change is dated then; a viewer arriving a minute later
    must not start its ages ("silent for …") a minute short."""
    clock = FakeClock()
    components, _queue, store, live = _shown_components(Settings(), clock, pipeline_every_s=0.02)
    client = create_monolith_app(components=components).test_client()
    store.record_report(WorkerReport("worker-1", 0, None))
    clock.now += 10  # the worker died 10 s ago
    first = client.get("/api/polls/default/results/stream", buffered=False)
    second = None
    try:
        [seen_first] = _pipeline_events(first, 1)
        assert (seen_first["as_of"], seen_first["workers_reporting"]) == (clock.now, [])
        clock.now += 60  # a minute later nothing has changed but the clock ...
        time.sleep(0.2)  # ... while the feed read the pipeline a few more times

        second = client.get("/api/polls/default/results/stream", buffered=False)
        [seen_second] = _pipeline_events(second, 1)
    finally:
        first.close()
        if second is not None:
            second.close()
        live.stop()

    assert seen_second["as_of"] == clock.now
    assert seen_second["last_report_at"] == clock.now - 70
