"""The cluster benchmark's startup half: how long a vote pod takes from creation to Ready,
step by step, by the API's timestamps and by a watch (bench/cluster_bench.py says how)."""

from __future__ import annotations

import json
import statistics
import subprocess
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tests.support.kube import KUBECTL, Manifest, get_json, kubectl, ready_pods
from tests.support.waiting import wait_until

from bench.cluster_ingest import VOTE_PODS

# The steps of a pod's start, in order; "ContainerStarted" is the container's startedAt.
STEPS = (
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainerStarted",
    "ContainersReady",
    "Ready",
)
# The spans reported, as (name, from step, to step). PodReadyToStartContainers (sandbox and
# network ready) is not one of them: the kubelet reports it in the same status update as
# the running container, and stamps it with that update's time, which can be later than
# the container's startedAt.
SPANS = (
    ("created_to_scheduled", "created", "PodScheduled"),
    ("scheduled_to_started", "PodScheduled", "ContainerStarted"),
    ("started_to_ready", "ContainerStarted", "Ready"),
    ("scheduled_to_ready", "PodScheduled", "Ready"),
)


class PodWatch:
    """When this client first saw each pod reach each step, in epoch seconds (ms resolution).

    `kubectl get --raw` on a watch URL prints one JSON event per line as the API server
    sends it; the server ends the watch after `timeout` seconds in any case.
    """

    def __init__(self, namespace: str, selector: str, timeout: int) -> None:
        path = (
            f"/api/v1/namespaces/{namespace}/pods?watch=1"
            f"&labelSelector={quote(selector)}&timeoutSeconds={timeout}"
        )
        self.seen: dict[str, dict[str, float]] = {}
        self.process = subprocess.Popen(
            [KUBECTL, "get", "--raw", path],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            now = time.time()
            pod = json.loads(line).get("object", {})
            name = pod.get("metadata", {}).get("name")
            if not name:
                continue
            steps = self.seen.setdefault(name, {"created": now})
            status = pod.get("status", {})
            for cond in status.get("conditions") or []:
                if cond.get("status") == "True":
                    steps.setdefault(cond["type"], now)
            for container in status.get("containerStatuses") or []:
                if "running" in (container.get("state") or {}):
                    steps.setdefault("ContainerStarted", now)

    def close(self) -> dict[str, dict[str, float]]:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.thread.join(timeout=10)
        return dict(self.seen)


def api_steps(pod: Manifest) -> dict[str, float]:
    """The API's timestamps of a pod's steps, in epoch seconds (whole seconds)."""

    def epoch(stamp: str) -> float:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    steps = {"created": epoch(pod["metadata"]["creationTimestamp"])}
    for cond in pod["status"].get("conditions") or []:
        if cond.get("status") == "True" and cond.get("lastTransitionTime"):
            steps[cond["type"]] = epoch(cond["lastTransitionTime"])
    for container in pod["status"].get("containerStatuses") or []:
        running = (container.get("state") or {}).get("running")
        if running and running.get("startedAt"):
            steps["ContainerStarted"] = epoch(running["startedAt"])
    return steps


def offsets(steps: dict[str, float]) -> dict[str, float]:
    """Each step's time after the pod's creation, in step order."""
    order = ("created", *STEPS)
    return {k: round(steps[k] - steps["created"], 3) for k in order if k in steps}


def spans(steps: dict[str, float]) -> dict[str, float]:
    return {
        name: round(steps[end] - steps[start], 3)
        for name, start, end in SPANS
        if start in steps and end in steps
    }


def summary(per_pod: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    result = {}
    for name, _, _ in SPANS:
        values = [p[name] for p in per_pod if name in p]
        if values:
            result[name] = {
                "n": len(values),
                "median_s": round(statistics.median(values), 3),
                "max_s": round(max(values), 3),
                "min_s": round(min(values), 3),
            }
    return result


def scale_and_wait(namespace: str, replicas: int, timeout: int = 90) -> list[str]:
    """Scale vote to `replicas`; once every pod is Ready, the names of the new ones."""
    before = {p["metadata"]["name"] for p in ready_pods(namespace, VOTE_PODS)}
    kubectl("scale", "-n", namespace, "deployment/vote", f"--replicas={replicas}")
    wait_until(
        lambda: len(ready_pods(namespace, VOTE_PODS)),
        lambda count: count >= replicas,
        timeout=timeout,
        interval=0.5,
        what=f"{replicas} vote pods Ready",
    )
    return sorted({p["metadata"]["name"] for p in ready_pods(namespace, VOTE_PODS)} - before)


def measure_startup(namespace: str, one_at_a_time: int, burst: int) -> dict[str, Any]:
    replicas = len(ready_pods(namespace, VOTE_PODS))
    watch = PodWatch(namespace, VOTE_PODS, timeout=300)
    series: dict[str, list[str]] = {"one_at_a_time": [], "burst": []}
    try:
        for _ in range(one_at_a_time):
            replicas += 1
            series["one_at_a_time"] += scale_and_wait(namespace, replicas)
        if burst:
            replicas += burst
            series["burst"] = scale_and_wait(namespace, replicas)
    finally:
        seen = watch.close()
    pods = {p["metadata"]["name"]: p for p in get_json("pods", "-n", namespace)["items"]}
    container = pods[series["one_at_a_time"][0]]["spec"]["containers"][0]
    record: dict[str, Any] = {
        "namespace": namespace,
        "image": container["image"],
        "image_pull_policy": container.get("imagePullPolicy"),
        "probes": {
            kind: container.get(kind)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        },
        "resolution": (
            "api_*: the API's timestamps, whole seconds, so each span is +-1 s; watch_*: when "
            "this client first saw the step in a watch, ms resolution plus delivery delay"
        ),
    }
    for name, names in series.items():
        api = {n: api_steps(pods[n]) for n in names}
        watched = {n: seen[n] for n in names if n in seen}
        record[name] = {
            "pods": len(names),
            "api": summary([spans(steps) for steps in api.values()]),
            "watch": summary([spans(steps) for steps in watched.values()]),
            "per_pod_s_after_creation": {
                n: {"api": offsets(api[n]), "watch": offsets(watched.get(n, {"created": 0}))}
                for n in names
            },
        }
    return record
