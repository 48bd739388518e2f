"""Least privilege, written down: every Role and ClusterRole any render target creates,
rule by rule. A new grant fails here until it is added on purpose, and a wider one (a
verb, a resource, nodes/proxy, Secrets) never slips in with an unrelated change. Only
components/monitoring grants anything (overlays/local-observed); its files say why each
rule is there."""

from __future__ import annotations

import pytest

from tests.manifests.k8s import Doc, by_kind, render_targets

TARGETS = sorted(render_targets())

# (kind, name) -> its rules as (apiGroups, resources, verbs), each sorted.
Rule = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
MONITORING_GRANTS: dict[tuple[str, str], set[Rule]] = {
    # Prometheus' discovery: the pods of its own namespace.
    ("Role", "prometheus-discovery"): {(("",), ("pods",), ("get", "list", "watch"))},
    # kube-state-metrics: the two kinds it exports, in its own namespace.
    ("Role", "kube-state-metrics"): {
        (("",), ("persistentvolumeclaims", "pods"), ("list", "watch"))
    },
    # Prometheus' kubelet scrape: find the nodes, read their /metrics; never nodes/proxy.
    ("ClusterRole", "cloudvote-prometheus-kubelet"): {
        (("",), ("nodes",), ("list", "watch")),
        (("",), ("nodes/metrics",), ("get",)),
    },
}


def grants(docs: list[Doc]) -> dict[tuple[str, str], set[Rule]]:
    found = {}
    for kind in ("Role", "ClusterRole"):
        for role in by_kind(docs, kind):
            found[(kind, role["metadata"]["name"])] = {
                (
                    tuple(sorted(rule.get("apiGroups", []))),
                    tuple(sorted(rule.get("resources", []))),
                    tuple(sorted(rule["verbs"])),
                )
                for rule in role.get("rules", [])
            }
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_every_role_grants_exactly_what_is_listed(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    expected = MONITORING_GRANTS if target == "overlays/local-observed" else {}
    assert grants(rendered[target]) == expected


@pytest.mark.parametrize("target", TARGETS)
def test_no_grant_reaches_secrets_or_the_kubelet_s_proxy(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """The two grants that are root in disguise: reading Secrets (every credential) and
    nodes/proxy (the kubelet's exec and logs endpoints); and no wildcard."""
    for role, rules in grants(rendered[target]).items():
        for groups, resources, verbs in rules:
            assert not {"secrets", "nodes/proxy", "*"} & set(resources), role
            assert "*" not in groups and "*" not in verbs, role
