"""Live results for many viewers: `cloudvote result` holding hundreds to thousands of open
SSE streams (tests/support/sse_crowd.py), with vote and worker as real processes.

Each test votes in a poll of its own (see POLLS), so the shared processes can serve every
test while each still checks exact totals. The result service runs WEB_CONCURRENCY=2, as
in production, unless a test starts its own.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.support.client import Client
from tests.support.probes import probe_latencies, timed_get
from tests.support.services import Deployment, ServiceProcess, deployment_fixture, polls_file
from tests.support.sse_crowd import ThreadedSseCrowd
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

POLLS = polls_file("hundred", "every-stream", "page", "crowd", "capped")
HTTP_TIMEOUT = 10.0
DRAIN_SECONDS = 20.0
# Every stream's first event: it carries the counts the process already holds.
FIRST_EVENT_SECONDS = 5.0
# A vote's way to every open stream: queue, worker, commit, change feed, fan-out.
DELIVERY_SECONDS = 10.0
PROBE_BOUND = 0.1
# A viewer that goes away sends nothing: the process looks for a closed connection at each
# keep-alive (every 15 s), and frees the slot then, plus slack.
KEEP_ALIVE_SECONDS = 15
SLOT_FREED_SECONDS = KEEP_ALIVE_SECONDS + 5


# -- fixtures --------------------------------------------------------------------------------


deployment = deployment_fixture("live_results", POLLS)


# -- helpers ---------------------------------------------------------------------------------


def stream_url(result: ServiceProcess, poll: str) -> str:
    return f"{result.url}/api/polls/{poll}/results/stream"


# -- many viewers ----------------------------------------------------------------------------


def test_a_hundred_viewers_each_get_results_at_once_and_healthz_stays_fast(
    result: ServiceProcess,
) -> None:
    """Old result (gthread, 32 threads x 2 workers): 36 of the 100 streams never got an
    answer, and /healthz queued behind the streams until it timed out."""
    with ThreadedSseCrowd(
        stream_url(result, "hundred"), 100, answer_timeout=FIRST_EVENT_SECONDS
    ) as crowd:
        with_event = crowd.wait_for_first_events(timeout=FIRST_EVENT_SECONDS)
        health = probe_latencies(f"{result.url}/healthz", calls=100, stop_after_slow=2)
        streams = crowd.streams()
        summary = crowd.summary()

    assert with_event == 100, summary
    delays = [r.first_event_at - r.opened_at for r in streams if r.first_event_at is not None]
    assert max(delays) < FIRST_EVENT_SECONDS, summary
    assert all(r.last_payload and r.last_payload["total"] == 0 for r in streams), summary
    assert health.p99 < PROBE_BOUND, health.describe()


def test_a_vote_reaches_every_open_stream(
    http: Client, vote: ServiceProcess, worker: ServiceProcess, result: ServiceProcess
) -> None:
    """Old result: only the 64 streams that had a thread saw the vote."""
    viewers = 200
    with ThreadedSseCrowd(
        stream_url(result, "every-stream"), viewers, answer_timeout=FIRST_EVENT_SECONDS
    ) as crowd:
        crowd.wait_for_first_events(timeout=FIRST_EVENT_SECONDS)
        assert http.at(vote.url).vote("b", "every-stream").status_code == 202
        reached = crowd.wait_for_total(1, timeout=DELIVERY_SECONDS)
        streams = crowd.streams()
        summary = crowd.summary()

    assert reached == viewers, summary
    assert all(
        r.last_payload == {"poll": "every-stream", "counts": {"a": 0, "b": 1, "c": 0}, "total": 1}
        for r in streams
    ), summary


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_five_thousand_viewers_all_get_events_and_every_vote_while_probes_stay_fast(
    http: Client, vote: ServiceProcess, worker: ServiceProcess, result: ServiceProcess
) -> None:
    viewers = 5_000
    with ThreadedSseCrowd(
        stream_url(result, "crowd"), viewers, answer_timeout=20, open_timeout=40
    ) as crowd:
        with_event = crowd.wait_for_first_events(timeout=20)
        opened = crowd.summary()
        health = probe_latencies(f"{result.url}/healthz", calls=100, stop_after_slow=2)
        ready = timed_get(f"{result.url}/readyz", timeout=HTTP_TIMEOUT)
        assert http.at(vote.url).vote("a", "crowd").status_code == 202
        assert http.at(vote.url).vote("c", "crowd").status_code == 202
        reached = crowd.wait_for_total(2, timeout=DELIVERY_SECONDS * 2)
        summary = crowd.summary()
        # Past the first keep-alive, where the process checks each stream for a viewer
        # that left: every stream is still there (descriptors above 1,023 included).
        time.sleep(KEEP_ALIVE_SECONDS + 3)
        still_open = len(crowd.live())
        later = crowd.summary()

    assert with_event == viewers, opened
    assert reached == viewers, summary
    assert still_open == viewers, later
    assert health.p99 < PROBE_BOUND, health.describe()
    assert ready.status == "200", ready


# -- the page --------------------------------------------------------------------------------


def rendered_counts(html: str) -> tuple[dict[str, int], int]:
    counts = {
        option: int(count)
        for option, count in re.findall(
            r'<span class="count" id="count-([^"]+)">(\d+)</span>', html
        )
    }
    total = re.search(r'<span id="total">(\d+)</span>', html)
    assert total, html
    return counts, int(total.group(1))


def test_the_results_page_shows_the_current_counts_without_javascript(
    http: Client, vote: ServiceProcess, worker: ServiceProcess, result: ServiceProcess
) -> None:
    """Old result: the page always rendered 0, and only its script filled in the counts."""
    for poll, options in (("default", "aab"), ("page", "cbcc")):
        for option in options:
            assert http.at(vote.url).vote(option, poll).status_code == 202
    http.at(result.url).wait_for_counts("default", {"a": 2, "b": 1})
    http.at(result.url).wait_for_counts("page", {"a": 0, "b": 1, "c": 3})

    default_page = http.get(f"{result.url}/results")
    poll_page = http.get(f"{result.url}/results/page")

    assert default_page.status_code == poll_page.status_code == 200
    assert rendered_counts(default_page.text) == ({"a": 2, "b": 1}, 3)
    assert rendered_counts(poll_page.text) == ({"a": 0, "b": 1, "c": 3}, 4)


# -- the stream cap --------------------------------------------------------------------------


@pytest.mark.slow
def test_streams_past_the_cap_get_503_with_retry_after_and_a_closed_one_frees_a_slot(
    deployment: Deployment,
) -> None:
    """Old result: no cap, so the sixth stream was accepted (200) like the first five."""
    capped = deployment.start("result", RESULT_MAX_STREAMS="5", WEB_CONCURRENCY="1")
    try:
        with ThreadedSseCrowd(stream_url(capped, "capped"), 5, answer_timeout=5) as crowd:
            with_event = crowd.wait_for_first_events(timeout=FIRST_EVENT_SECONDS)
            refused = crowd.open(1)[0]
            health = probe_latencies(f"{capped.url}/healthz", calls=20, stop_after_slow=2)
            api = timed_get(f"{capped.url}/api/polls/capped/results", timeout=HTTP_TIMEOUT)
            crowd.close_streams(crowd.live()[:1])
            # The process notices the closed stream on its own; a retry then gets in.
            admitted = wait_until(
                lambda: crowd.open(1)[0],
                lambda record: record.status == 200,
                timeout=SLOT_FREED_SECONDS,
                interval=0.2,
                what="a stream admitted after one closed",
            )
            crowd.wait_for_first_events(timeout=FIRST_EVENT_SECONDS)
            after = next(r for r in crowd.streams() if r.index == admitted.index)
            summary = crowd.summary()
    finally:
        capped.close()

    assert with_event == 5, summary
    assert refused.status == 503, summary
    assert refused.headers.get("retry-after", "").isdigit(), refused.headers
    body = refused.json_body()
    assert body["status"] == 503 and body["error"], body
    assert health.p99 < PROBE_BOUND, health.describe()
    assert api.status == "200", api
    assert after.first_event_at is not None, summary
