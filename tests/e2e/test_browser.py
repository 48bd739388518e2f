"""The vote and result pages in a real headless browser, against a real monolith.

Each test runs ``cloudvote dev`` as a subprocess, as a developer would, and clicks through
the pages in Debian's Chromium: a click casts a vote, and the result chart redraws from the
server-sent-events stream without reloading the page.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.support.client import Client
from tests.support.services import Monolith

pytestmark = pytest.mark.browser

# Clicks, page loads and plain waits; generous, because CI machines are slow.
ACTION_TIMEOUT_MS = 10_000
# A vote must reach an open results page within this: queue, worker, store, stream, DOM.
LIVE_UPDATE_MS = 5_000


def form_vote(url: str, option: str, path: str = "/", voter: str | None = None) -> None:
    """A vote posted by a script, as example-voting-app's clients do."""
    posted = Client(url, timeout=5).form_vote(option, path, voter)
    assert posted.status_code == 303, posted.text


def wait_for_total(server: Monolith, total: int) -> None:
    """Bounded wait until the monolith's worker thread has stored `total` votes."""
    Client(server.url, timeout=5).wait_total(total, timeout=LIVE_UPDATE_MS / 1000)


@pytest.fixture
def monolith(tmp_path: Path) -> Iterator[Monolith]:
    """A fresh monolith per test, so every test starts from zero votes."""
    server = Monolith(tmp_path / "data", tmp_path / "monolith.log")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def new_visitor(browser: Browser, monolith: Monolith) -> Iterator[Callable[[], BrowserContext]]:
    """Make browser contexts: each is a separate cookie jar, so a separate voter.

    Depending on ``monolith`` closes the contexts (and their open event streams) before the
    server stops.
    """
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(base_url=monolith.url)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_visitor: Callable[[], BrowserContext]) -> Page:
    return new_visitor().new_page()


def click_vote(page: Page, option: str) -> None:
    """Click an option on the open ballot and wait for the ballot the 303 leads back to."""
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.click(f"#vote-{option}")
    assert posted.value.status == 303, posted.value.status
    expect(page.locator(f"#vote-{option}")).to_have_class(re.compile(r"\bchosen\b"))


def expect_counts(page: Page, *, a: int, b: int) -> None:
    """The chart shows these counts and proportional bars, waiting for the live update."""
    total = a + b
    for option, count in (("a", a), ("b", b)):
        expect(page.locator(f"#count-{option}")).to_have_text(str(count), timeout=LIVE_UPDATE_MS)
        # results.js writes toFixed(1); Chromium may serialize "50.0%" back as "50%".
        percent = re.escape(f"{round(100 * count / total, 1) if total else 0:g}")
        expect(page.locator(f"#bar-{option}")).to_have_attribute(
            "style", re.compile(rf"width:\s*{percent}(\.0)?%"), timeout=LIVE_UPDATE_MS
        )
    expect(page.locator("#total")).to_have_text(str(total), timeout=LIVE_UPDATE_MS)


def expect_bar_drawn(page: Page, option: str, fraction: float) -> None:
    """The bar is really painted at this share of its track, not just styled (CSS works)."""
    page.wait_for_function(
        """([option, fraction]) => {
            const bar = document.getElementById("bar-" + option);
            const drawn = bar.getBoundingClientRect().width;
            const track = bar.parentElement.getBoundingClientRect().width;
            return track > 0 && Math.abs(drawn / track - fraction) < 0.005;
        }""",
        arg=[option, fraction],
        timeout=LIVE_UPDATE_MS,
    )


def test_clicking_an_option_casts_a_vote_that_the_results_page_shows(
    page: Page, monolith: Monolith, tmp_path: Path
) -> None:
    page.goto("/")
    expect(page.locator("#voted")).to_have_count(0)

    click_vote(page, "a")

    expect(page).to_have_url(f"{monolith.url}/")
    expect(page.locator("#voted")).to_contain_text("Your vote is in")
    page.screenshot(path=tmp_path / "ballot.png", full_page=True)
    page.goto("/results")
    expect_counts(page, a=1, b=0)


def test_results_chart_updates_live_without_a_reload(
    new_visitor: Callable[[], BrowserContext], monolith: Monolith, tmp_path: Path
) -> None:
    results = new_visitor().new_page()
    results.goto("/results")
    expect(results.locator("#status")).to_have_text("live")  # the event stream is open
    assert results.text_content("#count-a") == "0"
    assert results.text_content("#count-b") == "0"
    navigations: list[str] = []
    results.on("framenavigated", lambda frame: navigations.append(frame.url))
    results.evaluate("window.__marker = 42")

    # A vote clicked in another browser (another voter) ...
    ballot = new_visitor().new_page()
    ballot.goto("/")
    click_vote(ballot, "a")
    expect_counts(results, a=1, b=0)
    expect_bar_drawn(results, "a", 1.0)

    # ... and one posted by a script, as example-voting-app's clients do.
    form_vote(monolith.url, "b")
    expect_counts(results, a=1, b=1)
    expect_bar_drawn(results, "a", 0.5)
    expect_bar_drawn(results, "b", 0.5)

    assert results.evaluate("window.__marker") == 42, "the results page reloaded"
    assert navigations == [], f"the results page navigated: {navigations}"
    expect(results.locator("#status")).to_have_text("live")
    screenshot = tmp_path / "results.png"
    results.screenshot(path=screenshot, full_page=True)
    assert screenshot.stat().st_size > 0


def test_voting_again_moves_the_vote_to_the_new_option(page: Page, monolith: Monolith) -> None:
    page.goto("/")
    click_vote(page, "a")
    results = page.context.new_page()  # same context: same voter cookie
    results.goto("/results")
    expect_counts(results, a=1, b=0)

    click_vote(page, "b")

    expect_counts(results, a=0, b=1)
    api = Client(monolith.url).results()
    assert api["counts"] == {"a": 0, "b": 1}
    assert api["total"] == 1


def test_results_page_is_not_live_until_the_stream_delivers(page: Page, monolith: Monolith) -> None:
    """A proxy that buffers the stream must not leave a page that claims to be live."""
    form_vote(monolith.url, "a")
    # Hold the stream request unanswered, as a buffering proxy would.
    page.route("**/results/stream", lambda route: None)
    page.goto("/results")

    expect_counts(page, a=1, b=0)  # in the HTML the server rendered
    page.wait_for_timeout(1_000)  # a stream that was going to deliver would have by now
    expect(page.locator("#status")).not_to_have_text("live")


def test_results_page_shows_the_counts_with_javascript_off(
    browser: Browser, monolith: Monolith
) -> None:
    for option in ("a", "a", "b"):
        form_vote(monolith.url, option)
    wait_for_total(monolith, 3)
    context = browser.new_context(base_url=monolith.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/results")

        # No script ran, so these come from the server's HTML alone.
        assert page.text_content("#count-a") == "2"
        assert page.text_content("#count-b") == "1"
        assert page.text_content("#total") == "3"
        assert "66.7%" in (page.get_attribute("#bar-a", "style") or "")
    finally:
        context.close()


def test_a_viewer_refused_at_the_stream_limit_keeps_the_counts_and_retries(
    new_visitor: Callable[[], BrowserContext], tmp_path: Path
) -> None:
    server = Monolith(tmp_path / "capped", tmp_path / "capped.log", RESULT_MAX_STREAMS="1")
    server.start()
    try:
        form_vote(server.url, "a")
        wait_for_total(server, 1)
        first = new_visitor().new_page()
        first.goto(f"{server.url}/results")
        expect(first.locator("#status")).to_have_text("live")

        # The one stream slot is taken: the second viewer is told to wait, and keeps the
        # counts the page arrived with.
        second = new_visitor().new_page()
        refused = []
        second.on(
            "response",
            lambda r: refused.append(r.status) if r.url.endswith("/results/stream") else None,
        )
        second.goto(f"{server.url}/results")
        expect(second.locator("#status")).to_contain_text("server busy, retrying")
        assert refused and refused[0] == 503
        assert second.text_content("#count-a") == "1"

        # A slot frees up: the page's own retry, with backoff, gets the stream. The
        # server notices the closed stream when it next writes to it, so votes follow.
        first.close()
        for voter in range(2):
            form_vote(server.url, "b", voter=f"{voter:032x}")
            time.sleep(0.5)
        expect(second.locator("#status")).to_have_text("live", timeout=20_000)
        expect_counts(second, a=1, b=2)
    finally:
        server.close()


# -- the pages at a desktop's and a phone's width; screenshots for the docs -------------------

# Where the screenshots go when asked for (`CLOUDVOTE_SCREENSHOTS=docs/images`); otherwise
# they are taken into the test's tmp_path and only the layout is checked.
SCREENSHOTS_VARIABLE = "CLOUDVOTE_SCREENSHOTS"
WIDTHS = {"desktop": 1280, "phone": 375}
LONG_LABEL = "Something with a label far too long to share a line with its bar on a phone"
SCREENSHOT_POLLS = {
    "polls": [
        {
            "id": "default",
            "question": "Cats or Dogs?",
            "options": [{"id": "a", "label": "Cats"}, {"id": "b", "label": "Dogs"}],
        },
        {
            "id": "lunch",
            "question": "What for lunch?",
            "options": [
                {"id": "pizza", "label": "Pizza"},
                {"id": "salad", "label": "Salad"},
                {"id": "soup", "label": "Soup"},
                {"id": "long", "label": LONG_LABEL},
            ],
        },
    ]
}


def screenshot_directory(tmp_path: Path) -> Path:
    wanted = os.environ.get(SCREENSHOTS_VARIABLE, "")
    directory = Path(wanted) if wanted else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def bar_layout(page: Page) -> dict[str, dict[str, float]]:
    """Each bar's track and label boxes, in CSS pixels."""
    layout: dict[str, dict[str, float]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll(".chart .row")].map((row) => {
            const track = row.querySelector(".track").getBoundingClientRect();
            const label = row.querySelector(".label").getBoundingClientRect();
            return [row.querySelector(".bar").id, {
                trackLeft: track.left, trackWidth: track.width, trackTop: track.top,
                labelBottom: label.bottom, labelWidth: label.width,
            }];
        }))"""
    )
    return layout


def test_the_pages_at_desktop_and_phone_widths_keep_the_bars_wide_and_the_colours_apart(
    browser: Browser, tmp_path: Path
) -> None:
    polls_file = tmp_path / "polls.json"
    polls_file.write_text(json.dumps(SCREENSHOT_POLLS))
    # A fixed instance name, so the screenshots do not change with the host and the pid.
    server = Monolith(
        tmp_path / "data",
        tmp_path / "monolith.log",
        CLOUDVOTE_POLLS_FILE=str(polls_file),
        POD_NAME="cloudvote-dev",
    )
    server.start()
    out = screenshot_directory(tmp_path)
    try:
        for voter, option in enumerate("aaabbaaab"):
            form_vote(server.url, option, voter=f"{voter:032x}")
        for voter, option in enumerate(["pizza", "pizza", "soup", "long", "salad", "pizza"]):
            form_vote(server.url, option, "/polls/lunch", voter=f"{100 + voter:032x}")
        wait_for_total(server, 9)

        for name, width in WIDTHS.items():
            context = browser.new_context(
                base_url=server.url, viewport={"width": width, "height": 900}
            )
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            # The ballot as a voter sees it after voting: one option chosen, one hovered.
            context.add_cookies([{"name": "voter_id", "value": f"{0:032x}", "url": server.url}])
            try:
                ballot = context.new_page()
                ballot.goto("/")
                click_vote(ballot, "a")
                ballot.hover("#vote-b")
                chosen, hovered = (
                    ballot.eval_on_selector(
                        f"#vote-{option}", "(b) => getComputedStyle(b).backgroundColor"
                    )
                    for option in ("a", "b")
                )
                assert chosen != hovered, "hovering looks like choosing"
                ballot.screenshot(path=out / f"ballot-{width}.png", full_page=True)

                results = context.new_page()
                results.goto("/results")
                expect(results.locator("#status")).to_have_text("live")
                expect(results.locator("#pipe-workers")).to_have_text(
                    re.compile(r"^1 reporting: "), timeout=LIVE_UPDATE_MS
                )
                expect(results.locator("#pipe-batch")).to_contain_text("by")
                assert results.evaluate("document.documentElement.scrollWidth") <= width
                backgrounds = results.eval_on_selector_all(
                    ".chart .bar",
                    "(bars) => bars.map((b) => getComputedStyle(b).background)",
                )
                assert len(set(backgrounds)) == len(backgrounds), backgrounds
                results.screenshot(path=out / f"results-{width}.png", full_page=True)

                results.goto("/results/lunch")
                lunch = bar_layout(results)
                # Not for the docs: a long label, kept with the test's files.
                results.screenshot(path=tmp_path / f"results-lunch-{width}.png", full_page=True)
                assert results.evaluate("document.documentElement.scrollWidth") <= width
                tracks = {bar: box["trackWidth"] for bar, box in lunch.items()}
                # Every option's bar gets the same track, however long its label ...
                assert max(tracks.values()) - min(tracks.values()) < 1, tracks
                if name == "phone":
                    # ... and on a phone the label sits above it, leaving the track most
                    # of the width.
                    assert min(tracks.values()) >= 0.6 * width, tracks
                    for bar, box in lunch.items():
                        assert box["labelBottom"] <= box["trackTop"] + 1, (bar, box)
                else:
                    assert min(tracks.values()) >= 300, tracks
            finally:
                context.close()
    finally:
        server.close()
