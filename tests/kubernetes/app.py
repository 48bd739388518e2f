"""cloudvote deployed on a cluster, driven the way an operator would: kubectl and HTTP.

Shared by the on-cluster tests (tests/kubernetes), the scenario tests and the cluster
benchmark. Works against the current kubectl context: the local cluster of deploy/cluster,
kind, minikube or a cloud cluster.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.client import Client
from tests.support.kube import (
    TEST_IMAGE,
    Manifest,
    apply,
    client_pod,
    get_json,
    kubectl,
    node_address,
    ready_pods,
    temporary_namespace,
    wait_job_complete,
    wait_rollout,
)
from tests.support.load import SteadyVotes
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
# The app as the tests run it: local-cluster plus Prometheus, the collector and KEDA
# (overlays/local-observed), in namespace cloudvote-local.
LOCAL_OVERLAY = REPO / "deploy/k8s/overlays/local-observed"
# Where deploy/registry/release wrote its overlays, one per kustomize directory it was
# given (overlays-local-cluster, scenarios-baseline, ...): every image from the private
# registry, by digest. scripts/cluster-e2e sets it; unset, the committed overlays are
# deployed with images copied into the nodes (deploy/cluster/load-images).
RELEASE_DIR = os.environ.get("CLOUDVOTE_RELEASE_DIR", "")
# The static PV's directory must exist on the node before its pod mounts it (STO-01);
# 10101 is the uid of the gateway's nginx and log shipper (base/gateway.yaml).
STATIC_VOLUME_OWNER = 10101


def require_release() -> pytest.MarkDecorator:
    """For the tests of the registry itself: they fail without a release, unless
    CLOUDVOTE_NO_REGISTRY=1 says on purpose that this run has none (kind, a cloud)."""
    if RELEASE_DIR or os.environ.get("CLOUDVOTE_NO_REGISTRY") != "1":
        return pytest.mark.usefixtures("release_made")
    return pytest.mark.skip(reason="CLOUDVOTE_NO_REGISTRY=1: no private registry in this run")


def released(directory: Path) -> Path:
    """The release overlay of a kustomize directory under deploy/k8s, when there was a
    release; the directory itself otherwise."""
    if not RELEASE_DIR:
        return directory
    # Named as deploy/registry/release names them: overlays-local-cluster, or the name of
    # a directory outside deploy/k8s.
    k8s = REPO / "deploy/k8s"
    inside = directory.is_relative_to(k8s)
    name = str(directory.relative_to(k8s)).replace("/", "-") if inside else directory.name
    release = Path(RELEASE_DIR) / name
    assert (release / "kustomization.yaml").is_file(), f"{directory} was not released"
    return release


def verify_signatures(directory: Path) -> subprocess.CompletedProcess[str]:
    """The deploy gate: deploy/registry/verify, not checked (some tests expect a refusal)."""
    return subprocess.run(
        [str(REPO / "deploy/registry/verify"), str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def render(overlay: Path) -> list[Manifest]:
    output = kubectl("kustomize", str(overlay), timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def adapt_storage_class(objects: list[Manifest]) -> list[Manifest]:
    """Point the app's StorageClass at a provisioner this cluster runs.

    deploy/k8s names rancher.io/local-path (kind, k3d, deploy/cluster). On a cluster
    without it (minikube, a cloud), the class borrows the default class's provisioner, so
    the claims bind the way that cluster binds claims. An existing class is left alone:
    its provisioner is immutable.
    """
    classes = get_json("storageclasses")["items"]
    provisioners = {c["provisioner"] for c in classes}
    existing = {c["metadata"]["name"] for c in classes}
    default = next(
        (
            c["provisioner"]
            for c in classes
            if c["metadata"]
            .get("annotations", {})
            .get("storageclass.kubernetes.io/is-default-class")
            == "true"
        ),
        None,
    )
    adapted = []
    for obj in objects:
        if obj["kind"] == "StorageClass":
            if obj["metadata"]["name"] in existing:
                continue
            if obj["provisioner"] not in provisioners and default:
                adapted.append({**obj, "provisioner": default, "parameters": {}})
                continue
        adapted.append(obj)
    return adapted


def prepare_static_volumes(objects: list[Manifest]) -> None:
    """Create each hostPath PersistentVolume's directory on every node, as its admin would.

    A hostPath volume is whatever that path holds on the node the pod lands on, so on a
    multi-node cluster every node gets the directory. One root pod per node, pinned there
    by nodeName, in a throwaway namespace with the `privileged` Pod Security level, so
    this works without shell access to the nodes.
    """
    paths = [
        obj["spec"]["hostPath"]["path"]
        for obj in objects
        if obj["kind"] == "PersistentVolume" and "hostPath" in obj["spec"]
    ]
    if not paths:
        return
    parent = str(Path(paths[0]).parents[1])
    script = (
        "import os, sys\n"
        "for path in sys.argv[1:]:\n"
        "    os.makedirs(path, exist_ok=True)\n"
        f"    os.chown(path, {STATIC_VOLUME_OWNER}, {STATIC_VOLUME_OWNER})\n"
    )
    nodes = [node["metadata"]["name"] for node in get_json("nodes")["items"]]
    labels = {"pod-security.kubernetes.io/enforce": "privileged"}
    with temporary_namespace("cv-node-admin", labels=labels) as namespace:
        pods = {f"mkdir-{index}": node for index, node in enumerate(nodes)}
        apply(
            *(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod},
                    "spec": {
                        "nodeName": node,
                        # A control-plane node's NoSchedule taint does not stop a pod that
                        # names its node, but the admin's pod says it means it.
                        "tolerations": [{"operator": "Exists"}],
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "mkdir",
                                "image": TEST_IMAGE,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["python", "-c", script, *paths],
                                "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
                                "volumeMounts": [{"name": "host", "mountPath": parent}],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "host",
                                "hostPath": {"path": parent, "type": "DirectoryOrCreate"},
                            }
                        ],
                    },
                }
                for pod, node in pods.items()
            ),
            namespace=namespace,
        )
        for pod, node in pods.items():
            phase = wait_until(
                lambda pod=pod: get_json("pod", "-n", namespace, pod)["status"]["phase"],
                lambda phase: phase in ("Succeeded", "Failed"),
                timeout=120,
                what=f"the node directory pod on {node}",
            )
            assert phase == "Succeeded", kubectl("logs", "-n", namespace, pod).stdout


def wait_app_ready(namespace: str, timeout: int = 300) -> None:
    """Every Deployment and StatefulSet rolled out, and the migration Job complete."""
    for hpa in get_json("hpa", "-n", namespace)["items"]:
        # The HPA raises a Deployment to its minimum a few seconds after the apply; wait
        # for that, so the rollout checks below see the final replica count.
        target = hpa["spec"]["scaleTargetRef"]["name"]
        wait_until(
            lambda target=target: get_json("deployment", "-n", namespace, target)["spec"].get(
                "replicas", 1
            ),
            lambda replicas, hpa=hpa: replicas >= hpa["spec"].get("minReplicas", 1),
            timeout=120,
            what=f"{target} scaled to its HPA minimum",
        )
    for kind in ("statefulset", "deployment"):
        for workload in get_json(kind, "-n", namespace)["items"]:
            wait_rollout(namespace, f"{kind}/{workload['metadata']['name']}", timeout)
    wait_job_complete(namespace, "migrate", timeout)


def deploy(overlay: Path) -> str:
    """Render, adapt and apply an overlay (its release, when there is one, after the
    signature gate); wait until it serves. Returns its namespace."""
    target = released(overlay)
    if target != overlay:
        gate = verify_signatures(target)
        assert gate.returncode == 0, f"deploy/registry/verify refused {target}:\n{gate.stderr}"
    objects = adapt_storage_class(render(target))
    namespace = next(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
    prepare_static_volumes(objects)
    apply(*objects)
    wait_app_ready(namespace)
    return namespace


def psql(namespace: str, sql: str) -> str:
    """Run one SQL statement in the namespace's postgres-0, unaligned, tuples only."""
    return kubectl(
        "exec",
        "-n",
        namespace,
        "postgres-0",
        "-c",
        "postgres",
        "--",
        "psql",
        "-U",
        "cloudvote",
        "-d",
        "cloudvote",
        "-At",
        "-c",
        sql,
    ).stdout


@dataclass
class Cloudvote:
    """The deployed app: its namespace and the gateway's address from outside the cluster."""

    namespace: str
    host: str
    port: int

    @classmethod
    def find(cls, namespace: str) -> Cloudvote:
        gateway = get_json("service", "-n", namespace, "gateway")
        if gateway["spec"]["type"] == "LoadBalancer":
            ingress = wait_until(
                lambda: get_json("service", "-n", namespace, "gateway")["status"][
                    "loadBalancer"
                ].get("ingress"),
                timeout=60,
                what="the gateway's load balancer address",
            )
            return cls(namespace, ingress[0].get("ip") or ingress[0]["hostname"], 80)
        node_port = int(gateway["spec"]["ports"][0]["nodePort"])
        return cls(namespace, node_address(), node_port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def http(self) -> Client:
        """The gateway from outside, a new connection a request, as a reload is."""
        return Client(self.base_url, keep_alive=False)

    def served_by(self, path: str) -> tuple[int, dict[str, str], str]:
        """GET path: the status, the Cloudvote-* headers naming the instance that
        answered, and the body."""
        answer = self.http.get(path)
        named = {k: v for k, v in answer.headers.items() if k.startswith("Cloudvote-")}
        return answer.status_code, named, answer.text

    def vote(self, option: str, voter: str | None = None, poll: str = "default") -> int:
        return self.http.vote(option, poll, voter).status_code

    def results(self, poll: str = "default") -> dict[str, Any]:
        return self.http.results(poll)

    def total(self, poll: str = "default") -> int:
        return self.http.total(poll)

    def psql(self, sql: str) -> str:
        return psql(self.namespace, sql)

    def stored_voters(self, poll: str = "default") -> set[str]:
        return set(self.psql(f"SELECT voter_id FROM votes WHERE poll_id = '{poll}'").split())

    def wait_total(self, expected: int, poll: str = "default", timeout: float = 120) -> int:
        return self.http.wait_total(expected, poll, timeout)

    def ready_pods(self, component: str) -> list[Manifest]:
        return ready_pods(self.namespace, f"app.kubernetes.io/name={component}")


class GatewayReader:
    """GETs one path through the gateway in a loop, each on a new connection as a reload
    is: counts the non-200 answers, and records the version that served each 200."""

    def __init__(
        self,
        app: Cloudvote,
        path: str = "/api/polls/default/results",
        interval: float = 0.1,
        max_seconds: float = 600,
    ) -> None:
        self.app = app
        self.path = path
        self.interval = interval
        self.ok = 0
        self.failures: list[str] = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(max_seconds,), daemon=True)

    def __enter__(self) -> GatewayReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, named, _ = self.app.served_by(self.path)
                if status == 200:
                    self.ok += 1
                    self.versions.append(named.get("Cloudvote-Version", ""))
                else:
                    self.failures.append(str(status))
            except OSError as error:
                self.failures.append(type(error).__name__)
            self._stop.wait(self.interval)


def assert_no_accepted_vote_lost(app: Cloudvote, load: SteadyVotes) -> None:
    """Every accepted voter is stored, no refused one is, and the tallies match the rows."""
    assert load.accepted, load.summary()
    wait_until(
        lambda: load.accepted - app.stored_voters(),
        lambda missing: not missing,
        timeout=180,
        interval=1,
        what=f"every accepted voter in PostgreSQL ({load.summary()})",
    )
    assert not (load.refused & app.stored_voters()), "a refused vote was stored"
    # Read in one statement (one snapshot, while other votes may still arrive): nothing
    # double-counted by a retried batch.
    agree = app.psql(
        "SELECT (SELECT count(*) FROM votes WHERE poll_id = 'default')"
        " = (SELECT coalesce(sum(count), 0) FROM tallies WHERE poll_id = 'default')"
    )
    assert agree.strip() == "t"


def exec_python(namespace: str, pod: str, container: str, code: str, timeout: float = 60) -> str:
    """Run Python inside a container (the app images have no shell tools worth relying on).

    Returns stdout and stderr together, whatever the exit status: callers assert on it.
    """
    result = kubectl(
        "exec",
        "-n",
        namespace,
        pod,
        "-c",
        container,
        "--",
        "python",
        "-c",
        code,
        timeout=timeout,
        check=False,
    )
    return (result.stdout + result.stderr).strip()


def read_claim(namespace: str, claim: str, code: str, timeout: float = 120) -> str:
    """Run Python in a fresh pod that mounts `claim` read-only at /claim; return its output.

    A separate pod, not an exec into the writer, so the check reads what the volume holds.
    """
    name = f"read-{claim}"[:50]
    pod = client_pod(name, labels={"app.kubernetes.io/name": "claim-reader"})
    pod["spec"]["restartPolicy"] = "Never"
    pod["spec"]["containers"][0]["command"] = ["python", "-c", code]
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "claim", "mountPath": "/claim", "readOnly": True}
    ]
    pod["spec"]["volumes"] = [
        {"name": "claim", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
    ]
    kubectl("delete", "pod", "-n", namespace, name, "--ignore-not-found", "--wait=true")
    apply(pod, namespace=namespace)
    try:
        wait_until(
            lambda: get_json("pod", "-n", namespace, name)["status"]["phase"],
            lambda phase: phase in ("Succeeded", "Failed"),
            timeout=timeout,
            what=f"the pod reading {claim}",
        )
        return kubectl("logs", "-n", namespace, name).stdout
    finally:
        kubectl("delete", "pod", "-n", namespace, name, "--wait=false", check=False)
