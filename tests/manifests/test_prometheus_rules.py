"""components/monitoring's Prometheus side, checked with promtool (the same release as the
Prometheus image, built by scripts/k8s-tools; scripts/k8s-check passes its path in
PROMTOOL): the configuration and the rules parse, the rules' unit tests pass, every alert
has a test that shows it firing, and no rule names a metric that nothing here serves."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from cloudvote.observability.metrics import render_metrics
from tests.manifests.k8s import K8S, REPO, built_tool

MONITORING = K8S / "components" / "monitoring"
RULES = sorted((MONITORING / "rules").glob("*.rules.yaml"))
RULE_TESTS = sorted((MONITORING / "rules" / "tests").glob("*.yaml"))

# What the exporters serve that the rules and the dashboard use, as read from the running
# Debian builds (redis_exporter 1.45 with --check-single-streams=votes,votes:dead; its
# stream metrics differ between versions: 1.45 has no first-entry id and no group lag).
REDIS_EXPORTER = {
    "redis_up",
    "redis_stream_length",
    "redis_stream_last_generated_id",
    "redis_stream_groups",
    "redis_stream_group_consumers",
    "redis_stream_group_last_delivered_id",
    "redis_stream_group_messages_pending",
    "redis_stream_group_consumer_messages_pending",
    "redis_stream_group_consumer_idle_seconds",
}
POSTGRES_EXPORTER = {"pg_up", "pg_database_size_bytes", "pg_stat_database_numbackends"}
# kube-state-metrics 2.20 with --resources=pods,persistentvolumeclaims, as read from the
# running build: the families the rules use (the waiting and terminated ones exist only
# for containers in that state; init_container ones include native sidecars).
KUBE_STATE_METRICS = {
    "kube_pod_info",
    "kube_pod_container_status_waiting_reason",
    "kube_pod_container_status_terminated_reason",
    "kube_pod_container_status_last_terminated_reason",
    "kube_pod_container_status_last_terminated_timestamp",
    "kube_pod_init_container_status_waiting_reason",
    "kube_pod_init_container_status_last_terminated_reason",
    "kube_pod_init_container_status_last_terminated_timestamp",
    "kube_persistentvolumeclaim_info",
}
# The kubelet's, as config/prometheus.yml's kubelet job keeps them (metric_relabel_configs).
KUBELET = {
    "kubelet_volume_stats_capacity_bytes",
    "kubelet_volume_stats_available_bytes",
    "kubelet_volume_stats_used_bytes",
}
# Prometheus' own per-target series.
PROMETHEUS = {"up", "scrape_duration_seconds"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    return str(built_tool("promtool"))


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
    ]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, grouping labels, ranges, numbers and function names are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def app_metrics() -> set[str]:
    """Every sample name the services can serve: cloudvote.observability.metrics' registry
    as /metrics renders it (families without samples yet included), with the suffixes of
    counters and histograms, and the worker adapter's own metrics."""
    text, _ = render_metrics()
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    adapter = load_script(K8S / "base" / "scripts" / "stats_adapter.py")
    names |= {name for name, _, _ in adapter.METRICS.values()} | {"cloudvote_worker_stats_up"}
    return names


def served() -> set[str]:
    return (
        app_metrics()
        | REDIS_EXPORTER
        | POSTGRES_EXPORTER
        | KUBE_STATE_METRICS
        | KUBELET
        | PROMETHEUS
        | recorded()
    )


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid() -> None:
    # --syntax-only: the files it names (the ServiceAccount token, the rules) exist only in
    # the pod; the rules are checked on their own above.
    result = run_promtool(
        "check", "config", "--syntax-only", str(MONITORING / "config" / "prometheus.yml")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_shown_firing_by_a_unit_test() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    shown = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert alerts - shown == set(), "alerts no unit test sees firing"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_no_rule_reads_a_metric_nobody_serves() -> None:
    """An alert over a series that is never scraped can never fire: a silent bug."""
    known = served()
    for rule in rules():
        missing = metric_names(rule["expr"]) - known
        assert not missing, f"{rule.get('record') or rule['alert']} reads {sorted(missing)}"


def test_metric_names_finds_metrics_not_labels_or_functions() -> None:
    expr = (
        'max by (namespace) (time() - a_total{x="b c"} / 1000 and on (instance) '
        "rate(b:rec[5m]) > bool 3) or vector(0)"
    )
    assert metric_names(expr) == {"a_total", "b:rec"}


@pytest.mark.parametrize(
    ("tool", "manifest", "image"),
    [
        ("prometheus", "prometheus.yaml", "quay.io/prometheus/prometheus"),
        (
            "kube-state-metrics",
            "kube-state-metrics.yaml",
            "registry.k8s.io/kube-state-metrics/kube-state-metrics",
        ),
    ],
)
def test_images_name_the_release_scripts_k8s_tools_builds(
    tool: str, manifest: str, image: str
) -> None:
    """The official image the component names and the stand-in tag local-observed maps it
    to are the release scripts/k8s-tools builds (scripts/build-monitoring tags the
    stand-in with that same `scripts/k8s-tools version`)."""
    release = subprocess.run(
        [str(REPO / "scripts" / "k8s-tools"), "version", tool],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    named = {
        container["image"]
        for doc in yaml.safe_load_all((MONITORING / manifest).read_text(encoding="utf-8"))
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert named == {f"{image}:v{release}"}
    overlay = yaml.safe_load(
        (K8S / "overlays" / "local-observed" / "kustomization.yaml").read_text(encoding="utf-8")
    )
    mapped = [entry for entry in overlay["images"] if entry["name"] == image]
    assert [entry["newTag"] for entry in mapped] == [release]


def matcher_holds(matcher: str, labels: dict[str, str]) -> bool:
    """One Alertmanager matcher (name="v", name!="v", name=~"re") against static labels."""
    found = re.fullmatch(r'(\w+)\s*(=~|!=|=)\s*"(.*)"', matcher)
    assert found, f"unparsed matcher {matcher}"
    name, operator, value = found.groups()
    actual = labels.get(name, "")
    if operator == "=~":
        return re.fullmatch(value, actual) is not None
    return (actual == value) == (operator == "=")


def test_an_inhibiting_alert_carries_every_static_label_it_is_compared_on() -> None:
    """Alertmanager counts a label missing from both alerts as equal. So an alert that
    matches an inhibit rule's source but lacks a label of its `equal` list (slo, say)
    silences every target alert that lacks it too: every cause ticket at once. Checked
    for the labels rules set statically; namespace and the like come from the series."""
    config = yaml.safe_load((MONITORING / "config" / "alertmanager.yml").read_text())
    alerts = [
        {"alertname": rule["alert"], **rule.get("labels", {})}
        for rule in rules()
        if "alert" in rule
    ]
    static_names = {name for labels in alerts for name in labels}
    for inhibit in config["inhibit_rules"]:
        compared = set(inhibit["equal"]) & static_names
        for labels in alerts:
            if all(matcher_holds(m, labels) for m in inhibit["source_matchers"]):
                assert compared <= set(labels), (labels["alertname"], inhibit)


def test_matcher_holds_reads_alertmanager_matchers() -> None:
    labels = {"severity": "page", "slo": "vote-availability"}
    assert matcher_holds('severity="page"', labels)
    assert matcher_holds('slo=~".+"', labels)
    assert not matcher_holds('slo=~".+"', {"severity": "page"})
    assert matcher_holds('severity!="ticket"', labels)
