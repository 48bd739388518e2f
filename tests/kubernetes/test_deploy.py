"""The local-cluster overlay deployed: every part is up and does its job (issue 6, Deploy).

Each test asserts an outcome through the API or over HTTP: Ready pods, a counted vote, a
completed Job, files on the volumes, a metrics page, a login through the ambassador.
"""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.kubernetes.app import Cloudvote, exec_python, read_claim
from tests.support.browser import check_results_page_follows_votes
from tests.support.kube import condition, get_json, kubectl, wait_job_complete
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
LIVE_UPDATE_MS = 15_000

# Python run inside pods (the images have Python, not a shell toolbox).
LATEST_SNAPSHOT = """
import glob, json, os
files = sorted(glob.glob("/claim/**/results-*.json", recursive=True), key=os.path.getmtime)
latest = json.load(open(files[-1])) if files else None
print(json.dumps({"files": len(files), "latest": latest}))
"""
COUNT_FILES_WITH = """
import glob
print(sum(1 for f in glob.glob("{pattern}", recursive=True) if "{marker}" in open(f).read()))
"""
FETCH_LOCAL = """
import urllib.request
print(urllib.request.urlopen("{url}", timeout=5).read().decode())
"""


def serving_pods(namespace: str) -> list[dict[str, Any]]:
    """Every pod but the ones Jobs run (those end Completed, never Ready)."""
    pods = get_json("pods", "-n", namespace)["items"]
    return [p for p in pods if p["metadata"].get("ownerReferences", [{}])[0].get("kind") != "Job"]


def test_every_pod_is_ready(app: Cloudvote) -> None:
    # The HPA may still be adding its minimum replicas right after the apply.
    serving = wait_until(
        lambda: serving_pods(app.namespace),
        lambda pods: all(condition(p, "Ready") == "True" for p in pods),
        timeout=180,
        what="every serving pod Ready",
    )
    assert {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in serving} >= {
        "gateway",
        "vote",
        "result",
        "worker",
        "redis",
        "postgres",
        "node-agent",
    }
    not_ready = [p["metadata"]["name"] for p in serving if condition(p, "Ready") != "True"]
    assert not_ready == []


def test_migration_job_completed(app: Cloudvote) -> None:
    job = get_json("job", "-n", app.namespace, "migrate")
    assert job["status"].get("succeeded") == 1
    assert condition(job, "Complete") == "True"
    tables = app.psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'votes'")
    assert tables.strip() == "1"


def test_vote_through_the_gateway_reaches_result_api_and_page(app: Cloudvote) -> None:
    before = app.results()["counts"]
    assert app.vote("a", voter=secrets.token_hex(16)) == 202
    assert app.vote("b", voter=secrets.token_hex(16)) == 202
    expected = {"a": before["a"] + 1, "b": before["b"] + 1}
    app.wait_total(sum(expected.values()), timeout=60)
    assert app.results()["counts"] == expected

    check_results_page_follows_votes(
        app.base_url,
        expected,
        lambda: app.vote("a", voter=secrets.token_hex(16)),
        timeout_ms=LIVE_UPDATE_MS,
    )


def test_every_answer_names_the_pod_and_node_that_served_it_and_replicas_take_turns(
    app: Cloudvote,
) -> None:
    """The downward API gives each pod its name and node; the answers carry them. Many
    viewers at once spread over vote's replicas (the gateway opens a connection to the
    Service per concurrent request, and kube-proxy picks a pod per connection)."""
    nodes = {
        p["metadata"]["name"]: p["spec"]["nodeName"]
        for p in get_json("pods", "-n", app.namespace, "-l", "app.kubernetes.io/name=vote")["items"]
    }
    with ThreadPoolExecutor(max_workers=16) as viewers:
        answers = list(viewers.map(lambda _: app.served_by("/api/polls"), range(64)))

    assert {status for status, _, _ in answers} == {200}
    for _, named, _ in answers:
        assert named["Cloudvote-Service"] == "vote"
        assert named["Cloudvote-Shape"] == "microservices"
        assert named["Cloudvote-Node"] == nodes[named["Cloudvote-Instance"]]
    if len(nodes) >= 2:
        assert len({named["Cloudvote-Instance"] for _, named, _ in answers}) >= 2, answers[:3]

    status, named, page = app.served_by("/results")
    results_pods = {p["metadata"]["name"] for p in app.ready_pods("result")}
    assert status == 200 and named["Cloudvote-Instance"] in results_pods
    assert f'<code id="served-instance">{named["Cloudvote-Instance"]}</code>' in page


def test_cronjob_snapshot_lands_on_its_volume(app: Cloudvote) -> None:
    job = f"snapshot-now-{secrets.token_hex(3)}"
    # What an operator does to run a CronJob now instead of waiting for its schedule.
    kubectl("create", "job", "-n", app.namespace, job, "--from=cronjob/snapshot")
    wait_job_complete(app.namespace, job)
    listing = read_claim(app.namespace, "result-snapshots", LATEST_SNAPSHOT)
    snapshot = json.loads(listing.strip().splitlines()[-1])
    assert snapshot["files"] >= 1
    assert "default" in json.dumps(snapshot["latest"])
    kubectl("delete", "job", "-n", app.namespace, job, "--wait=false")


def test_node_agent_daemonset_runs_on_every_node(app: Cloudvote) -> None:
    nodes = len(get_json("nodes")["items"])
    daemonset = get_json("daemonset", "-n", app.namespace, "node-agent")["status"]
    assert daemonset["desiredNumberScheduled"] == nodes
    assert daemonset["numberReady"] == nodes
    pod = get_json("pods", "-n", app.namespace, "-l", "app.kubernetes.io/name=node-agent")["items"][
        0
    ]
    metrics = kubectl(
        "get",
        "--raw",
        f"/api/v1/namespaces/{app.namespace}/pods/{pod['metadata']['name']}:9100/proxy/metrics",
        check=False,
    )
    assert "node_load1" in metrics.stdout or "node_cpu_seconds_total" in metrics.stdout, (
        metrics.stderr
    )


def test_log_sidecar_archives_gateway_logs_on_the_volume(app: Cloudvote) -> None:
    marker = secrets.token_hex(8)
    # /api/polls, not /gateway/healthz: the gateway does not log its own health checks.
    assert app.http.get(f"/api/polls?archive-check={marker}").status_code == 200
    # The shipper archives a minute's file once the minute after it has ended too: up to
    # two minutes and a shipping round.
    code = COUNT_FILES_WITH.format(pattern="/claim/**/access-*.log", marker=marker)
    wait_until(
        lambda: int(read_claim(app.namespace, "gateway-logs", code).strip().splitlines()[-1]),
        lambda hits: hits >= 1,
        timeout=240,
        interval=10,
        what=f"the request {marker} in the archived gateway logs",
    )


def test_adapter_serves_worker_stats_as_prometheus_metrics(app: Cloudvote) -> None:
    pod = app.ready_pods("worker")[0]["metadata"]["name"]
    ports = {
        p["name"]: p["containerPort"]
        for c in get_json("pod", "-n", app.namespace, pod)["spec"]["containers"]
        for p in c.get("ports", [])
    }
    port = ports["adapter-metric"]
    body = exec_python(
        app.namespace,
        pod,
        "worker",
        FETCH_LOCAL.format(url=f"http://127.0.0.1:{port}/metrics"),
    )
    assert "# TYPE" in body and "cloudvote" in body, body[:500]


def test_worker_reaches_postgres_through_the_ambassador(app: Cloudvote) -> None:
    pod = get_json("pod", "-n", app.namespace, app.ready_pods("worker")[0]["metadata"]["name"])
    worker = next(c for c in pod["spec"]["containers"] if c["name"] == "worker")
    env = {e["name"]: e.get("value", "") for e in worker.get("env", [])}
    database_settings = " ".join(v for k, v in env.items() if k.startswith("DATABASE"))
    assert "127.0.0.1" in database_settings or "localhost" in database_settings, env
    # Votes are applied (so the worker's database path works) ...
    before = app.total()
    assert app.vote("a", voter=secrets.token_hex(16)) == 202
    app.wait_total(before + 1, timeout=60)
    # ... and that path is pgbouncer's: it logged the worker's logins.
    logs = kubectl(
        "logs", "-n", app.namespace, pod["metadata"]["name"], "-c", "db-ambassador"
    ).stdout
    assert "login attempt" in logs, logs[-800:]
