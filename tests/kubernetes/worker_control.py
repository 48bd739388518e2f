"""Holding the worker at a fixed replica count, whoever owns its scale.

With components/keda in the overlay, KEDA's ScaledObject owns the worker's replicas: a
plain `kubectl scale` is undone at KEDA's next poll. KEDA's own switch is the annotation
`autoscaling.keda.sh/paused-replicas`: KEDA scales the target to that count and stops
autoscaling until the annotation goes. Without a ScaledObject, `kubectl scale` is the
switch. The tests that stop consumption (the queue-lag alert, the KEDA backlog) use this
one helper, so they behave alike on either overlay.
https://keda.sh/docs/latest/concepts/scaling-deployments/#pause-autoscaling
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.kube import get_json, kubectl
from tests.support.waiting import wait_until

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def has_scaled_object(namespace: str, name: str = "worker") -> bool:
    found = kubectl("get", "scaledobject", "-n", namespace, name, check=False, timeout=30)
    return found.returncode == 0


def worker_pods(namespace: str) -> int:
    """Worker pods that exist now, terminating ones included (they may still consume)."""
    pods = get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/name=worker")
    return len(pods["items"])


def hold_worker(namespace: str, replicas: int, timeout: float = 180) -> None:
    """Set the worker to `replicas` and wait until exactly that many pods exist."""
    if has_scaled_object(namespace):
        kubectl(
            "annotate", "scaledobject", "-n", namespace, "worker",
            f"{PAUSED_REPLICAS}={replicas}", "--overwrite",
        )  # fmt: skip
    else:
        kubectl("scale", "deployment", "-n", namespace, "worker", f"--replicas={replicas}")
    wait_until(
        lambda: worker_pods(namespace),
        lambda pods: pods == replicas,
        timeout=timeout,
        interval=1,
        what=f"the worker settled at {replicas} pods",
    )


def release_worker(namespace: str, replicas: int = 1) -> None:
    """Give the worker back to its owner: KEDA (annotation removed) or `replicas` pods."""
    if has_scaled_object(namespace):
        kubectl("annotate", "scaledobject", "-n", namespace, "worker", f"{PAUSED_REPLICAS}-")
    else:
        kubectl("scale", "deployment", "-n", namespace, "worker", f"--replicas={replicas}")


@contextmanager
def worker_held_at(namespace: str, replicas: int) -> Iterator[None]:
    """The worker at `replicas` for the block, given back to its owner afterwards."""
    hold_worker(namespace, replicas)
    try:
        yield
    finally:
        release_worker(namespace)
