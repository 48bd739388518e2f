"""A throwaway copy of the live vote Deployment and Redis, for the cluster benchmark: same
image, probes, limits and config, fresh secrets, one replica each (bench/cluster_bench.py)."""

from __future__ import annotations

import copy
import secrets

from tests.support.kube import Manifest, get_json


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
