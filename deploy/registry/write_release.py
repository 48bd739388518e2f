"""Write the generated release overlay for one kustomize directory (deploy/registry/release).

    write_release.py OVERLAY_DIR OUT_DIR RELEASED_JSON < rendered.yaml

RELEASED_JSON maps each image the overlay renders ("cloudvote-vote:0.1.0") to its name in
the registry and, when it was pushed, its digest. The overlay written to OUT_DIR:
- takes OVERLAY_DIR as its only resource;
- names every image by the registry, by digest when released; an image that was not built
  here keeps its tag, so its pull asks the registry and fails there, as it would anywhere;
- generates the registry's pull Secret in the overlay's namespace, and names it in every
  ServiceAccount, so every pod of the app can pull;
- turns each container's imagePullPolicy Never (overlays/local-cluster, for images copied
  into the node) into IfNotPresent: the kubelet pulls each digest once per node.
It is generated on every release, never edited: the digests come from the registry.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

POD_SPEC_PATHS = {
    "Deployment": "/spec/template/spec",
    "StatefulSet": "/spec/template/spec",
    "DaemonSet": "/spec/template/spec",
    "Job": "/spec/template/spec",
    "CronJob": "/spec/jobTemplate/spec/template/spec",
}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj
    for key in POD_SPEC_PATHS[obj["kind"]].strip("/").split("/"):
        spec = spec[key]
    return spec


def pull_policy_patches(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    patches = []
    for obj in objects:
        if obj.get("kind") not in POD_SPEC_PATHS:
            continue
        spec = pod_spec(obj)
        ops = [
            {
                "op": "replace",
                "path": f"{POD_SPEC_PATHS[obj['kind']]}/{field}/{index}/imagePullPolicy",
                "value": "IfNotPresent",
            }
            for field in ("initContainers", "containers")
            for index, container in enumerate(spec.get(field) or [])
            if container.get("imagePullPolicy") == "Never"
        ]
        if ops:
            target = {"kind": obj["kind"], "name": obj["metadata"]["name"]}
            patches.append({"target": target, "patch": yaml.safe_dump(ops, sort_keys=False)})
    return patches


def main(overlay: str, out_dir: str, released_json: str) -> None:
    objects = [doc for doc in yaml.safe_load_all(sys.stdin) if doc]
    released: dict[str, dict[str, str]] = json.loads(Path(released_json).read_text())
    namespaces = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Namespace"}
    if len(namespaces) != 1:
        sys.exit(f"write_release: {overlay} renders {len(namespaces)} Namespaces, not one")
    images = []
    for image, where in sorted(released.items()):
        entry = {"name": image.rsplit(":", 1)[0], "newName": where["new_name"]}
        if where.get("digest"):
            entry["digest"] = where["digest"]
        images.append(entry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(Path(overlay).resolve(), out.resolve())],
        "images": images,
        "secretGenerator": [
            {
                "name": "registry-credentials",
                "namespace": namespaces.pop(),
                "type": "kubernetes.io/dockerconfigjson",
                "files": [".dockerconfigjson"],
                "options": {
                    "disableNameSuffixHash": True,
                    "labels": {
                        "app.kubernetes.io/name": "registry-credentials",
                        "app.kubernetes.io/component": "credentials",
                    },
                },
            }
        ],
        "patches": [
            {
                "target": {"kind": "ServiceAccount"},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "add",
                            "path": "/imagePullSecrets",
                            "value": [{"name": "registry-credentials"}],
                        }
                    ]
                ),
            },
            *pull_policy_patches(objects),
        ],
    }
    shown = os.path.relpath(overlay, Path(__file__).resolve().parents[2])
    header = (
        f"# Written by deploy/registry/release for {shown}; generated, never edited.\n"
        "# kubectl apply -k on this directory deploys the released digests.\n"
    )
    (out / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False), encoding="utf-8"
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
