"""The compose tier: compose.yaml on a real Docker engine (`scripts/compose-e2e`).

These tests build and run containers, so `make test` does not collect them: they run
when named (`pytest tests/compose`) or with CLOUDVOTE_COMPOSE_TESTS=1. They need a
Docker engine, Compose v2 and the images; `scripts/compose-e2e` provides all three, also
on a machine without a registry. They never skip: a missing engine is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.compose.project import REPO, TIMINGS, Project, run
from tests.support.opt_in import collected_when_requested, timings_summary

pytest_ignore_collect = collected_when_requested(__file__, "CLOUDVOTE_COMPOSE_TESTS")


pytest_terminal_summary = timings_summary("compose timings", TIMINGS)


@pytest.fixture(scope="session")
def stack() -> Iterator[Project]:
    """The default project on port 5000, brought up from clean (no containers, no volumes)."""
    if run(["docker", "info"], check=False).returncode != 0:
        pytest.fail("no Docker engine answers; run scripts/docker-airgap", pytrace=False)
    if not (REPO / "secrets" / "postgres_password").exists():
        pytest.fail("no ./secrets; run scripts/compose-secrets", pytrace=False)
    project = Project()
    project.down(volumes=True)
    TIMINGS["up --wait from clean (project cloudvote)"] = project.up()
    try:
        yield project
    finally:
        if os.environ.get("CLOUDVOTE_COMPOSE_KEEP") != "1":
            project.down(volumes=True)


@pytest.fixture
def timings() -> dict[str, float]:
    return TIMINGS


# The story order: the first vote through a fresh stack, then inspection, then faults,
# the optional profiles, and last the tests that take the stack down and up again.
MODULE_ORDER = (
    "test_gateway",
    "test_hardening",
    "test_tracing",
    "test_faults",
    "test_profiles",
    "test_lifecycle",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)
