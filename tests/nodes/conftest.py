"""The node tier: what only a cluster of several nodes can show, on the current context.

`scripts/cluster-e2e` runs it on the three-node kind cluster of deploy/kind, with cloudvote
deployed from overlays/multi-node. The tests cordon, drain and stop nodes, so never point
it at a cluster you care about. Collected when named (`pytest tests/nodes`) or with
CLOUDVOTE_NODE_TESTS=1. It fails, never skips, on a cluster with fewer than two worker
nodes: that cluster cannot show any of it.
"""

from __future__ import annotations

import pytest

from tests.kubernetes.app import REPO, Cloudvote, deploy
from tests.nodes.cluster import Nodes
from tests.support.kube import require_cluster
from tests.support.opt_in import collected_when_requested, timings_summary

MULTI_NODE_OVERLAY = REPO / "deploy/k8s/overlays/multi-node"
# Measurements the tests report, printed at the end of the run (the closing notes and
# docs/kind.md quote them).
TIMINGS: dict[str, float] = {}


pytest_ignore_collect = collected_when_requested(__file__, "CLOUDVOTE_NODE_TESTS")


pytest_terminal_summary = timings_summary("node-level timings", TIMINGS)


@pytest.fixture(scope="session")
def nodes() -> Nodes:
    require_cluster()
    found = Nodes.read()
    if len(found.workers) < 2:
        pytest.fail(
            f"the node tier needs at least two worker nodes; this cluster has "
            f"{len(found.workers)} (start deploy/kind/up)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def app(nodes: Nodes) -> Cloudvote:
    """overlays/multi-node, applied (idempotently) and serving."""
    return Cloudvote.find(deploy(MULTI_NODE_OVERLAY))
