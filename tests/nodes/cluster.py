"""The cluster's nodes, seen and handled the way an operator would: kubectl, and for a
node failure the machine itself (a kind node is a Docker container).
"""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

from tests.support.kube import Manifest, condition, get_json, kubectl
from tests.support.waiting import wait_until

CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
# kind writes this provider id on each node: kind://docker/<cluster>/<container>.
KIND_PROVIDER = "kind://docker/"


@dataclass(frozen=True)
class Nodes:
    """The cluster's nodes when the session started."""

    all: tuple[str, ...]
    workers: tuple[str, ...]
    ssd: tuple[str, ...]

    @classmethod
    def read(cls) -> Nodes:
        items = get_json("nodes")["items"]
        names = tuple(sorted(n["metadata"]["name"] for n in items))
        workers = tuple(
            sorted(n["metadata"]["name"] for n in items if CONTROL_PLANE not in labels(n))
        )
        ssd = tuple(
            sorted(n["metadata"]["name"] for n in items if labels(n).get("disktype") == "ssd")
        )
        return cls(names, workers, ssd)


def labels(node: Manifest) -> dict[str, str]:
    return dict(node["metadata"].get("labels", {}))


def node(name: str) -> Manifest:
    result: Manifest = get_json("node", name)
    return result


def is_ready(name: str) -> bool:
    return condition(node(name), "Ready") == "True"


def wait_ready(name: str, timeout: float = 180) -> None:
    wait_until(lambda: is_ready(name), timeout=timeout, interval=1, what=f"node {name} Ready")


def wait_not_ready(name: str, timeout: float = 180) -> None:
    wait_until(
        lambda: is_ready(name),
        lambda ready: not ready,
        timeout=timeout,
        interval=1,
        what=f"node {name} NotReady",
    )


def taint_keys(name: str) -> set[str]:
    return {t["key"] for t in node(name)["spec"].get("taints", [])}


def pods_by_node(namespace: str, selector: str) -> dict[str, list[str]]:
    """Pod names per node, for the pods that are scheduled and not on their way out."""
    placed: dict[str, list[str]] = defaultdict(list)
    for pod in get_json("pods", "-n", namespace, "-l", selector)["items"]:
        if pod["metadata"].get("deletionTimestamp") or not pod["spec"].get("nodeName"):
            continue
        placed[pod["spec"]["nodeName"]].append(pod["metadata"]["name"])
    return dict(placed)


def cordon(name: str) -> None:
    kubectl("cordon", name)


def uncordon(name: str) -> None:
    kubectl("uncordon", name)


def drain(name: str, timeout: int = 300) -> tuple[str, float]:
    """`kubectl drain` as an upgrade would run it; returns its output and its duration."""
    started = time.monotonic()
    result = kubectl(
        "drain",
        name,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        f"--timeout={timeout}s",
        timeout=timeout + 60,
    )
    return result.stdout + result.stderr, time.monotonic() - started


def kind_container(name: str) -> str:
    """The Docker container behind a kind node; fails on any other kind of node."""
    provider = str(node(name)["spec"].get("providerID", ""))
    assert provider.startswith(KIND_PROVIDER), (
        f"node {name} is not a kind node (providerID {provider!r}): this test stops a node "
        "through its container"
    )
    return provider.rsplit("/", 1)[-1]


def docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout.strip()
