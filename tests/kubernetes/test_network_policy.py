"""NetworkPolicy on a cluster that enforces it (issue 6): the allowed flows work, and the
ones no policy allows are blocked, from inside the namespace and from another one.

Set CLOUDVOTE_NETWORK_POLICY=unenforced for a cluster with no policy agent (a plain
kind before v0.24, minikube without a CNI that enforces); the tests are then skipped,
visibly, instead of failing on a cluster that cannot do what they check.
"""

from __future__ import annotations

import os

import pytest

from tests.kubernetes.app import Cloudvote, exec_python
from tests.support.kube import apply, client_pod, temporary_namespace, wait_pod_ready

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("CLOUDVOTE_NETWORK_POLICY", "enforced") == "unenforced",
        reason="CLOUDVOTE_NETWORK_POLICY=unenforced: this cluster runs no policy agent",
    ),
]

# Prints "open" when a TCP connection succeeds, else the error's name.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as error:
    print(type(error).__name__)
"""


def connect(namespace: str, pod: str, container: str, host: str, port: int) -> str:
    code = CONNECT.replace("sys.argv[1]", repr(host)).replace("int(sys.argv[2])", str(port))
    return exec_python(namespace, pod, container, code).splitlines()[-1]


def first_ready(app: Cloudvote, component: str) -> str:
    return str(app.ready_pods(component)[0]["metadata"]["name"])


# gateway -> vote and result are the app's own traffic: test_deploy votes through it.
@pytest.mark.parametrize(
    ("source", "target", "port"), [("vote", "redis", 6379), ("result", "postgres", 5432)]
)
def test_allowed_flow_connects(app: Cloudvote, source: str, target: str, port: int) -> None:
    assert connect(app.namespace, first_ready(app, source), source, target, port) == "open"


def test_worker_reaches_redis_and_postgres(app: Cloudvote) -> None:
    pod = first_ready(app, "worker")
    assert connect(app.namespace, pod, "worker", "redis", 6379) == "open"
    assert connect(app.namespace, pod, "worker", "postgres", 5432) == "open"


def test_vote_cannot_reach_postgres(app: Cloudvote) -> None:
    pod = first_ready(app, "vote")
    assert connect(app.namespace, pod, "vote", "redis", 6379) == "open"  # control
    assert connect(app.namespace, pod, "vote", "postgres", 5432) != "open"


def test_result_cannot_reach_redis(app: Cloudvote) -> None:
    pod = first_ready(app, "result")
    assert connect(app.namespace, pod, "result", "postgres", 5432) == "open"  # control
    assert connect(app.namespace, pod, "result", "redis", 6379) != "open"


def test_pod_in_another_namespace_cannot_reach_postgres(app: Cloudvote) -> None:
    postgres = f"postgres.{app.namespace}.svc.cluster.local"
    gateway = f"gateway.{app.namespace}.svc.cluster.local"
    with temporary_namespace("cv-outsider") as namespace:
        apply(client_pod("outsider"), namespace=namespace)
        wait_pod_ready(namespace, "outsider")
        # Control: the outsider resolves names and reaches what is meant to be public.
        assert connect(namespace, "outsider", "client", gateway, 80) == "open"
        assert connect(namespace, "outsider", "client", postgres, 5432) != "open"
        assert connect(namespace, "outsider", "client", f"redis.{app.namespace}", 6379) != "open"
