"""The result routes (web/result.py): the results API and pages, the live stream, the
chart and the pipeline panel at first paint, and what they show while the store is down."""

from __future__ import annotations

import json
import re
import time

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.config import Settings
from cloudvote.domain.pipeline import WorkerReport
from cloudvote.domain.votes import Ballot
from cloudvote.entrypoints.web.apps import create_monolith_app
from tests.support.fakes import FakeClock
from tests.unit.entrypoints.conftest import (
    Harness,
    Shown,
    monolith_on_fakes,
    shown_monolith,
    vote_app,
)


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
    monolith = monolith_on_fakes(InMemoryVoteQueue(), InMemoryVoteStore(), max_streams=2)
    client = create_monolith_app(monolith=monolith).test_client()

    for _ in range(5):
        # Closed as a server closes every answer once it is sent.
        with client.head("/api/polls/default/results/stream") as response:
            assert response.status_code == 200

    assert monolith.live.open_streams == 0
    response = client.get("/api/polls/default/results/stream", buffered=False)
    try:
        assert response.status_code == 200
    finally:
        response.close()
    assert monolith.live.open_streams == 0


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

    assert "unavailable" in harness.refused(response, 503)
    assert int(response.headers["Retry-After"]) > 0


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
    client = vote_app(Settings()).test_client()

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
    monolith, _queue, store, live = shown_monolith(Settings(), clock, pipeline_every_s=0.02)
    client = create_monolith_app(monolith=monolith).test_client()
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
