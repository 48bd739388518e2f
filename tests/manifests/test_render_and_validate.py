"""Every overlay, scenario and optional component renders, and so does the Helm chart with
each of its values files; every object they render validates strictly, offline, against
the Kubernetes 1.34 OpenAPI schemas (unknown fields are errors, as with
`kubectl apply --validate=strict`)."""

from __future__ import annotations

import functools

import jsonschema
import pytest

from tests.manifests.crd_schemas import SCHEMAS
from tests.manifests.k8s import KUBERNETES_VERSION, Doc, find, render_targets, target_namespace

try:
    from kubernetes_validate import utils as kubernetes_validate
except ImportError:  # pragma: no cover - a clear failure instead of a collection error
    kubernetes_validate = None
else:
    # kubernetes-validate reads and parses the schema files (the definitions are several
    # MB) for every object; they never change during a run, so read each one once.
    kubernetes_validate.schema_contents = functools.lru_cache(maxsize=None)(
        kubernetes_validate.schema_contents
    )

TARGETS = sorted(render_targets())


def _validator() -> object:
    if kubernetes_validate is None:
        pytest.fail(
            "the kubernetes-validate package is missing from the venv; it belongs in the dev "
            "dependency group (kubernetes-validate==1.37.0)",
            pytrace=False,
        )
    return kubernetes_validate


def test_every_target_is_found() -> None:
    names = set(TARGETS)
    for expected in (
        "overlays/dev",
        "overlays/test",
        "overlays/prod",
        "overlays/local-cluster",
        "overlays/local-observed",
        "components/worker-queue-hpa",
        "helm/cloudvote",
        "helm/cloudvote-prod",
    ):
        assert expected in names
    assert sum(name.startswith("scenarios/") for name in names) >= 11


@pytest.mark.parametrize("target", TARGETS)
def test_target_renders_and_validates_against_kubernetes_1_34(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    validator = _validator()
    docs = rendered[target]
    assert docs, f"{target} rendered nothing"
    failures = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        custom = SCHEMAS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
        try:
            if custom is not None:
                jsonschema.validate(doc, custom)
            else:
                validator.validate(doc, KUBERNETES_VERSION, strict=True)  # type: ignore[attr-defined]
        except jsonschema.ValidationError as error:
            path = "/".join(str(part) for part in error.absolute_path)
            failures.append(f"{what}: {path}: {error.message}")
        except validator.SchemaNotFoundError as error:  # type: ignore[attr-defined]
            failures.append(f"{what}: no schema ({error.message}); a beta or unknown API?")
    assert not failures, "\n".join(failures)


def test_keda_passes_a_valid_autoscaling_v2_behavior(rendered: dict[str, list[Doc]]) -> None:
    validator = _validator()
    scaled = find(rendered["overlays/prod"], "ScaledObject", "worker")
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-worker"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "maxReplicas": scaled["spec"]["maxReplicaCount"],
            "behavior": behavior,
        },
    }
    validator.validate(hpa, KUBERNETES_VERSION, strict=True)  # type: ignore[attr-defined]


def test_keda_reads_redis_in_its_own_namespace(rendered: dict[str, list[Doc]]) -> None:
    """KEDA's operator runs in namespace keda, so the trigger names Redis by its full name;
    every render with a ScaledObject must put its own namespace there."""
    checked = 0
    for target, docs in rendered.items():
        for doc in docs:
            if doc["kind"] != "ScaledObject":
                continue
            namespace = doc["metadata"]["namespace"]
            address = doc["spec"]["triggers"][0]["metadata"]["address"]
            assert address == f"redis.{namespace}.svc.cluster.local:6379", target
            checked += 1
    assert checked, "no ScaledObject rendered"


def test_no_beta_or_alpha_api_versions(rendered: dict[str, list[Doc]]) -> None:
    """Outdated APIs are a STYLE.md "avoid": every built-in object uses a GA version."""
    for target, docs in rendered.items():
        for doc in docs:
            if doc["apiVersion"].startswith("keda.sh/"):
                continue  # KEDA's only API version is v1alpha1
            version = doc["apiVersion"].rsplit("/", 1)[-1]
            assert "alpha" not in version and "beta" not in version, (
                f"{target}: {doc['kind']}/{doc['metadata']['name']} uses {doc['apiVersion']}"
            )


def test_namespaced_objects_land_in_the_overlay_namespace(
    rendered: dict[str, list[Doc]],
) -> None:
    """Each overlay's objects in its Namespace; the chart's in the release's namespace (it
    writes metadata.namespace, so `helm template | kubectl apply -f -` lands there too)."""
    cluster_scoped = {
        "Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
    }  # fmt: skip
    for target, docs in rendered.items():
        if not target.startswith(("overlays/", "helm/")):
            continue
        namespace = target_namespace(target, docs)
        for doc in docs:
            if doc["kind"] in cluster_scoped:
                assert "namespace" not in doc["metadata"]
            else:
                assert doc["metadata"].get("namespace") == namespace, (
                    f"{target}: {doc['kind']}/{doc['metadata']['name']}"
                )
