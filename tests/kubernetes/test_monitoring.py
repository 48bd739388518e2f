"""components/monitoring on the cluster (issue 13): Prometheus finds and scrapes every
target through the Kubernetes API, the kubelets report how full the app's claims are, the
queue-lag alert reaches Alertmanager when the worker stops under load, then resolves when
it is back, with no accepted vote lost, and an OOM-killed pod raises its alert too.

Prometheus and Alertmanager are reached through `kubectl port-forward`, the way an
operator opens their UIs: the connection ends inside the pod's network namespace, so no
NetworkPolicy has to open them to the test.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.kubernetes.app import Cloudvote, assert_no_accepted_vote_lost
from tests.kubernetes.conftest import TIMINGS
from tests.kubernetes.worker_control import worker_held_at
from tests.support.kube import apply, client_pod, kubectl, port_forward
from tests.support.load import SteadyVotes
from tests.support.waiting import wait_until

# (job, container) of every scrape target: job is the pod's app.kubernetes.io/name. The
# kubelet job's targets are nodes, and kube-state-metrics' carries no pod labels
# (config/prometheus.yml says why).
EXPECTED_TARGETS = {
    ("vote", "vote"),
    ("result", "result"),
    ("worker", "worker"),
    ("worker", "stats-adapter"),
    ("node-agent", "node-exporter"),
    ("redis-exporter", "redis-exporter"),
    ("postgres-exporter", "postgres-exporter"),
    ("alertmanager", "alertmanager"),
    ("prometheus", "prometheus"),
    ("kube-state-metrics", ""),
    ("kubelet", ""),
}
LAG_ALERT = "CloudvoteQueueLagging"
OOM_ALERT = "CloudvoteContainerOOMKilled"
# The app's claims, which the StatefulSets make (base/redis.yaml, base/postgres.yaml).
CLAIMS = {"data-redis-0", "data-postgres-0"}

pytestmark = pytest.mark.slow


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def target_health(prometheus: str) -> dict[tuple[str, str], list[str]]:
    """(job, container) -> the health of each of its active targets."""
    active = fetch_json(f"{prometheus}/api/v1/targets?state=active")["data"]["activeTargets"]
    health: dict[tuple[str, str], list[str]] = {}
    for target in active:
        key = (target["labels"].get("job", ""), target["labels"].get("container", ""))
        health.setdefault(key, []).append(target["health"])
    return health


def all_up(health: dict[tuple[str, str], list[str]]) -> bool:
    return all(health.get(key) and set(health[key]) == {"up"} for key in EXPECTED_TARGETS)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
    result: list[dict[str, Any]] = fetch_json(url)["data"]["result"]
    return result


def active_alerts(
    alertmanager: str, name: str, namespace: str, **labels: str
) -> list[dict[str, Any]]:
    """The alerts of that name (and those label values) Alertmanager holds as active: not
    resolved (endsAt still ahead), not silenced or inhibited."""
    matchers = {"alertname": name, "namespace": namespace, **labels}
    params = urllib.parse.urlencode(
        {"filter": [f'{label}="{value}"' for label, value in matchers.items()], "active": "true"},
        doseq=True,
    )
    now = datetime.now(UTC)
    return [
        alert
        for alert in fetch_json(f"{alertmanager}/api/v2/alerts?{params}")
        if alert["status"]["state"] == "active"
        and datetime.fromisoformat(alert["endsAt"].replace("Z", "+00:00")) > now
    ]


@pytest.mark.timeout(300)
def test_prometheus_scrapes_every_target_and_evaluates_every_rule(app: Cloudvote) -> None:
    with port_forward(app.namespace, "svc/prometheus", 9090) as prometheus:
        health = wait_until(
            lambda: target_health(prometheus),
            all_up,
            timeout=180,
            interval=3,
            what="every monitoring target up in Prometheus",
        )
        assert set(health) >= EXPECTED_TARGETS, health
        # The gateway has an `http` port but no /metrics and no annotation: not a target.
        assert not any(job == "gateway" for job, _ in health)
        groups = wait_until(
            lambda: fetch_json(f"{prometheus}/api/v1/rules")["data"]["groups"],
            lambda groups: all(
                rule.get("lastEvaluation", "").startswith("20")
                for group in groups
                for rule in group["rules"]
            ),
            timeout=60,
            interval=3,
            what="every rule evaluated once",
        )
        broken = [
            (rule["name"], rule.get("lastError"))
            for group in groups
            for rule in group["rules"]
            if rule["health"] != "ok"
        ]
        assert not broken, broken
        # The queue is measured from Redis: a lag of 0, not an absent series.
        result = query(prometheus, "cloudvote:queue_delivery_lag_seconds:max")
        assert [r["metric"].get("namespace") for r in result] == [app.namespace], result


@pytest.mark.timeout(300)
def test_the_kubelet_reports_how_full_each_claim_is(app: Cloudvote) -> None:
    """The volume alerts' inputs are real: kubelet_volume_stats_* for Redis' and
    PostgreSQL's claims (local volumes, which the kubelet measures), joined with
    kube-state-metrics' list of this namespace's claims into a free share in (0, 1)."""
    with port_forward(app.namespace, "svc/prometheus", 9090) as prometheus:
        ratios = wait_until(
            lambda: query(
                prometheus, f'cloudvote:volume_available:ratio{{namespace="{app.namespace}"}}'
            ),
            lambda result: {r["metric"]["persistentvolumeclaim"] for r in result} >= CLAIMS,
            timeout=180,
            interval=5,
            what="the free share of data-redis-0 and data-postgres-0",
        )
        for ratio in ratios:
            assert 0 < float(ratio["value"][1]) < 1, ratio
        # The kubelet reports every namespace's volumes; the rule keeps this one's.
        everywhere = query(prometheus, "cloudvote:volume_available:ratio")
        assert {r["metric"]["namespace"] for r in everywhere} == {app.namespace}, everywhere
        # Every node's kubelet scrape keeps only the volume series (metric_relabel_configs).
        # Left out of the count: Prometheus' own per-scrape series, the rule recorded from
        # the volume series and any alert on it, all of which carry job="kubelet" too.
        kept = query(
            prometheus,
            'count by (__name__) ({job="kubelet",__name__!~"up|scrape_.+|ALERTS.*|cloudvote:.+"})',
        )
        scraped = {r["metric"]["__name__"] for r in kept}
        assert scraped == {
            "kubelet_volume_stats_capacity_bytes",
            "kubelet_volume_stats_available_bytes",
            "kubelet_volume_stats_used_bytes",
        }, kept


@pytest.mark.timeout(420)
def test_an_oom_killed_container_raises_its_alert_and_crash_loops(app: Cloudvote) -> None:
    """A pod that writes 256 MiB under a 96 MiB limit: the kernel kills it, the kubelet
    restarts it and backs off. kube-state-metrics' series reach Prometheus, the OOM alert
    reaches Alertmanager, and it resolves once the pod is gone."""
    namespace, name = app.namespace, "oom-demo"
    pod = client_pod(name)
    pod["spec"]["containers"][0]["command"] = [
        "python",
        "-c",
        "import time; hog = b'x' * (256 * 2**20); time.sleep(60)",
    ]
    with (
        port_forward(namespace, "svc/prometheus", 9090) as prometheus,
        port_forward(namespace, "svc/alertmanager", 9093) as alertmanager,
    ):
        started = time.monotonic()
        apply(pod, namespace=namespace)
        try:
            firing = wait_until(
                lambda: active_alerts(alertmanager, OOM_ALERT, namespace, pod=name),
                timeout=180,
                interval=2,
                what=f"{OOM_ALERT} for pod {name} active in Alertmanager",
            )
            TIMINGS["OOM alert: pod created -> firing in Alertmanager"] = time.monotonic() - started
            assert firing[0]["labels"]["container"] == "client", firing
            # The crash-loop alert's input: the kubelet backs off after the second kill.
            # (The alert itself waits two minutes more; rules/tests shows it firing.)
            wait_until(
                lambda: query(
                    prometheus,
                    f'kube_pod_container_status_waiting_reason{{pod="{name}",'
                    'reason="CrashLoopBackOff"}',
                ),
                timeout=120,
                interval=3,
                what=f"{name} in CrashLoopBackOff, as kube-state-metrics reports it",
            )
        finally:
            kubectl("delete", "pod", "-n", namespace, name, "--wait=false", "--ignore-not-found")
        deleted = time.monotonic()
        wait_until(
            lambda: active_alerts(alertmanager, OOM_ALERT, namespace, pod=name),
            lambda alerts: not alerts,
            timeout=180,
            interval=2,
            what=f"{OOM_ALERT} for pod {name} resolved once it is deleted",
        )
        TIMINGS["OOM alert: pod deleted -> resolved in Alertmanager"] = time.monotonic() - deleted


@pytest.mark.timeout(900)  # the bounded waits below add up to about 14 minutes
def test_queue_lag_alert_fires_with_the_worker_stopped_and_resolves_after(
    app: Cloudvote,
) -> None:
    namespace = app.namespace
    with (
        port_forward(namespace, "svc/alertmanager", 9093) as alertmanager,
        SteadyVotes(app.host, app.port, per_second=20, threads=2, max_seconds=540) as load,
    ):
        wait_until(
            lambda: active_alerts(alertmanager, LAG_ALERT, namespace),
            lambda alerts: not alerts,
            timeout=180,
            interval=2,
            what=f"no {LAG_ALERT} before the test (one left from an earlier run resolves)",
        )
        stopped = time.monotonic()
        with worker_held_at(namespace, 0):
            firing = wait_until(
                lambda: active_alerts(alertmanager, LAG_ALERT, namespace),
                timeout=240,
                interval=2,
                what=f"{LAG_ALERT} active in Alertmanager with the worker at 0",
            )
            TIMINGS["queue-lag alert: worker stopped -> firing in Alertmanager"] = (
                time.monotonic() - stopped
            )
            assert firing[0]["labels"]["severity"] == "ticket", firing
        released = time.monotonic()
        wait_until(
            lambda: active_alerts(alertmanager, LAG_ALERT, namespace),
            lambda alerts: not alerts,
            timeout=240,
            interval=2,
            what=f"{LAG_ALERT} resolved in Alertmanager after the worker came back",
        )
        TIMINGS["queue-lag alert: worker released -> resolved in Alertmanager"] = (
            time.monotonic() - released
        )
        time.sleep(3)  # votes flow on after the recovery, too
    assert_no_accepted_vote_lost(app, load)
