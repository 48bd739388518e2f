"""kubectl from the tests: the current context, so any cluster can run the cluster tiers.

The tiers shell out to kubectl instead of using a client library on purpose: the commands
they run are the ones the docs and scenario READMEs show, and a user who sees a test fail
can paste the same command. Every call is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml

from tests.support.waiting import wait_until

KUBECTL = os.environ.get("KUBECTL", "kubectl")
# An image every cluster tier can run: the vote image has Python, and its CMD is replaced.
# Load it into the cluster first (deploy/cluster/load-images, kind load docker-image, ...).
TEST_IMAGE = os.environ.get("CLOUDVOTE_TEST_IMAGE", "cloudvote-vote:0.1.0")

Manifest = dict[str, Any]


def image_repository(image: str) -> str:
    """An image reference without its tag or digest, a registry's port kept:
    "registry.example:5443/team/vote:1.0" -> "registry.example:5443/team/vote"."""
    name = image.split("@", 1)[0]
    host_and_path, _, last = name.rpartition("/")
    return f"{host_and_path}/{last.split(':', 1)[0]}" if host_and_path else last.split(":", 1)[0]


class KubectlError(AssertionError):
    """kubectl exited non-zero; the message carries the command and its stderr."""


def kubectl(
    *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [KUBECTL, *args]
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise KubectlError(
            f"{shlex.join(command)} exited {result.returncode}:\n{result.stderr.strip()}"
        )
    return result


def require_cluster() -> None:
    """Fail, never skip, when no cluster answers in the current kubectl context."""
    result = kubectl("cluster-info", check=False, timeout=30)
    if result.returncode != 0:
        pytest.fail(
            "no cluster answers in the current kubectl context "
            f"(start one with deploy/cluster/up or deploy/kind/up):\n{result.stderr}",
            pytrace=False,
        )


def get_json(*args: str, timeout: float = 60) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json", timeout=timeout).stdout)


def apply(*manifests: Manifest, namespace: str | None = None) -> None:
    text = yaml.safe_dump_all(list(manifests), sort_keys=False)
    extra = ["-n", namespace] if namespace else []
    kubectl("apply", *extra, "-f", "-", stdin=text)


def condition(obj: Manifest, kind: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def restricted_security() -> tuple[Manifest, Manifest]:
    """Pod and container securityContexts that pass the `restricted` Pod Security level."""
    pod = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod, container


# A one-line HTTP server that answers with the pod's name, so a test can tell which
# replica a Service picked.
HOSTNAME_SERVER = (
    "import http.server, socket\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = socket.gethostname().encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *args): pass\n"
    "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n"
)


def hostname_deployment(name: str, replicas: int = 2, cpu_limit: str = "200m") -> Manifest:
    pod_security, container_security = restricted_security()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": pod_security,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "web",
                            "image": TEST_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", HOSTNAME_SERVER],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "tcpSocket": {"port": 8080},
                                "periodSeconds": 1,
                            },
                            "resources": {
                                "requests": {"cpu": "20m", "memory": "32Mi"},
                                "limits": {"cpu": cpu_limit, "memory": "96Mi"},
                            },
                            "securityContext": container_security,
                        }
                    ],
                },
            },
        },
    }


def client_pod(name: str, labels: dict[str, str] | None = None) -> Manifest:
    """A pod that sleeps, for `kubectl exec` probes from inside the cluster network."""
    pod_security, container_security = restricted_security()
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "securityContext": pod_security,
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "client",
                    "image": TEST_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", "import time; time.sleep(3600)"],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "200m", "memory": "96Mi"},
                    },
                    "securityContext": container_security,
                }
            ],
        },
    }


# Python run inside a client pod: fetch a URL, print the body, or print ERROR and why.
FETCH = (
    "import sys, urllib.request\n"
    "try:\n"
    "    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())\n"
    "except Exception as e:\n"
    "    print('ERROR', type(e).__name__, e)\n"
)


def fetch_from_pod(namespace: str, pod: str, url: str, timeout: float = 3) -> str:
    """GET url from inside pod; returns the body, or 'ERROR ...' when it did not connect."""
    result = kubectl(
        "exec",
        "-n",
        namespace,
        pod,
        "--",
        "python",
        "-c",
        FETCH,
        url,
        str(timeout),
        timeout=timeout + 30,
    )
    return result.stdout.strip()


def wait_rollout(namespace: str, kind_name: str, timeout: int = 180) -> None:
    kubectl(
        "rollout",
        "status",
        "-n",
        namespace,
        kind_name,
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


def wait_job_complete(namespace: str, job: str, timeout: int = 180) -> None:
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Complete",
        f"job/{job}",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


def wait_pod_ready(namespace: str, pod: str, timeout: int = 120) -> None:
    kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        f"pod/{pod}",
        f"--timeout={timeout}s",
        timeout=timeout + 30,
    )


def node_address() -> str:
    """The first node's InternalIP: where NodePort and this cluster's LoadBalancers answer."""
    nodes = get_json("nodes")["items"]
    for address in nodes[0]["status"]["addresses"]:
        if address["type"] == "InternalIP":
            return str(address["address"])
    raise AssertionError("the node reports no InternalIP")


@contextmanager
def temporary_namespace(prefix: str, labels: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting: deletion is asynchronous)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    manifest: Manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        manifest["metadata"]["labels"] = labels
    apply(manifest)
    # The ServiceAccount controller must create "default" before pods can be admitted.
    wait_until(
        lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode,
        lambda code: code == 0,
        timeout=30,
        what=f"default ServiceAccount in {name}",
    )
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def ready_pods(namespace: str, selector: str) -> list[Manifest]:
    """Pods that are Ready and not on their way out (a deleted pod stays Ready a moment),
    oldest first: a ReplicaSet scaling down removes the newest ones first."""
    pods = get_json("pods", "-n", namespace, "-l", selector)["items"]
    ready = [
        p
        for p in pods
        if not p["metadata"].get("deletionTimestamp") and condition(p, "Ready") == "True"
    ]
    return sorted(ready, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


def ready_pod_names(namespace: str, selector: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in ready_pods(namespace, selector))


@contextmanager
def port_forward(namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward <target> :<port>` for the block (target: svc/NAME or
    pod/NAME); yields its local base URL. kubectl picks a free loopback port and prints
    it once it listens, so that line is both the port and the sign that it is ready."""
    with subprocess.Popen(
        [KUBECTL, "port-forward", "-n", namespace, target, f":{port}", "--address", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else ""
            # "Forwarding from 127.0.0.1:41234 -> 9090"
            assert line.startswith("Forwarding from 127.0.0.1:"), (
                f"port-forward to {target}: {line!r}"
            )
            local = line.split("127.0.0.1:", 1)[1].split()[0]
            yield f"http://127.0.0.1:{local}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
