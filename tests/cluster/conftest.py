"""The cluster tier: acceptance tests of a Kubernetes cluster, the current kubectl context.

`deploy/cluster/up` builds a single-node cluster here and `scripts/cluster-e2e` runs these
against it; they pass on kind, minikube or a cloud cluster as well, since they only use
kubectl. Collected when named (`pytest tests/cluster`) or with CLOUDVOTE_CLUSTER_TESTS=1.
They never skip: an unreachable cluster is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import require_cluster, temporary_namespace
from tests.support.opt_in import collected_when_requested

pytest_ignore_collect = collected_when_requested(__file__, "CLOUDVOTE_CLUSTER_TESTS")


@pytest.fixture(scope="session", autouse=True)
def cluster_reachable() -> None:
    require_cluster()


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with temporary_namespace("cv-accept") as name:
        yield name
