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

This file runs the two and writes the record; the ingest half is in cluster_ingest.py, the
startup half in cluster_startup.py, and the throwaway copy they measure in cluster_copy.py.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube import apply, get_json, kubectl, temporary_namespace, wait_rollout

from bench.cluster_copy import copy_of_vote
from bench.cluster_ingest import ingest_deployed, ingest_isolated
from bench.cluster_startup import measure_startup
from bench.ingest import API_VOTE_PATH, WRK_API_VOTE_SCRIPT
from bench.machine import describe_machine

RESULTS = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Plan:
    seconds: int  # one wrk run
    rounds: int  # runs per target, the targets taking turns
    one_at_a_time: int  # pods started one after another
    burst: int  # pods started together, after those


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
            record["ingest_isolated"] = ingest_isolated(scratch, plan.seconds, plan.rounds, script)
            print(f"cluster-bench: {json.dumps(brief(record['ingest_isolated']))}", flush=True)
            print("cluster-bench: startup ...", flush=True)
            record["startup"] = measure_startup(scratch, plan.one_at_a_time, plan.burst)
            shown = {k: record["startup"][k]["api"] for k in ("one_at_a_time", "burst")}
            print(f"cluster-bench: startup {json.dumps(shown)}", flush=True)
        print(f"cluster-bench: ingest, {args.namespace} ...", flush=True)
        record["ingest_deployed"] = ingest_deployed(
            args.namespace, plan.seconds, plan.rounds, script
        )
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
