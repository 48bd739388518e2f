"""A vote cast through the gateway on localhost shows up in the result API and on the page.

Also the gateway's routing table (deploy/gateway/nginx.conf): which paths reach vote and
which reach result, that server-sent events pass through unbuffered, and that a crowd of
open streams through the gateway all get their first event and every vote.
"""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter

import pytest

from tests.compose.project import Project
from tests.support.browser import check_results_page_follows_votes
from tests.support.sse_crowd import ThreadedSseCrowd

LIVE_UPDATE_MS = 10_000
# A room's worth of phones on one gateway: well inside its 5,000-stream sizing, and few
# enough for the test machine's two cores to open in a few seconds.
CROWD = 300
FIRST_EVENT_SECONDS = 15


def test_vote_through_gateway_reaches_result_api_and_page(stack: Project) -> None:
    before = stack.results()["counts"]

    # A browser-style form post: 303 back to the ballot, as the page's form does.
    form = stack.http.post("/", data={"vote": "b"})
    assert form.status_code == 303, form.headers
    # The JSON API, as a script would.
    assert stack.vote("a") == 202

    expected = {"a": before["a"] + 1, "b": before["b"] + 1}
    stack.wait_total(sum(expected.values()), timeout=30)
    assert stack.results()["counts"] == expected

    check_results_page_follows_votes(
        stack.base_url, expected, lambda: stack.vote("a"), timeout_ms=LIVE_UPDATE_MS
    )


def test_gateway_routes_each_path_to_its_service(stack: Project) -> None:
    # /healthz is not special-cased, so it falls through `/` to vote, which says so.
    health = stack.http.get("/healthz")
    assert (health.status_code, health.json()["service"]) == (200, "vote")
    # Pages: the ballot comes from vote, the chart from result.
    assert 'action="/"' in stack.http.get("/").text
    assert 'id="chart"' in stack.http.get("/results").text
    assert 'id="chart"' in stack.http.get("/results/editor").text
    assert "<form" in stack.http.get("/polls/editor").text
    # The APIs: results from result, everything else under /api/ from vote.
    assert stack.http.get("/api/polls/editor/results").status_code == 200
    assert stack.http.get("/api/polls").status_code == 200
    assert stack.vote("vim", poll="editor") == 202
    # The gateway's own health, and no internal metrics on the public port.
    assert stack.http.get("/gateway/healthz").status_code == 200
    assert stack.http.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        # Past the apps' 8 KiB: vote answers, through the gateway.
        ({"X-Tracking": "x" * 10_000}, None, 431, "8 KiB limit"),
        # Past nginx's 16 KiB a line: the gateway answers, in the same words.
        ({"X-Tracking": "x" * 20_000}, None, 431, "8 KiB limit"),
        # Between the apps' 4 KiB and nginx's 8 KiB of body: vote answers.
        ({}, json.dumps({"option": "a", "pad": "x" * 5_000}), 413, "4 KiB limit"),
        # Past nginx's 8 KiB of body: the gateway answers.
        ({}, json.dumps({"option": "a", "pad": "x" * 9_000}), 413, "4 KiB limit"),
    ],
    ids=["headers-app", "headers-gateway", "body-app", "body-gateway"],
)
def test_oversized_requests_get_cloudvotes_words_from_the_app_or_the_gateway(
    stack: Project, headers: dict[str, str], body: str | None, status: int, words: str
) -> None:
    total = stack.results()["total"]

    answer = stack.http.post(
        "/api/polls/default/votes",
        data=body or json.dumps({"option": "a"}),
        headers={"Content-Type": "application/json", **headers},
    )

    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/json")
    assert words in answer.json()["error"]
    time.sleep(1)  # a vote that slipped through would be counted by now
    assert stack.results()["total"] == total


def test_every_answer_names_the_container_that_served_it(stack: Project) -> None:
    """Under Compose the instance is the container's hostname, its short id."""
    for service, path in (("vote", "/api/polls"), ("result", "/results")):
        answer = stack.http.get(path)
        headers = answer.headers
        hostname = stack.inspect(stack.container(service))["Config"]["Hostname"]

        assert answer.status_code == 200
        assert headers["Cloudvote-Service"] == service
        assert headers["Cloudvote-Instance"] == hostname
        assert headers["Cloudvote-Shape"] == "microservices"
        assert "Cloudvote-Node" not in headers  # no Kubernetes node under Compose
        if service == "result":
            assert f'<code id="served-instance">{hostname}</code>' in answer.text


def test_result_stream_is_not_buffered_by_the_gateway(stack: Project) -> None:
    """The first event arrives at once; a buffering proxy would hold it back."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        started = time.monotonic()
        connection.request("GET", "/api/polls/default/results/stream")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        received = b""
        while b"data: " not in received:
            chunk = response.fp.readline()
            assert chunk, "the stream closed before its first event"
            received += chunk
        assert time.monotonic() - started < 5, "the first event was held back"
        assert b'"poll": "default"' in received or b'"poll":"default"' in received
    finally:
        connection.close()


def test_a_crowd_of_streams_through_the_gateway_all_get_events_and_a_vote(
    stack: Project,
) -> None:
    """Every stream is answered at once and unbuffered, and one vote reaches all of them:
    the gateway neither queues streams behind each other nor holds their events back."""
    before = stack.total()
    url = f"{stack.base_url}/api/polls/default/results/stream"
    with ThreadedSseCrowd(url, CROWD, answer_timeout=FIRST_EVENT_SECONDS) as crowd:
        with_event = crowd.wait_for_first_events(timeout=FIRST_EVENT_SECONDS)
        opened = crowd.summary()
        assert stack.vote("b") == 202
        reached = crowd.wait_for_total(before + 1, timeout=LIVE_UPDATE_MS / 1000)
        streams = crowd.streams()
        summary = crowd.summary()

    assert Counter(r.outcome for r in streams) == {"200": CROWD}, opened
    assert with_event == CROWD, opened
    assert reached == CROWD, summary
    for record in streams:
        assert record.headers["content-type"].startswith("text/event-stream"), record
        # gzip on a stream would hold events back until a block filled.
        assert "content-encoding" not in record.headers, record
