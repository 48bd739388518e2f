"""components/monitoring's Grafana dashboard (grafana/cloudvote.json): every panel's
query parses (promtool checks them as recording rules), every metric it names is served
by a scrape target or recorded by the rules, and it shows what an operator needs first:
the two SLOs, ingest and drain, the queue's lag and the open result streams."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.test_prometheus_rules import MONITORING, metric_names, promtool, served

DASHBOARD = MONITORING / "grafana" / "cloudvote.json"

# Grafana's template variables, replaced by a value, as Grafana does before it queries.
VARIABLES = {"$namespace": "cloudvote-local", "${datasource}": "prometheus"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def expressions() -> list[tuple[str, str]]:
    """(panel title, query) for every query of every panel, variables filled in."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            found.append((panel["title"], expr))
    return found


def test_every_query_parses(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expr}
                    for index, (_, expr) in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_it_names_is_served_or_recorded() -> None:
    known = served()
    for title, expr in expressions():
        missing = metric_names(expr) - known
        assert not missing, f"panel {title!r} reads {sorted(missing)}"


def test_it_shows_the_slos_ingest_drain_lag_and_streams() -> None:
    named = set().union(*(metric_names(expr) for _, expr in expressions()))
    for metric in (
        "cloudvote:vote_request_errors:ratio_rate5m",  # availability SLO
        "cloudvote:vote_freshness_errors:ratio_rate1h",  # freshness SLO
        "cloudvote_votes_accepted_total",  # ingest
        "cloudvote_votes_applied_total",  # drain
        "cloudvote:queue_delivery_lag_seconds:max",  # queue lag
        "cloudvote_result_streams_open",  # open result streams
    ):
        assert metric in named, metric


def test_panels_query_the_chosen_data_source_and_namespace() -> None:
    board = dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "namespace"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], panel["title"]


def test_the_component_ships_it_as_a_dashboard_configmap() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text("utf-8"))
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if "grafana/cloudvote.json" in g["files"]
    ]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
