"""The on-cluster tier: cloudvote deployed, rolled out, scaled, broken and healed.

Runs against the current kubectl context (`scripts/cluster-e2e` starts the local cluster
of deploy/cluster first and loads the images). Collected when named
(`pytest tests/kubernetes`) or with CLOUDVOTE_KUBERNETES_TESTS=1. Never skips: no cluster
is a failure. The images must already be in the cluster's nodes (or a registry).
"""

from __future__ import annotations

import pytest

from tests.kubernetes.app import LOCAL_OVERLAY, RELEASE_DIR, Cloudvote, deploy
from tests.support.kube import require_cluster
from tests.support.opt_in import collected_when_requested, timings_summary

# Measurements a test reports (HPA reaction times), printed at the end of the run.
TIMINGS: dict[str, float] = {}


pytest_ignore_collect = collected_when_requested(__file__, "CLOUDVOTE_KUBERNETES_TESTS")


pytest_terminal_summary = timings_summary("on-cluster timings", TIMINGS, digits=0)


@pytest.fixture(scope="session")
def app() -> Cloudvote:
    """The local-observed overlay (local-cluster and its add-ons), applied
    (idempotently) and serving."""
    require_cluster()
    return Cloudvote.find(deploy(LOCAL_OVERLAY))


@pytest.fixture(scope="session")
def release_made() -> None:
    """A release of the private registry to deploy (tests/kubernetes/app.py's RELEASE_DIR)."""
    if not RELEASE_DIR:
        pytest.fail(
            "no release: run deploy/registry/up and deploy/registry/release, then set"
            " CLOUDVOTE_RELEASE_DIR (scripts/cluster-e2e does); or CLOUDVOTE_NO_REGISTRY=1"
            " to leave the registry's tests out",
            pytrace=False,
        )
