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
from playwright.sync_api import expect, sync_playwright

from tests.compose.project import Project
from tests.support.browser import BrowserMissing, launch_chromium
from tests.support.sse_crowd import ThreadedSseCrowd

LIVE_UPDATE_MS = 10_000
# A room's worth of phones on one gateway: well inside its 5,000-stream sizing, and few
# enough for the test machine's two cores to open in a few seconds.
CROWD = 300
FIRST_EVENT_SECONDS = 15


def test_vote_through_gateway_reaches_result_api_and_page(stack: Project) -> None:
    before = stack.results()["counts"]

    # A browser-style form post: 303 back to the ballot, as the page's form does.
    status, headers, _ = stack.request(
        "POST", "/", "vote=b", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 303, headers
    # The JSON API, as a script would.
    assert stack.vote("a") == 202

    expected = {"a": before["a"] + 1, "b": before["b"] + 1}
    stack.wait_total(sum(expected.values()), timeout=30)
    assert stack.results()["counts"] == expected

    # The result page, rendered by Chromium through the gateway: the counts arrive from the
    # JSON API and then over the SSE stream, which nginx must not buffer.
    with sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except BrowserMissing as error:
            pytest.fail(str(error), pytrace=False)
        try:
            page = browser.new_page()
            page.goto(f"{stack.base_url}/results")
            expect(page.locator("#count-a")).to_have_text(
                str(expected["a"]), timeout=LIVE_UPDATE_MS
            )
            expect(page.locator("#count-b")).to_have_text(
                str(expected["b"]), timeout=LIVE_UPDATE_MS
            )
            expect(page.locator("#status")).to_have_text("live", timeout=LIVE_UPDATE_MS)
            # A new vote reaches the open page without a reload.
            assert stack.vote("a") == 202
            expect(page.locator("#count-a")).to_have_text(
                str(expected["a"] + 1), timeout=LIVE_UPDATE_MS
            )
        finally:
            browser.close()


def test_gateway_routes_each_path_to_its_service(stack: Project) -> None:
    # /healthz is not special-cased, so it falls through `/` to vote, which says so.
    status, _, body = stack.request("GET", "/healthz")
    assert (status, json.loads(body)["service"]) == (200, "vote")
    # Pages: the ballot comes from vote, the chart from result.
    assert b'action="/"' in stack.request("GET", "/")[2]
    assert b'id="chart"' in stack.request("GET", "/results")[2]
    assert b'id="chart"' in stack.request("GET", "/results/editor")[2]
    assert b"<form" in stack.request("GET", "/polls/editor")[2]
    # The APIs: results from result, everything else under /api/ from vote.
    assert stack.request("GET", "/api/polls/editor/results")[0] == 200
    assert stack.request("GET", "/api/polls")[0] == 200
    assert stack.vote("vim", poll="editor") == 202
    # The gateway's own health, and no internal metrics on the public port.
    assert stack.request("GET", "/gateway/healthz")[0] == 200
    assert stack.request("GET", "/metrics")[0] == 404


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

    answered, answer_headers, answer = stack.request(
        "POST",
        "/api/polls/default/votes",
        body or json.dumps({"option": "a"}),
        {"Content-Type": "application/json", **headers},
    )

    assert answered == status
    assert answer_headers["Content-Type"].startswith("application/json")
    assert words in json.loads(answer)["error"]
    time.sleep(1)  # a vote that slipped through would be counted by now
    assert stack.results()["total"] == total


def test_every_answer_names_the_container_that_served_it(stack: Project) -> None:
    """Under Compose the instance is the container's hostname, its short id."""
    for service, path in (("vote", "/api/polls"), ("result", "/results")):
        status, headers, body = stack.request("GET", path)
        hostname = stack.inspect(stack.container(service))["Config"]["Hostname"]

        assert status == 200
        assert headers["Cloudvote-Service"] == service
        assert headers["Cloudvote-Instance"] == hostname
        assert headers["Cloudvote-Shape"] == "microservices"
        assert "Cloudvote-Node" not in headers  # no Kubernetes node under Compose
        if service == "result":
            assert f'<code id="served-instance">{hostname}</code>' in body.decode()


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
