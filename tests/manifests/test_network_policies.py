"""The NetworkPolicies allow exactly the flows the app needs (NET-07).

The flows are computed from the rendered objects the way the API defines them: a pod
selected by a policy of a type (Ingress or Egress) is isolated for that direction, and a
connection is allowed only when the sender's egress rules and the receiver's ingress rules
both allow it, by pod selector, namespace selector and port. Every pair of pod templates
in the namespace is tried on every port the receiver declares.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.k8s import APP_TARGETS, Doc, by_kind, labels_match, target_namespace, workloads

# sender -> receiver:port, inside the namespace. Nothing else may connect.
EXPECTED_FLOWS = {
    ("gateway", "vote", 5000),
    ("gateway", "result", 5000),
    ("vote", "redis", 6379),
    ("worker", "redis", 6379),
    ("worker", "postgres", 5432),
    ("result", "postgres", 5432),
    ("migrate", "postgres", 5432),
    ("snapshot", "result", 5000),
}
# The chart's `helm test` pod casts a vote through the gateway, as a voter would; its
# NetworkPolicy is a test hook too, so the flow exists only while `helm test` runs.
HELM_TEST_FLOWS = {("cloudvote-test", "gateway", 8080)}
# overlays/local-observed's add-ons: Prometheus scrapes each metrics port (and itself,
# and Alertmanager, to which it also sends alerts, and kube-state-metrics), the exporters
# read their store, and the three services send spans to the collector
# (components/monitoring, tracing). The flows to the API server and the kubelets are no
# pod-to-pod flows: ipBlock rules, which this test lists apart from these.
OBSERVED_FLOWS = {
    ("prometheus", "vote", 5000),
    ("prometheus", "result", 5000),
    ("prometheus", "worker", 8080),
    ("prometheus", "worker", 9100),
    ("prometheus", "node-agent", 9100),
    ("prometheus", "redis-exporter", 9121),
    ("prometheus", "postgres-exporter", 9187),
    ("prometheus", "alertmanager", 9093),
    ("prometheus", "prometheus", 9090),
    ("prometheus", "kube-state-metrics", 8080),
    ("redis-exporter", "redis", 6379),
    ("postgres-exporter", "postgres", 5432),
    *((service, "otel-collector", 4318) for service in ("vote", "worker", "result")),
}


def expected_flows(target: str) -> set[tuple[str, str, int]]:
    flows = EXPECTED_FLOWS | (HELM_TEST_FLOWS if target.startswith("helm/") else set())
    return flows | (OBSERVED_FLOWS if target == "overlays/local-observed" else set())


Pod = tuple[str, dict[str, str], set[int]]  # name, labels, declared ports


def pods(docs: list[Doc]) -> list[Pod]:
    found = []
    for workload in workloads(docs):
        ports = {
            int(port["containerPort"])
            for container in workload.containers
            for port in container.spec.get("ports", [])
        }
        found.append((workload.pod_labels["app.kubernetes.io/name"], workload.pod_labels, ports))
    return found


def _peer_matches(peer: dict[str, Any], labels: dict[str, str], namespace: str, own: str) -> bool:
    """Does a NetworkPolicyPeer select a pod with these labels in `namespace`?"""
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic is matched by selectors, not CIDRs, here
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        in_namespace = namespace == own
    else:
        in_namespace = labels_match(namespace_selector, {"kubernetes.io/metadata.name": namespace})
    return in_namespace and labels_match(peer.get("podSelector", {}), labels)


def _port_matches(rule: dict[str, Any], port: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("port") in (None, port) and p.get("protocol", "TCP") == "TCP" for p in ports)


def allowed(
    policies: list[Doc],
    direction: str,
    subject: dict[str, str],
    peer: dict[str, str],
    peer_namespace: str,
    port: int,
    own: str,
) -> bool:
    """Is traffic in `direction` allowed for the pod `subject` from/to `peer` on `port`?"""
    policy_type = "Ingress" if direction == "ingress" else "Egress"
    peers_key = "from" if direction == "ingress" else "to"
    selecting = [
        p
        for p in policies
        if policy_type in p["spec"].get("policyTypes", ["Ingress"])
        and labels_match(p["spec"]["podSelector"], subject)
    ]
    if not selecting:
        return True  # not isolated in this direction
    for policy in selecting:
        for rule in policy["spec"].get(direction, []):
            if not _port_matches(rule, port):
                continue
            rule_peers = rule.get(peers_key)
            if not rule_peers or any(
                _peer_matches(p, peer, peer_namespace, own) for p in rule_peers
            ):
                return True
    return False


def flows(docs: list[Doc], namespace: str) -> set[tuple[str, str, int]]:
    policies = by_kind(docs, "NetworkPolicy")
    found = set()
    for sender, sender_labels, _ in pods(docs):
        for receiver, receiver_labels, ports in pods(docs):
            for port in ports:
                egress = allowed(
                    policies, "egress", sender_labels, receiver_labels, namespace, port, namespace
                )
                ingress = allowed(
                    policies, "ingress", receiver_labels, sender_labels, namespace, port, namespace
                )
                if egress and ingress:
                    found.add((sender, receiver, port))
    return found


def address_egress(docs: list[Doc]) -> set[tuple[str, str, int]]:
    """Egress by address rather than by pod: (the pods' name, the CIDR, the port)."""
    found = set()
    for policy in by_kind(docs, "NetworkPolicy"):
        name = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    assert "except" not in peer["ipBlock"], policy["metadata"]["name"]
                    found |= {
                        (name, peer["ipBlock"]["cidr"], port["port"]) for port in rule["ports"]
                    }
    return found


@pytest.mark.parametrize("target", APP_TARGETS)
def test_egress_by_address_is_only_monitoring_s_api_server_and_kubelet_calls(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """Address rules open more than any pod selector (every pod and host on a port), so each
    one is listed: Prometheus and kube-state-metrics reach the API server (443 or 6443),
    and Prometheus the kubelets (10250), neither of which is a pod
    (components/monitoring/network-policy.yaml)."""
    expected: set[tuple[str, str, int]] = set()
    if target == "overlays/local-observed":
        expected = {("prometheus", "0.0.0.0/0", port) for port in (443, 6443, 10250)} | {
            ("kube-state-metrics", "0.0.0.0/0", port) for port in (443, 6443)
        }
    assert address_egress(rendered[target]) == expected


@pytest.mark.parametrize("target", APP_TARGETS)
def test_only_the_expected_flows_are_allowed(target: str, rendered: dict[str, list[Doc]]) -> None:
    found = flows(rendered[target], target_namespace(target, rendered[target]))
    expected = expected_flows(target)
    assert found - expected == set(), "flows that should be denied"
    assert expected - found == set(), "flows the app needs that are denied"


@pytest.mark.parametrize("target", APP_TARGETS)
def test_default_deny_covers_every_pod_both_ways(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    deny = [
        p
        for p in by_kind(rendered[target], "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert len(deny) == 1


@pytest.mark.parametrize("target", APP_TARGETS)
def test_every_pod_may_resolve_names_and_only_the_gateway_is_open_to_all(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    docs = rendered[target]
    own = target_namespace(target, docs)
    policies = by_kind(docs, "NetworkPolicy")
    dns = {"k8s-app": "kube-dns"}
    outsider = {"app.kubernetes.io/name": "somebody-else"}
    for name, labels, ports in pods(docs):
        for port in (53,):
            assert allowed(policies, "egress", labels, dns, "kube-system", port, own), name
        open_ports = {
            port
            for port in ports
            if allowed(policies, "ingress", labels, outsider, "elsewhere", port, own)
        }
        assert open_ports == ({8080} if name == "gateway" else set()), name


@pytest.mark.parametrize("target", ["overlays/prod", "helm/cloudvote-prod"])
def test_prod_components_add_only_their_cross_namespace_flows(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    docs = rendered[target]
    policies = by_kind(docs, "NetworkPolicy")
    keda = {"app": "keda-operator"}
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    labels = {name: pod_labels for name, pod_labels, _ in pods(docs)}
    own = "cloudvote-prod"
    assert allowed(policies, "ingress", labels["redis"], keda, "keda", 6379, own)
    assert not allowed(policies, "ingress", labels["postgres"], keda, "keda", 5432, own)
    assert allowed(policies, "ingress", labels["worker"], prometheus, "monitoring", 9100, own)
    assert not allowed(policies, "ingress", labels["redis"], prometheus, "monitoring", 6379, own)
