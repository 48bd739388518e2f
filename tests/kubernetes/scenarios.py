"""The break-it-on-purpose scenarios of deploy/k8s/scenarios, driven and read through kubectl.

A scenario is applied over the healthy baseline in namespace cloudvote-scenario, the way
its README does it, and its symptom is read from the API: container states, restart
counts, events, endpoints, rollout conditions, the HPA's status. Every wait is bounded.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kubernetes.app import REPO, adapt_storage_class, deploy, psql, released, render
from tests.support import kube
from tests.support.kube import Manifest, apply, condition, get_json, kubectl
from tests.support.waiting import wait_until

SCENARIOS = REPO / "deploy/k8s/scenarios"
NAMESPACE = "cloudvote-scenario"
# The scenarios' own static volume (scenarios/_shared): cluster-scoped, so it outlives
# the namespace and is deleted by name.
STATIC_VOLUME = "cloudvote-scenario-gateway-logs"

# Python run inside a vote pod: one vote per voter id given, straight to that pod's
# gunicorn; prints the voters whose vote was accepted (202).
CAST_VOTES = (
    "import http.client, json, sys\n"
    "accepted = []\n"
    "for voter in sys.argv[1:]:\n"
    "    c = http.client.HTTPConnection('127.0.0.1', 5000, timeout=5)\n"
    "    c.request('POST', '/api/polls/default/votes', json.dumps({'option': 'a'}),\n"
    "              {'Content-Type': 'application/json', 'Cookie': 'voter_id=' + voter})\n"
    "    r = c.getresponse(); r.read()\n"
    "    if r.status == 202: accepted.append(voter)\n"
    "print(' '.join(accepted))\n"
)


def overlay(scenario: str) -> Path:
    return SCENARIOS / scenario


def scenario_objects(scenario: str) -> list[Manifest]:
    """The scenario as `kubectl apply -k` would send it (its release, when there is one),
    with the StorageClass adapted."""
    return adapt_storage_class(render(released(overlay(scenario))))


def rendered_image(scenario: str, deployment: str) -> str:
    """The image of a Deployment's first container, as the scenario deploys it."""
    workload = next(
        o
        for o in scenario_objects(scenario)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment
    )
    return str(workload["spec"]["template"]["spec"]["containers"][0]["image"])


def apply_scenario(scenario: str, objects: list[Manifest] | None = None) -> None:
    apply(*(objects if objects is not None else scenario_objects(scenario)))


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """kubectl in the scenario namespace, not checked: some tests assert that it fails."""
    return kubectl("-n", NAMESPACE, *args, timeout=timeout, check=False)


def get(*args: str) -> Any:
    return get_json("-n", NAMESPACE, *args)


def remove_namespace(timeout: float = 240) -> None:
    """Delete the namespace and the scenarios' static volume, and wait until both are gone.

    Not `kubectl delete -k scenarios/baseline`: that would also delete the StorageClass
    cloudvote-standard, which is cluster-scoped and shared with cloudvote-local.
    """
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    kubectl("delete", "persistentvolume", STATIC_VOLUME, "--ignore-not-found", "--wait=false")
    for kind, name in (("namespace", NAMESPACE), ("persistentvolume", STATIC_VOLUME)):
        wait_until(
            lambda kind=kind, name=name: kubectl("get", kind, name, check=False).returncode,
            lambda code: code != 0,
            timeout=timeout,
            interval=2,
            what=f"{kind} {name} deleted",
        )


def deploy_baseline() -> str:
    """A fresh baseline: whatever an earlier run left behind is removed first."""
    if kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0:
        remove_namespace()
    namespace = deploy(overlay("baseline"))
    assert namespace == NAMESPACE
    return namespace


def pods(selector: str) -> list[Manifest]:
    items = get("pods", "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def container_status(pod: Manifest, container: str) -> Manifest:
    statuses = pod["status"].get("containerStatuses", []) or []
    return next((s for s in statuses if s["name"] == container), {})


def waiting_reason(status: Manifest) -> str | None:
    return status.get("state", {}).get("waiting", {}).get("reason")


def last_termination(status: Manifest) -> Manifest:
    return dict(status.get("lastState", {}).get("terminated", {}))


def current_revision_pods(deployment: str) -> tuple[str, list[Manifest]]:
    """The pod-template hash of the Deployment's current revision, and that revision's pods.

    "The new pods" of a rollout, whatever else runs beside them: the old ReplicaSet's
    pods, or the ones still terminating.
    """
    dep = wait_until(
        lambda: get("deployment", deployment),
        lambda d: d["status"].get("observedGeneration") == d["metadata"]["generation"],
        timeout=60,
        interval=0.5,
        what=f"deployment/{deployment} observed",
    )
    revision = dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    selector = f"app.kubernetes.io/name={deployment}"
    replica_set = wait_until(
        lambda: next(
            rs
            for rs in get("replicasets", "-l", selector)["items"]
            if rs["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == revision
        ),
        timeout=60,
        interval=0.5,
        what=f"deployment/{deployment}'s ReplicaSet of revision {revision}",
    )
    template_hash = replica_set["metadata"]["labels"]["pod-template-hash"]
    return template_hash, pods(f"{selector},pod-template-hash={template_hash}")


def wait_new_pod(
    deployment: str,
    accept: Callable[[Manifest], bool],
    *,
    container: str | None = None,
    timeout: float = 120,
    what: str,
) -> tuple[Manifest, Manifest]:
    """Wait until one pod of the current revision has a container status ``accept`` likes.

    Returns that pod and its container status.
    """
    name = container or deployment

    def probe() -> tuple[Manifest, Manifest] | None:
        _, new = current_revision_pods(deployment)
        for pod in new:
            status = container_status(pod, name)
            if status and accept(status):
                return pod, status
        return None

    found = wait_until(probe, timeout=timeout, interval=1, what=what)
    assert found is not None
    return found


def ready_pods(selector: str) -> list[Manifest]:
    return kube.ready_pods(NAMESPACE, selector)


def pod_events(pod: str) -> list[Manifest]:
    events = get("events", "--field-selector", f"involvedObject.name={pod}")
    return list(events["items"])


def event_messages(pod: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in pod_events(pod) if e.get("reason") == reason]


def previous_logs(pod: str, container: str) -> str:
    """The crashed run's output (`kubectl logs --previous`), waited for: right after a
    restart the runtime may not hand the previous container's log out yet, and while the
    kubelet replaces a crash-looping container's dead predecessor, kubectl prints "unable
    to retrieve container logs" (on stdout, exit 0) until the next one has exited."""
    return wait_until(
        lambda: run("logs", pod, "-c", container, "--previous").stdout,
        lambda text: bool(text.strip()) and not text.startswith("unable to retrieve"),
        timeout=60,
        interval=1,
        what=f"logs --previous of {pod}/{container}",
    )


def rollout_status(kind_name: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return run("rollout", "status", kind_name, f"--timeout={timeout}s", timeout=timeout + 30)


def wait_rolled_out(kind_name: str, timeout: int = 180) -> None:
    result = rollout_status(kind_name, timeout)
    assert result.returncode == 0, f"{kind_name} did not roll out: {result.stderr.strip()}"
    assert "successfully rolled out" in result.stdout


def assert_serving(deployment: str) -> None:
    """The rollout is complete: as many pods of the current revision as the Deployment
    wants, all ready and never restarted, and no pod of another revision left."""
    template_hash, new = current_revision_pods(deployment)
    wanted = get("deployment", deployment)["spec"]["replicas"]
    others = [
        p["metadata"]["name"]
        for p in pods(f"app.kubernetes.io/name={deployment}")
        if p["metadata"]["labels"].get("pod-template-hash") != template_hash
    ]
    assert not others, f"{deployment}: pods of another revision remain: {others}"
    assert len(new) == wanted, f"{deployment}: {len(new)} of {wanted} pods of {template_hash}"
    for pod in new:
        assert condition(pod, "Ready") == "True", pod["metadata"]["name"]
        for status in pod["status"]["containerStatuses"]:
            assert status["restartCount"] == 0, (pod["metadata"]["name"], status)


def cast_votes(count: int) -> set[str]:
    """Vote through a ready vote pod; returns the voters whose vote was accepted."""
    pod = ready_pods("app.kubernetes.io/name=vote")[0]["metadata"]["name"]
    voters = [secrets.token_hex(16) for _ in range(count)]
    result = kubectl(
        "exec", "-n", NAMESPACE, pod, "-c", "vote", "--", "python", "-c", CAST_VOTES, *voters
    )
    return set(result.stdout.split())


def stored_voters() -> set[str]:
    return set(psql(NAMESPACE, "SELECT voter_id FROM votes WHERE poll_id = 'default'").split())


def wait_stored(voters: set[str], timeout: float = 120) -> None:
    wait_until(
        lambda: voters - stored_voters(),
        lambda missing: not missing,
        timeout=timeout,
        interval=2,
        what=f"{len(voters)} accepted voters stored in PostgreSQL",
    )
