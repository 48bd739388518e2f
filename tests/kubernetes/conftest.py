"""The on-cluster tier: cloudvote deployed, rolled out, scaled, broken and healed.

Runs against the current kubectl context (`scripts/cluster-e2e` starts the local cluster
of deploy/cluster first and loads the images). Collected when named
(`pytest tests/kubernetes`) or with CLOUDVOTE_KUBERNETES_TESTS=1. Never skips: no cluster
is a failure. The images must already be in the cluster's nodes (or a registry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kubernetes.app import LOCAL_OVERLAY, Cloudvote, deploy
from tests.support.kube import kubectl
from tests.support.opt_in import tier_requested

HERE = Path(__file__).resolve().parent
# Measurements a test reports (HPA reaction times), printed at the end of the run.
TIMINGS: dict[str, float] = {}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix == ".py" and not tier_requested(
        config, HERE, "CLOUDVOTE_KUBERNETES_TESTS"
    ):
        return True
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("on-cluster timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.0f} s")


@pytest.fixture(scope="session")
def app() -> Cloudvote:
    """The local-cluster overlay, applied (idempotently) and serving."""
    if kubectl("cluster-info", check=False, timeout=30).returncode != 0:
        pytest.fail("no cluster answers in the current kubectl context", pytrace=False)
    return Cloudvote.find(deploy(LOCAL_OVERLAY))
