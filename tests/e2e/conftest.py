"""The microservices' processes, one of each per test module, for the modules that define
a `deployment` fixture (tests/support/services.py); a module overrides one to change it."""

from __future__ import annotations

import pytest

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
