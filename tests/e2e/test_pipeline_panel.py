"""The results page's pipeline panel, in Chromium, while the worker dies and comes back.

The microservices run as real processes on the test servers. The result service may not
talk to Redis, so everything the panel says of the queue comes from the workers' reports
in PostgreSQL: a dead worker reports nothing, and the panel must say so (its last measure,
a lag bound that grows) instead of showing a healthy, empty queue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from cloudvote import __version__
from tests.support.client import Client
from tests.support.services import Deployment, ServiceProcess, deployment_fixture, polls_file

pytestmark = [pytest.mark.integration, pytest.mark.browser]

POLLS = polls_file()
# A worker counts as silent 3 s after its last report (domain/pipeline.py); the result
# service reads the reports once a second and pushes a change at once.
SILENT_SECONDS = 8.0
# A vote's way through a running worker to the page: queue, batch, stream, DOM.
DRAINED_SECONDS = 10.0
ACTION_TIMEOUT_MS = 10_000


deployment = deployment_fixture("pipeline_panel", POLLS)


@pytest.fixture(scope="module")
def votes(deployment: Deployment) -> list[ServiceProcess]:
    """Two vote replicas, named as Kubernetes' downward API would name them."""
    return [deployment.start("vote", POD_NAME=f"vote-{n}", NODE_NAME=f"node-{n}") for n in (1, 2)]


@pytest.fixture
def page(browser: Browser, result: ServiceProcess) -> Iterator[Page]:
    context = browser.new_context(base_url=result.url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def cast(vote: ServiceProcess, option: str) -> None:
    """One vote from a new voter, through the JSON API."""
    response = Client(vote.url).vote(option)
    assert response.status_code == 202, response.text


def seconds_shown(page: Page, selector: str) -> float:
    """The number of seconds a panel row shows, e.g. 12 in "up to 12 s"."""
    text = page.text_content(selector) or ""
    found = re.search(r"(\d+(?:\.\d+)?) s\b", text)
    assert found, f"{selector} shows no seconds: {text!r}"
    return float(found[1])


def test_the_panel_shows_the_queue_waiting_while_the_worker_is_down_and_draining_after(
    deployment: Deployment, votes: list[ServiceProcess], result: ServiceProcess, page: Page
) -> None:
    first_worker = deployment.start("worker", POD_NAME="worker-a")
    cast(votes[0], "a")
    Client(result.url).wait_total(1, timeout=DRAINED_SECONDS)
    page.goto("/results")
    panel = page.locator("#pipeline")
    expect(page.locator("#pipe-workers")).to_have_text("1 reporting: worker-a")
    expect(page.locator("#pipe-queue")).to_have_text("0 waiting")
    expect(page.locator("#pipe-lag")).to_have_text("none")
    expect(page.locator("#pipe-batch")).to_have_text(
        re.compile(r"^1 vote, \d+ s ago, by worker-a$")
    )
    expect(page.locator("#pipe-store")).to_have_text("reachable")
    expect(panel).not_to_have_class(re.compile(r"\balarm\b"))

    # The worker dies mid-run; votes keep arriving, through both vote replicas.
    first_worker.kill()
    for n, option in enumerate("abb"):
        cast(votes[n % 2], option)

    workers = page.locator("#pipe-workers")
    expect(workers).to_have_text(
        re.compile(r"^silent for \d+ s: votes wait in the queue, none are lost$"),
        timeout=SILENT_SECONDS * 1000,
    )
    expect(panel).to_have_class(re.compile(r"\balarm\b"))
    # Nobody measures the queue now (result may not reach Redis): the panel dates the last
    # measure, and bounds the lag by the silence, which grows on the page by itself.
    expect(page.locator("#pipe-queue")).to_have_text(
        re.compile(r"^0 waiting when last measured, \d+ s ago$")
    )
    expect(page.locator("#pipe-lag")).to_have_text(re.compile(r"^up to \d+ s$"))
    lag_before, silent_before = (
        seconds_shown(page, "#pipe-lag"),
        seconds_shown(page, "#pipe-workers"),
    )
    page.wait_for_timeout(2_500)
    assert seconds_shown(page, "#pipe-lag") >= lag_before + 2
    assert seconds_shown(page, "#pipe-workers") >= silent_before + 2
    assert page.text_content("#count-a") == "1"  # the three votes wait in the queue
    assert page.text_content("#total") == "1"

    # A new worker (a new pod) takes over and drains what waited.
    deployment.start("worker", POD_NAME="worker-b")

    expect(page.locator("#pipe-workers")).to_have_text(
        "1 reporting: worker-b", timeout=DRAINED_SECONDS * 1000
    )
    expect(page.locator("#total")).to_have_text("4", timeout=DRAINED_SECONDS * 1000)
    expect(page.locator("#count-b")).to_have_text("2")
    expect(page.locator("#pipe-queue")).to_have_text("0 waiting", timeout=DRAINED_SECONDS * 1000)
    expect(page.locator("#pipe-lag")).to_have_text("none")
    expect(page.locator("#pipe-batch")).to_have_text(
        re.compile(r"^3 votes, \d+ s ago, by worker-b$")
    )
    assert seconds_shown(page, "#pipe-batch") < 5
    expect(page.locator("#pipe-replicas")).to_have_text(
        "2 took votes in the last minute: vote-1, vote-2"
    )
    expect(panel).not_to_have_class(re.compile(r"\balarm\b"))


def test_vote_and_result_name_the_instance_that_served_them(
    votes: list[ServiceProcess], result: ServiceProcess, page: Page
) -> None:
    for n, vote in enumerate(votes, start=1):
        for path in ("/", "/about", "/api/polls", "/no/such/page"):
            response = Client(vote.url).get(path)
            assert {k: v for k, v in response.headers.items() if k.startswith("Cloudvote-")} == {
                "Cloudvote-Service": "vote",
                "Cloudvote-Instance": f"vote-{n}",
                "Cloudvote-Node": f"node-{n}",
                "Cloudvote-Version": __version__,
                "Cloudvote-Shape": "microservices",
            }, path
    answered = Client(result.url).get("/api/polls/default/results")
    assert answered.headers["Cloudvote-Service"] == "result"
    assert answered.headers["Cloudvote-Shape"] == "microservices"
    assert "Cloudvote-Node" not in answered.headers  # not in Kubernetes: no node to name
    result_instance = answered.headers["Cloudvote-Instance"]
    assert result_instance  # the host's name, standing for the container

    page.goto(f"{votes[1].url}/")
    expect(page.locator("#served-by")).to_have_text(
        re.compile(
            r"Served by vote\s+· instance vote-2\s+· node node-2"
            rf"\s+· version {re.escape(__version__)}\s+· microservices"
        )
    )
    page.goto("/results")
    expect(page.locator("#served-instance")).to_have_text(result_instance)
    expect(page.locator("#served-shape")).to_have_text("microservices")
    expect(page.locator("#served-node")).to_have_count(0)
    page.goto(f"{votes[0].url}/about")
    expect(page.locator("section.current h2")).to_have_text("Microservices on Kubernetes")
