"""The cluster tier: acceptance tests of a Kubernetes cluster, the current kubectl context.

`deploy/cluster/up` builds a single-node cluster here and `scripts/cluster-e2e` runs these
against it; they pass on kind, minikube or a cloud cluster as well, since they only use
kubectl. Collected when named (`pytest tests/cluster`) or with CLOUDVOTE_CLUSTER_TESTS=1.
They never skip: an unreachable cluster is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import kubectl, temporary_namespace
from tests.support.opt_in import tier_requested

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix == ".py" and not tier_requested(
        config, HERE, "CLOUDVOTE_CLUSTER_TESTS"
    ):
        return True
    return None


@pytest.fixture(scope="session", autouse=True)
def cluster_reachable() -> None:
    result = kubectl("cluster-info", check=False, timeout=30)
    if result.returncode != 0:
        pytest.fail(
            "no cluster answers in the current kubectl context "
            f"(start one with deploy/cluster/up):\n{result.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with temporary_namespace("cv-accept") as name:
        yield name
