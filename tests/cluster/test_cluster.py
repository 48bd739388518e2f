"""Acceptance of a cluster: the features cloudvote's manifests rely on all work.

Each test creates what it needs in a throwaway namespace and asserts the outcome through
the API or over the network: pod phases, answers from Services, bound claims, metrics.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import pytest

from tests.support.kube import (
    TEST_IMAGE,
    Manifest,
    apply,
    client_pod,
    condition,
    fetch_from_pod,
    get_json,
    hostname_deployment,
    kubectl,
    node_address,
    ready_pod_names,
    restricted_security,
    wait_job_complete,
    wait_pod_ready,
    wait_rollout,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def service(name: str, kind: str = "ClusterIP", **port_extra: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": kind,
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080, **port_extra}],
        },
    }


@pytest.fixture(scope="module")
def web(namespace: str) -> Iterator[str]:
    """Two replicas answering with their pod name, a client pod, and three Services."""
    apply(
        hostname_deployment("web", replicas=2),
        service("web"),
        service("web-nodeport", "NodePort"),
        service("web-lb", "LoadBalancer"),
        client_pod("client"),
        namespace=namespace,
    )
    wait_rollout(namespace, "deployment/web")
    wait_pod_ready(namespace, "client")
    yield namespace


def http_get(url: str, timeout: float = 3) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def test_every_node_is_ready() -> None:
    nodes = get_json("nodes")["items"]
    assert nodes, "the cluster has no nodes"
    not_ready = [n["metadata"]["name"] for n in nodes if condition(n, "Ready") != "True"]
    assert not_ready == []


def test_deleted_pods_are_replaced(web: str) -> None:
    before = ready_pod_names(web, "app=web")
    assert len(before) == 2
    kubectl("delete", "pod", "-n", web, before[0], "--wait=false")
    after = wait_until(
        lambda: ready_pod_names(web, "app=web"),
        lambda names: len(names) == 2 and before[0] not in names,
        timeout=90,
        what="a replacement for the deleted pod",
    )
    assert before[1] in after


def test_cluster_ip_service_spreads_over_the_replicas(web: str) -> None:
    answers = {fetch_from_pod(web, "client", "http://web/") for _ in range(20)}
    assert answers == set(ready_pod_names(web, "app=web")), answers


def schedulable_nodes() -> list[str]:
    """Nodes an ordinary pod may land on: not cordoned, and no NoSchedule taint."""
    return [
        node["metadata"]["name"]
        for node in get_json("nodes")["items"]
        if not node["spec"].get("unschedulable")
        and not any(t.get("effect") == "NoSchedule" for t in node["spec"].get("taints", []))
    ]


def test_pods_reach_pods_on_every_other_node(web: str) -> None:
    """Pod to pod by address, no Service in between: the pod network spans the nodes."""
    client = get_json("pod", "-n", web, "client")
    others = [node for node in schedulable_nodes() if node != client["spec"]["nodeName"]]
    if not others:
        pytest.skip("a single schedulable node: no other node to reach")
    template = hostname_deployment("peer")["spec"]["template"]
    peers = {f"peer-{index}": node for index, node in enumerate(others)}
    apply(
        *(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "peer"}},
                "spec": {**template["spec"], "nodeName": node},
            }
            for name, node in peers.items()
        ),
        namespace=web,
    )
    for name, node in peers.items():
        wait_pod_ready(web, name)
        address = get_json("pod", "-n", web, name)["status"]["podIP"]
        answer = fetch_from_pod(web, "client", f"http://{address}:8080/")
        assert answer == name, f"client on {client['spec']['nodeName']} -> {name} on {node}"


@pytest.mark.parametrize("host", ["web", "web.{ns}", "web.{ns}.svc.cluster.local"])
def test_dns_resolves_service_names(web: str, host: str) -> None:
    answer = fetch_from_pod(web, "client", f"http://{host.format(ns=web)}/")
    assert answer in ready_pod_names(web, "app=web"), answer


def answer_from_outside(namespace: str, url: str) -> str:
    """GET url from this machine until one of the web pods answers by name."""
    return wait_until(
        lambda: http_get(url),
        lambda body: body in ready_pod_names(namespace, "app=web"),
        timeout=30,
        what=f"a web pod answering {url}",
    )


def test_node_port_answers_on_the_node_address(web: str) -> None:
    port = get_json("service", "-n", web, "web-nodeport")["spec"]["ports"][0]["nodePort"]
    assert answer_from_outside(web, f"http://{node_address()}:{port}/").startswith("web-")


def test_load_balancer_gets_an_address_that_answers(web: str) -> None:
    ingress = wait_until(
        lambda: get_json("service", "-n", web, "web-lb")["status"]["loadBalancer"].get("ingress"),
        timeout=60,
        what="an ingress address on the LoadBalancer Service",
    )
    address = ingress[0].get("ip") or ingress[0]["hostname"]
    assert answer_from_outside(web, f"http://{address}/").startswith("web-")


def volume_pod(name: str) -> Manifest:
    pod = client_pod(name, labels={"app": "volume-user"})
    pod["spec"]["securityContext"]["fsGroup"] = 10001
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    pod["spec"]["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    return pod


def test_claim_binds_and_its_data_outlives_the_pod(namespace: str) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    }
    apply(claim, volume_pod("writer"), namespace=namespace)
    wait_pod_ready(namespace, "writer")
    assert get_json("pvc", "-n", namespace, "data")["status"]["phase"] == "Bound"
    kubectl(
        "exec",
        "-n",
        namespace,
        "writer",
        "--",
        "python",
        "-c",
        "open('/data/marker', 'w').write('kept')",
    )
    kubectl("delete", "pod", "-n", namespace, "writer", "--wait=true", timeout=90)

    apply(volume_pod("reader"), namespace=namespace)
    wait_pod_ready(namespace, "reader")
    read = kubectl(
        "exec",
        "-n",
        namespace,
        "reader",
        "--",
        "python",
        "-c",
        "print(open('/data/marker').read())",
    )
    assert read.stdout.strip() == "kept"


def test_job_runs_to_completion(namespace: str) -> None:
    pod_security, container_security = restricted_security()
    apply(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "sum"},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": pod_security,
                        "containers": [
                            {
                                "name": "sum",
                                "image": TEST_IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["python", "-c", "print(sum(range(101)))"],
                                "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}},
                                "securityContext": container_security,
                            }
                        ],
                    }
                },
            },
        },
        namespace=namespace,
    )
    wait_job_complete(namespace, "sum", timeout=120)
    assert kubectl("logs", "-n", namespace, "job/sum").stdout.strip() == "5050"


def test_metrics_reach_kubectl_top_and_the_hpa(web: str) -> None:
    top = wait_until(
        lambda: kubectl("top", "pods", "-n", web, "--no-headers", check=False),
        lambda result: result.returncode == 0 and "web-" in result.stdout,
        timeout=120,
        what="kubectl top pods",
    )
    assert "m " in top.stdout  # CPU in millicores per pod
    apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        },
        namespace=web,
    )
    status = wait_until(
        lambda: get_json("hpa", "-n", web, "web")["status"],
        lambda s: any(
            m.get("resource", {}).get("current", {}).get("averageUtilization") is not None
            for m in s.get("currentMetrics") or []
        ),
        timeout=120,
        what="the HPA reading a CPU utilization",
    )
    assert condition({"status": status}, "ScalingActive") == "True"


POLICY_MODE = os.environ.get("CLOUDVOTE_NETWORK_POLICY", "enforced")


@pytest.mark.skipif(
    POLICY_MODE == "unenforced",
    reason="CLOUDVOTE_NETWORK_POLICY=unenforced: this cluster runs no policy agent",
)
def test_network_policy_blocks_and_allows_as_written(web: str) -> None:
    apply(
        client_pod("allowed", labels={"role": "allowed"}),
        client_pod("other", labels={"role": "other"}),
        namespace=web,
    )
    wait_pod_ready(web, "allowed")
    wait_pod_ready(web, "other")
    assert fetch_from_pod(web, "other", "http://web/").startswith("web-")  # open before

    apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web-from-allowed-only"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        },
        namespace=web,
    )
    wait_until(
        lambda: fetch_from_pod(web, "other", "http://web/", timeout=2),
        lambda body: body.startswith("ERROR"),
        timeout=60,
        what="the policy blocking role=other",
    )
    assert fetch_from_pod(web, "allowed", "http://web/").startswith("web-")
    for _ in range(3):
        assert fetch_from_pod(web, "other", "http://web/", timeout=2).startswith("ERROR")

    kubectl("delete", "networkpolicy", "-n", web, "web-from-allowed-only")
    wait_until(
        lambda: fetch_from_pod(web, "other", "http://web/", timeout=2),
        lambda body: body.startswith("web-"),
        timeout=60,
        what="traffic from role=other once the policy is gone",
    )
