"""Cluster benchmark: what the Service hop costs vote ingest, and how long a pod takes to be Ready.

    python -m bench.cluster_bench [--namespace cloudvote-local] [--quick]   (make bench-cluster)

Writes bench/results/cluster.json. Needs the app deployed in --namespace (for example from
deploy/k8s/overlays/local-cluster), kubectl's current context pointing at its cluster, and
wrk. Bounded: about 4 minutes, 2 with --quick.

Ingest is the wrk load of bench/ingest.py, but every request is a JSON vote from a new voter
(`WRK_API_VOTE_SCRIPT`), 16 connections, the targets taking turns in rounds:

- isolated: a throwaway namespace holding a copy of the live vote Deployment (same image,
  probes and limits) with one replica, and of Redis (same image and fsync settings, no
  worker). Its Service has exactly one endpoint, so Service against direct is the Service
  hop and nothing else. The third target is `kubectl port-forward` to the same pod.
- deployed: the app in --namespace as it runs: the vote Service's ClusterIP (spread over
  however many replicas its HPA keeps), one of those pods directly, and the gateway's
  NodePort. The harness only reads there and sends votes.

Where the load comes from: ClusterIPs and pod IPs are routed only on a node (kube-proxy's
iptables rules and the CNI bridge are there) or inside the cluster. wrk runs on this
machine, which is the node of deploy/cluster's single-node cluster. `kubectl port-forward`
works from anywhere, but it does not use the Service: it tunnels through the API server and
the kubelet to one pod it picks
(https://kubernetes.io/docs/reference/kubectl/generated/kubectl_port-forward/). So it is
measured as its own target, never as "the Service". A target this machine cannot reach is
recorded as skipped, with the reason; on a remote cluster, run wrk in a pod instead.

Startup: in the throwaway namespace, the vote Deployment is scaled up one replica at a time,
then by several at once. For every new pod the API's timestamps are read: creation, the
PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady and Ready conditions,
and the container's startedAt. They have one-second resolution, so a watch on the pods also
records when this client first saw each step, to the millisecond (plus the watch's delivery
delay, a few milliseconds on one machine).
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from tests.kubernetes.app import Cloudvote
from tests.support.kube import (
    KUBECTL,
    Manifest,
    apply,
    condition,
    get_json,
    kubectl,
    temporary_namespace,
    wait_rollout,
)
from tests.support.servers import free_port
from tests.support.waiting import wait_until

from bench.ingest import API_VOTE_PATH, WRK_API_VOTE_SCRIPT, StopRounds, compare_interleaved
from bench.machine import describe_machine

RESULTS = Path(__file__).with_name("results")
VOTE_PODS = "app.kubernetes.io/name=vote"
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


@dataclass(frozen=True)
class Plan:
    seconds: int  # one wrk run
    rounds: int  # runs per target, the targets taking turns
    one_at_a_time: int  # pods started one after another
    burst: int  # pods started together, after those


# --- reaching targets ---------------------------------------------------------------------


def unreachable(base: str, service: str = "vote") -> str | None:
    """None if GET /healthz at `base` is answered by `service` within 2 s, else why not."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read()
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    finally:
        connection.close()
    with suppress(ValueError):
        if response.status == 200 and json.loads(body).get("service") == service:
            return None
    return f"GET /healthz answered {response.status} {body[:80]!r}, not {service}"


def kube_proxy_has(cluster_ip: str, timeout: float = 30) -> str | None:
    """None once this node's kube-proxy rules send `cluster_ip` to a pod, else why not known.

    Until kube-proxy programs a Service, its ClusterIP is routed like any other address:
    out of this machine's default route. So no request goes to a ClusterIP before its
    rule is seen in iptables (iptables mode) or nftables (nftables mode). Reading them
    needs root; without, the ClusterIP targets are skipped.
    """
    commands = [["iptables-save", "-t", "nat"], ["nft", "list", "ruleset"]]
    commands = [c for c in commands if shutil.which(c[0])]
    address = re.compile(rf"(?<![\d.]){re.escape(cluster_ip)}(?![\d.])")
    deadline = time.monotonic() + timeout
    while commands:
        for command in commands:
            found = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
            if found.returncode == 0 and address.search(found.stdout):
                return None
        if time.monotonic() > deadline:
            return f"no kube-proxy rule for {cluster_ip} seen with {commands} in {timeout} s"
        time.sleep(0.5)
    return "neither iptables-save nor nft found: cannot tell whether the ClusterIP is routed"


def ready_pods(namespace: str, selector: str = VOTE_PODS) -> list[Manifest]:
    """Ready pods, oldest first: a ReplicaSet scaling down removes the newest ones first."""
    pods = get_json("pods", "-n", namespace, "-l", selector)["items"]
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp") and condition(p, "Ready") == "True"
    ]
    return sorted(ready, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


def service_bases(namespace: str, name: str) -> tuple[str, str, Manifest]:
    """The Service's ClusterIP base URL, one ready pod's base URL, and that pod."""
    service = get_json("service", "-n", namespace, name)
    port = service["spec"]["ports"][0]
    pod = ready_pods(namespace, f"app.kubernetes.io/name={name}")[0]
    target = port.get("targetPort", port["port"])
    if isinstance(target, str):  # a named port: look it up in the pod
        target = next(
            p["containerPort"]
            for c in pod["spec"]["containers"]
            for p in c.get("ports", [])
            if p.get("name") == target
        )
    cluster_ip = service["spec"]["clusterIP"]
    return f"http://{cluster_ip}:{port['port']}", f"http://{pod['status']['podIP']}:{target}", pod


@contextmanager
def port_forward(namespace: str, pod: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to the pod on a free loopback port; its base URL."""
    local = free_port()
    command = [KUBECTL, "port-forward", "-n", namespace, f"pod/{pod}", f"{local}:{port}"]
    process = subprocess.Popen(
        [*command, "--address", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{local}"
    try:
        wait_until(
            lambda: unreachable(base),
            lambda why: why is None,
            timeout=20,
            interval=0.2,
            what=f"port-forward to {pod}",
        )
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- pod CPU, from the node's cgroups -----------------------------------------------------


class PodCpu:
    """CPU seconds a pod has used, and has been throttled for, read from its cgroup.

    Only on the pod's node: this is how a pod's CPU per vote is measured without a
    metrics pipeline. Handles cgroup v1 and v2, with the cgroupfs and systemd drivers.
    """

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, uid: str) -> None:
        under = uid.replace("-", "_")
        self.patterns = (
            f"kubepods*/pod{uid}",
            f"kubepods*/*/pod{uid}",
            f"kubepods.slice/kubepods-pod{under}.slice",
            f"kubepods.slice/*/kubepods-*-pod{under}.slice",
        )
        self.v1 = (self.ROOT / "cpuacct").is_dir()
        self.usage_dir = self._find("cpuacct" if self.v1 else "")
        self.stat_dir = self._find("cpu" if self.v1 else "")

    def _find(self, controller: str) -> Path | None:
        base = self.ROOT / controller
        for pattern in self.patterns:
            for found in base.glob(pattern):
                return found
        return None

    @property
    def found(self) -> bool:
        return self.usage_dir is not None and self.stat_dir is not None

    def _stat(self) -> dict[str, int]:
        assert self.stat_dir is not None
        lines = (self.stat_dir / "cpu.stat").read_text().split("\n")
        return {k: int(v) for k, v in (line.split() for line in lines if line)}

    def used_s(self) -> float:
        if self.v1:
            assert self.usage_dir is not None
            return int((self.usage_dir / "cpuacct.usage").read_text()) / 1e9
        return self._stat()["usage_usec"] / 1e6

    def throttled_s(self) -> float:
        stat = self._stat()
        return stat["throttled_time"] / 1e9 if self.v1 else stat["throttled_usec"] / 1e6


def cpu_clock_of(pods: list[Manifest]) -> Callable[[], float] | None:
    meters = [PodCpu(p["metadata"]["uid"]) for p in pods]
    if not all(m.found for m in meters):
        return None
    return lambda: sum(m.used_s() for m in meters)


# --- ingest -------------------------------------------------------------------------------


def reachable_targets(candidates: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The targets that answer, as vote URLs; and the skipped ones, with the reason.

    Names starting with "service_" are ClusterIPs, tried only once kube-proxy routes them.
    """
    targets, skipped = {}, {}
    for name, base in candidates.items():
        why = None
        if name.startswith("service_"):
            why = kube_proxy_has(urlsplit(base).hostname or "")
        why = why or unreachable(base)
        if why is None:
            targets[name] = base + API_VOTE_PATH
        else:
            skipped[name] = f"{base}: {why}"
    return targets, skipped


def ratios(figures: dict[str, Any], via: str, direct: str) -> dict[str, Any] | None:
    """`via` against `direct`, paired round by round, then the median over the rounds.

    Two runs of one round are seconds apart, so they share most of the machine's drift;
    the spread of the per-round ratios shows how much drift is left.
    """
    if via not in figures or direct not in figures:
        return None
    direct_runs = {run["round"]: run for run in figures[direct]["rounds"]}
    pairs = [
        (a, direct_runs[a["round"]]) for a in figures[via]["rounds"] if a["round"] in direct_runs
    ]
    if not pairs:
        return None

    def paired(key: str) -> list[float]:
        return [round(a[key] / b[key], 3) for a, b in pairs]

    throughput = paired("requests_per_s")
    return {
        "paired_rounds": len(pairs),
        "throughput_ratio": round(statistics.median(throughput), 3),
        "throughput_ratio_per_round": throughput,
        "p50_ratio": round(statistics.median(paired("p50_ms")), 3),
        "p99_ratio": round(statistics.median(paired("p99_ms")), 3),
        "added_p50_ms": round(statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in pairs), 3),
        "ratio_of_medians": round(
            figures[via]["requests_per_s"] / figures[direct]["requests_per_s"], 3
        ),
    }


def wait_for_drain(namespace: str, timeout: float) -> float:
    """Let the deployed worker catch up (its /stats via the worker Service); seconds waited.

    Another run's backlog would otherwise compete for the CPU. Other people's load may
    keep the queue from ever emptying, so after `timeout` it goes on regardless.
    """
    started = time.monotonic()
    with suppress(Exception):
        base, _, _ = service_bases(namespace, "worker")
        parts = urlsplit(base)
        if kube_proxy_has(parts.hostname or "", timeout=0):
            return 0.0
        while time.monotonic() < started + timeout:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
            try:
                connection.request("GET", "/stats")
                if json.loads(connection.getresponse().read())["queue_depth"] == 0:
                    break
            finally:
                connection.close()
            time.sleep(0.5)
    return time.monotonic() - started


def ready_endpoints(namespace: str, service: str) -> int:
    slices = get_json(
        "endpointslices", "-n", namespace, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return sum(
        1
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    )


def vote_replicas(namespace: str) -> dict[str, Any]:
    found = kubectl("get", "hpa", "vote", "-n", namespace, "-o", "json", check=False)
    hpa = json.loads(found.stdout) if found.returncode == 0 else None
    return {
        "ready_endpoints": ready_endpoints(namespace, "vote"),
        "hpa_current_replicas": hpa["status"].get("currentReplicas") if hpa else None,
    }


def ingest_deployed(namespace: str, plan: Plan, script: Path) -> dict[str, Any]:
    service, pod_base, pod = service_bases(namespace, "vote")
    candidates = {
        "service_cluster_ip": service,
        "one_pod_direct": pod_base,
        "gateway_node_port": Cloudvote.find(namespace).base_url,
    }
    targets, skipped = reachable_targets(candidates)
    record: dict[str, Any] = {"namespace": namespace, "direct_pod": pod["metadata"]["name"]}
    record["vote_replicas_before"] = vote_replicas(namespace)
    direct = pod["metadata"]["name"]
    endpoints: list[int] = []
    drained: list[float] = []
    drain_budget = 40.0  # seconds for the whole set: waiting cannot stretch the run much

    def before_each() -> None:
        # The HPA and other people's rollouts change the pods under the Service mid-run.
        if direct not in {p["metadata"]["name"] for p in ready_pods(namespace)}:
            raise StopRounds(f"pod {direct} is gone or not Ready (a rollout or scale-down)")
        drained.append(wait_for_drain(namespace, min(5.0, drain_budget - sum(drained))))
        endpoints.append(ready_endpoints(namespace, "vote"))

    figures = compare_interleaved(targets, plan.seconds, plan.rounds, script, before_each)
    record["vote_ready_endpoints_before_each_run"] = endpoints
    record["seconds_waiting_for_the_worker_to_drain"] = round(sum(drained), 1)
    record["vote_replicas_after"] = vote_replicas(namespace)
    record.update(figures)
    record["skipped"] = skipped
    record["service_vs_direct"] = ratios(figures, "service_cluster_ip", "one_pod_direct")
    record["gateway_vs_direct"] = ratios(figures, "gateway_node_port", "one_pod_direct")
    return record


def ingest_isolated(namespace: str, plan: Plan, script: Path) -> dict[str, Any]:
    service, pod_base, pod = service_bases(namespace, "vote")
    redis = ready_pods(namespace, "app.kubernetes.io/name=redis")
    record: dict[str, Any] = {"namespace": namespace, "direct_pod": pod["metadata"]["name"]}
    record["ready_endpoints"] = ready_endpoints(namespace, "vote")
    vote_cpu = PodCpu(pod["metadata"]["uid"])
    clock = cpu_clock_of([pod, *redis])
    port = int(urlsplit(pod_base).port or 0)
    with port_forward(namespace, pod["metadata"]["name"], port) as forwarded:
        candidates = {
            "service_cluster_ip": service,
            "one_pod_direct": pod_base,
            "port_forward": forwarded,
        }
        targets, skipped = reachable_targets(candidates)
        throttled = vote_cpu.throttled_s() if vote_cpu.found else None
        started = time.monotonic()
        figures = compare_interleaved(targets, plan.seconds, plan.rounds, script, cpu_clock=clock)
        elapsed = time.monotonic() - started
    record.update(figures)
    record["skipped"] = skipped
    if clock is not None:
        record["server_cpu"] = "vote pod + redis pod, from their cgroups on this node"
    if throttled is not None:
        # The pod's CPU limit (cpu: 1) at work: seconds its cgroup waited for quota.
        record["vote_pod_cpu_throttled_s"] = round(vote_cpu.throttled_s() - throttled, 2)
        record["load_seconds"] = round(elapsed, 1)
    record["service_vs_direct"] = ratios(figures, "service_cluster_ip", "one_pod_direct")
    record["port_forward_vs_direct"] = ratios(figures, "port_forward", "one_pod_direct")
    return record


# --- the throwaway copy -------------------------------------------------------------------


def references(template: Manifest) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """The ConfigMaps, Secret keys and ServiceAccount a pod template uses."""
    spec = template["spec"]
    configmaps: set[str] = set()
    secret_keys: dict[str, set[str]] = {}
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            configmaps.add(volume["configMap"]["name"])
        if "secret" in volume:
            items = volume["secret"].get("items")
            if not items:
                raise SystemExit("a secret volume without items: cannot tell its keys")
            keys = secret_keys.setdefault(volume["secret"]["secretName"], set())
            keys.update(item["key"] for item in items)
    for container in spec.get("initContainers", []) + spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                raise SystemExit("envFrom a Secret: cannot tell its keys")
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                configmaps.add(ref["configMapKeyRef"]["name"])
            if "secretKeyRef" in ref:
                name = ref["secretKeyRef"]["name"]
                secret_keys.setdefault(name, set()).add(ref["secretKeyRef"]["key"])
    accounts = {spec["serviceAccountName"]} if spec.get("serviceAccountName") else set()
    return configmaps, secret_keys, accounts


def copied_template(template: Manifest, instance: str) -> Manifest:
    labels = {**template["metadata"].get("labels", {}), "app.kubernetes.io/instance": instance}
    return {"metadata": {"labels": labels}, "spec": copy.deepcopy(template["spec"])}


def copy_of_vote(source: str, namespace: str) -> list[Manifest]:
    """Manifests for vote and Redis as they run in `source`, one replica each.

    ConfigMaps are copied. Secrets get fresh random values under the same keys: the live
    credentials are never read. Redis's PersistentVolumeClaim becomes an emptyDir, as the
    data dies with the namespace anyway.
    """
    vote = get_json("deployment", "-n", source, "vote")
    redis = get_json("statefulset", "-n", source, "redis")
    configmaps: set[str] = set()
    secret_keys: dict[str, set[str]] = {}
    accounts: set[str] = set()
    for workload in (vote, redis):
        found = references(workload["spec"]["template"])
        configmaps |= found[0]
        for name, keys in found[1].items():
            secret_keys.setdefault(name, set()).update(keys)
        accounts |= found[2]
    objects: list[Manifest] = []
    for name in sorted(configmaps):
        data = get_json("configmap", "-n", source, name).get("data", {})
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        objects[-1]["data"] = data
    for name, keys in sorted(secret_keys.items()):
        values = {key: secrets.token_urlsafe(24) for key in sorted(keys)}
        objects.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}
        )
    for name in sorted(accounts):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name},
                "automountServiceAccountToken": False,
            }
        )
    redis_template = copied_template(redis["spec"]["template"], namespace)
    redis_template["spec"].setdefault("volumes", []).append(
        {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}}
    )
    for name, template in (
        ("redis", redis_template),
        ("vote", copied_template(vote["spec"]["template"], namespace)),
    ):
        selector = {"app.kubernetes.io/name": name}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": selector},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": selector},
                    "template": template,
                },
            }
        )
        live = get_json("service", "-n", source, name)["spec"]
        spec: Manifest = {"selector": selector, "ports": live["ports"]}
        if live.get("clusterIP") == "None":
            spec["clusterIP"] = "None"
        objects.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
        )
    return objects


# --- startup ------------------------------------------------------------------------------


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
    before = {p["metadata"]["name"] for p in ready_pods(namespace)}
    kubectl("scale", "-n", namespace, "deployment/vote", f"--replicas={replicas}")
    wait_until(
        lambda: len(ready_pods(namespace)),
        lambda count: count >= replicas,
        timeout=timeout,
        interval=0.5,
        what=f"{replicas} vote pods Ready",
    )
    return sorted({p["metadata"]["name"] for p in ready_pods(namespace)} - before)


def measure_startup(namespace: str, plan: Plan) -> dict[str, Any]:
    replicas = len(ready_pods(namespace))
    watch = PodWatch(namespace, VOTE_PODS, timeout=300)
    series: dict[str, list[str]] = {"one_at_a_time": [], "burst": []}
    try:
        for _ in range(plan.one_at_a_time):
            replicas += 1
            series["one_at_a_time"] += scale_and_wait(namespace, replicas)
        if plan.burst:
            replicas += plan.burst
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


# --- the run ------------------------------------------------------------------------------


def describe_cluster() -> dict[str, Any]:
    nodes = get_json("nodes")["items"]
    node, info = nodes[0], nodes[0]["status"]["nodeInfo"]
    pods = get_json("pods", "--all-namespaces")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    return {
        "nodes": len(nodes),
        "kubelet": info["kubeletVersion"],
        "container_runtime": info["containerRuntimeVersion"],
        "node_allocatable_cpu": node["status"]["allocatable"]["cpu"],
        "running_pods_at_start": len(running),
        "namespaces_with_pods": sorted({p["metadata"]["namespace"] for p in running}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="cloudvote-local", help="the deployed app")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer pods")
    args = parser.parse_args()
    plan = Plan(2, 3, 5, 3) if args.quick else Plan(3, 8, 6, 4)
    RESULTS.mkdir(exist_ok=True)
    started = time.time()
    record: dict[str, Any] = {
        "harness": "cluster",
        "measured_at": started,
        "quick": args.quick,
        "machine": describe_machine(),
        "cluster": describe_cluster(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "method": {
            "request": f"POST {API_VOTE_PATH} JSON, a new voter_id cookie per request",
            "wrk": "2 threads, 16 keep-alive connections, on the node itself",
            "seconds_per_run": plan.seconds,
            "rounds": plan.rounds,
            "order": "targets take turns; the order rotates every round; medians reported",
            "ratios": "paired within each round, median over the rounds",
            "isolated": "throwaway namespace: a copy of vote (1 replica) and Redis, no worker",
            "deployed": f"{args.namespace} as it runs; reads and votes only",
        },
    }
    with tempfile.TemporaryDirectory() as workdir:
        script = Path(workdir) / "api-vote.lua"
        script.write_text(WRK_API_VOTE_SCRIPT)
        labels = {"app.kubernetes.io/part-of": "cloudvote", "cloudvote/purpose": "bench"}
        with temporary_namespace("cloudvote-bench", labels=labels) as scratch:
            print(f"cluster-bench: copying vote and redis into {scratch}", flush=True)
            apply(*copy_of_vote(args.namespace, scratch), namespace=scratch)
            wait_rollout(scratch, "deployment/redis", timeout=120)
            wait_rollout(scratch, "deployment/vote", timeout=120)
            print("cluster-bench: ingest, isolated ...", flush=True)
            record["ingest_isolated"] = ingest_isolated(scratch, plan, script)
            print(f"cluster-bench: {json.dumps(brief(record['ingest_isolated']))}", flush=True)
            print("cluster-bench: startup ...", flush=True)
            record["startup"] = measure_startup(scratch, plan)
            shown = {k: record["startup"][k]["api"] for k in ("one_at_a_time", "burst")}
            print(f"cluster-bench: startup {json.dumps(shown)}", flush=True)
        print(f"cluster-bench: ingest, {args.namespace} ...", flush=True)
        record["ingest_deployed"] = ingest_deployed(args.namespace, plan, script)
        print(f"cluster-bench: {json.dumps(brief(record['ingest_deployed']))}", flush=True)
        # temporary_namespace deletes without waiting; wait (bounded) so that nothing of
        # the copy is left running once the harness has finished.
        wait = ("wait", "--for=delete", f"namespace/{scratch}", "--timeout=90s")
        kubectl(*wait, check=False, timeout=120)
    record["load_1m_at_end"] = round(os.getloadavg()[0], 2)
    record["took_s"] = round(time.time() - started, 1)
    (RESULTS / "cluster.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"cluster-bench: wrote {RESULTS / 'cluster.json'} in {record['took_s']} s", flush=True)


def brief(ingest: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests_per_s", "p50_ms", "p99_ms", "non_2xx_3xx", "socket_errors")
    shown: dict[str, Any] = {
        name: {k: v for k, v in figures.items() if k in keys}
        for name, figures in ingest.items()
        if isinstance(figures, dict) and "requests_per_s" in figures
    }
    shown["ratios"] = {k: v for k, v in ingest.items() if k.endswith("_vs_direct")}
    return shown


if __name__ == "__main__":
    main()
