"""The microservices' processes, one of each per test module, for the modules that define
a `deployment` fixture (tests/support/services.py); a module overrides one to change it.
And headless Chromium, one per module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support.browser import BrowserMissing, launch_chromium
from tests.support.services import Deployment, ServiceProcess


@pytest.fixture(scope="module")
def vote(deployment: Deployment) -> ServiceProcess:
    return deployment.start("vote")


@pytest.fixture(scope="module")
def worker(deployment: Deployment) -> ServiceProcess:
    return deployment.start("worker")


@pytest.fixture(scope="module")
def result(deployment: Deployment) -> ServiceProcess:
    return deployment.start("result")  # WEB_CONCURRENCY=2, as Deployment sets it


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            chromium = launch_chromium(playwright)
        except BrowserMissing as exc:
            # Fail, never skip: a skipped browser suite looks green and tests nothing.
            pytest.fail(str(exc), pytrace=False)
        try:
            yield chromium
        finally:
            chromium.close()
