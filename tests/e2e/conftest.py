"""The microservices' processes, one of each per test module, for the modules that define
a `deployment` fixture (tests/support/services.py); a module overrides one to change it.
Headless Chromium, one per module that asks for it, and an HTTP client per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support.browser import chromium
from tests.support.client import Client
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
    with chromium() as browser:
        yield browser


@pytest.fixture
def http() -> Iterator[Client]:
    """One visitor: a session with its own cookies; ``http.at(process.url)`` aims it."""
    with Client() as client:
        yield client
