"""The cluster benchmark's ingest half: what the Service hop, a port-forward and the
gateway cost vote's write path, against one vote pod reached directly (bench/cluster_bench.py
says how). Also how the targets are reached from the node, and a pod's CPU from its cgroup.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.kubernetes.app import Cloudvote
from tests.support.client import Client
from tests.support.kube import Manifest, get_json, kubectl, port_forward, ready_pods

from bench.ingest import API_VOTE_PATH, StopRounds, compare_interleaved

VOTE_PODS = "app.kubernetes.io/name=vote"


# --- reaching targets ---------------------------------------------------------------------


def unreachable(base: str, service: str = "vote") -> str | None:
    """None if GET /healthz at `base` is answered by `service` within 2 s, else why not."""
    try:
        response = Client(base, timeout=2, keep_alive=False).get("/healthz")
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    with suppress(ValueError):
        if response.status_code == 200 and response.json().get("service") == service:
            return None
    return f"GET /healthz answered {response.status_code} {response.content[:80]!r}, not {service}"


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
        stats = Client(base, timeout=2, keep_alive=False)
        while time.monotonic() < started + timeout:
            if stats.get("/stats").json()["queue_depth"] == 0:
                break
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


def ingest_deployed(namespace: str, seconds: int, rounds: int, script: Path) -> dict[str, Any]:
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
        if direct not in {p["metadata"]["name"] for p in ready_pods(namespace, VOTE_PODS)}:
            raise StopRounds(f"pod {direct} is gone or not Ready (a rollout or scale-down)")
        drained.append(wait_for_drain(namespace, min(5.0, drain_budget - sum(drained))))
        endpoints.append(ready_endpoints(namespace, "vote"))

    figures = compare_interleaved(targets, seconds, rounds, script, before_each)
    record["vote_ready_endpoints_before_each_run"] = endpoints
    record["seconds_waiting_for_the_worker_to_drain"] = round(sum(drained), 1)
    record["vote_replicas_after"] = vote_replicas(namespace)
    record.update(figures)
    record["skipped"] = skipped
    record["service_vs_direct"] = ratios(figures, "service_cluster_ip", "one_pod_direct")
    record["gateway_vs_direct"] = ratios(figures, "gateway_node_port", "one_pod_direct")
    return record


def ingest_isolated(namespace: str, seconds: int, rounds: int, script: Path) -> dict[str, Any]:
    service, pod_base, pod = service_bases(namespace, "vote")
    redis = ready_pods(namespace, "app.kubernetes.io/name=redis")
    record: dict[str, Any] = {"namespace": namespace, "direct_pod": pod["metadata"]["name"]}
    record["ready_endpoints"] = ready_endpoints(namespace, "vote")
    vote_cpu = PodCpu(pod["metadata"]["uid"])
    clock = cpu_clock_of([pod, *redis])
    port = int(urlsplit(pod_base).port or 0)
    with port_forward(namespace, f"pod/{pod['metadata']['name']}", port) as forwarded:
        candidates = {
            "service_cluster_ip": service,
            "one_pod_direct": pod_base,
            "port_forward": forwarded,
        }
        targets, skipped = reachable_targets(candidates)
        throttled = vote_cpu.throttled_s() if vote_cpu.found else None
        started = time.monotonic()
        figures = compare_interleaved(targets, seconds, rounds, script, cpu_clock=clock)
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
