"""Launch Debian's headless Chromium under Playwright for the browser tests.

Playwright usually runs a browser build it downloads itself (``playwright install``). The
test machines cannot download it, so the tests drive the distribution's ``/usr/bin/chromium``
through Playwright's bundled driver instead. Install it with ``apt-get install chromium``.
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, Playwright

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
