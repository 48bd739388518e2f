"""Launch Debian's headless Chromium under Playwright for the browser tests.

Playwright usually runs a browser build it downloads itself (``playwright install``). The
test machines cannot download it, so the tests drive the distribution's ``/usr/bin/chromium``
through Playwright's bundled driver instead. Install it with ``apt-get install chromium``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL_HINT = "install Debian's chromium package (apt-get install chromium)"
# --no-sandbox: the tests often run as root in a container, where the sandbox cannot start.
# The rest keeps Chromium from reaching for the network (updates, sync, field trials): the
# machine has none, and a test must not depend on it.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
LAUNCH_TIMEOUT_MS = 30_000


class BrowserMissing(RuntimeError):
    """Debian's chromium is not installed."""


def launch_chromium(playwright: Playwright, executable: Path = CHROMIUM) -> Browser:
    """Start headless Chromium from ``executable``; the caller closes it."""
    if not os.access(executable, os.X_OK):
        raise BrowserMissing(f"{executable} not found: {CHROMIUM_INSTALL_HINT}")
    return playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        args=list(CHROMIUM_ARGS),
        timeout=LAUNCH_TIMEOUT_MS,
    )


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium for a block; the test fails, never skips, when it is missing:
    a skipped browser check looks green and tests nothing."""
    with sync_playwright() as playwright:
        try:
            browser = launch_chromium(playwright)
        except BrowserMissing as error:
            pytest.fail(str(error), pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


def check_results_page_follows_votes(
    base_url: str, expected: Mapping[str, int], vote_a: Callable[[], int], timeout_ms: float
) -> None:
    """The result page rendered by Chromium through a gateway: it shows ``expected`` (from
    the JSON API, then the SSE stream, which the gateway must not buffer), goes live, and
    a vote for a, cast by ``vote_a`` (its status), reaches it without a reload."""
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{base_url}/results")
        for option, count in expected.items():
            expect(page.locator(f"#count-{option}")).to_have_text(str(count), timeout=timeout_ms)
        expect(page.locator("#status")).to_have_text("live", timeout=timeout_ms)
        assert vote_a() == 202
        expect(page.locator("#count-a")).to_have_text(str(expected["a"] + 1), timeout=timeout_ms)
