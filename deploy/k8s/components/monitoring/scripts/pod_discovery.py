"""Prometheus' pod discovery, for a Prometheus built without Kubernetes discovery.

    python pod_discovery.py --listen=0.0.0.0:8000

Debian's prometheus package (the stand-in image, deploy/airgap/prometheus) is built
without `kubernetes_sd_configs`: Debian does not package the Kubernetes client library it
needs. This sidecar does that one job instead. On every GET /targets it lists the pods of
its own namespace through the Kubernetes API, with the pod's ServiceAccount token (the
Role allows get/list/watch on pods, and nothing else), and
answers in the format of Prometheus' HTTP service discovery: one target group per
container port, labelled with the same `__meta_kubernetes_pod_*` names that
`kubernetes_sd_configs` (role: pod) sets. So prometheus.yml's relabelling is the one a
Prometheus with Kubernetes discovery would use, and with the official image this sidecar
goes and `http_sd_configs` becomes `kubernetes_sd_configs` (README.md shows both).
https://prometheus.io/docs/prometheus/latest/http_sd/

Standard library only: it runs on the worker image's Python, like the stats adapter.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API = "https://kubernetes.default.svc"
META = "__meta_kubernetes_"


def label_name(key: str) -> str:
    """A label or annotation key as Prometheus' Kubernetes discovery spells it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def target_groups(pods: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The PodList as HTTP discovery target groups: one per declared container port of
    every pod that has an IP, as kubernetes_sd_configs' role pod makes them."""
    groups = []
    for pod in pods.get("items", []):
        metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
        ip = status.get("podIP")
        if not ip:
            continue
        common = {
            f"{META}namespace": metadata["namespace"],
            f"{META}pod_name": metadata["name"],
            f"{META}pod_ip": ip,
            f"{META}pod_phase": status.get("phase", ""),
            f"{META}pod_node_name": spec.get("nodeName", ""),
        }
        for key, value in metadata.get("labels", {}).items():
            common[f"{META}pod_label_{label_name(key)}"] = value
        for key, value in metadata.get("annotations", {}).items():
            common[f"{META}pod_annotation_{label_name(key)}"] = value
        containers = [(c, "false") for c in spec.get("containers", [])]
        containers += [(c, "true") for c in spec.get("initContainers", [])]
        for container, init in containers:
            for port in container.get("ports", []):
                groups.append(
                    {
                        "targets": [f"{ip}:{port['containerPort']}"],
                        "labels": {
                            **common,
                            f"{META}pod_container_name": container["name"],
                            f"{META}pod_container_init": init,
                            f"{META}pod_container_port_name": port.get("name", ""),
                            f"{META}pod_container_port_number": str(port["containerPort"]),
                        },
                    }
                )
    return groups


def list_pods(api: str, account: Path) -> Mapping[str, Any]:
    """GET the namespace's pods. The token is read on every call: the kubelet rotates it."""
    namespace = (account / "namespace").read_text().strip()
    token = (account / "token").read_text().strip()
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    request = urllib.request.Request(  # noqa: S310 - the API server's https URL
        f"{api}/api/v1/namespaces/{namespace}/pods",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
        answer: Mapping[str, Any] = json.load(response)
        return answer


def handler(api: str, account: Path) -> type[BaseHTTPRequestHandler]:
    class Discovery(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            if self.path == "/healthz":
                self._answer(200, b"ok\n", "text/plain")
                return
            if self.path != "/targets":
                self._answer(404, b"not found\n", "text/plain")
                return
            try:
                body = json.dumps(target_groups(list_pods(api, account))).encode()
            except Exception as error:  # noqa: BLE001 - Prometheus keeps its last list on an error
                self._answer(502, f"{type(error).__name__}: {error}\n".encode(), "text/plain")
                return
            self._answer(200, body, "application/json")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line every refresh would drown the pod's log

    return Discovery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:8000")
    parser.add_argument("--api", default=API)
    parser.add_argument("--account", type=Path, default=ACCOUNT)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    ThreadingHTTPServer((host, int(port)), handler(args.api, args.account)).serve_forever()


if __name__ == "__main__":
    main()
