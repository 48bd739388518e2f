"""Rendering deploy/k8s with kustomize and deploy/helm with Helm, and walking the result.

Everything a person may apply is a render target: each overlay, each scenario, the
optional components that no overlay uses yet (rendered on top of an overlay from a
throwaway kustomization under .cache/), and the Helm chart with each of its values files.
Rendering shells out to the kustomize and helm binaries that scripts/k8s-tools builds
(kustomize is the one kubectl 1.34 embeds).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
CHART = REPO / "deploy" / "helm" / "cloudvote"
KUBERNETES_VERSION = "1.34.0"

Doc = dict[str, Any]

# Components that no committed overlay includes, rendered on top of this overlay.
EXTRA_COMPONENTS = {"worker-queue-hpa": "test"}

# Pod: the chart's `helm test` pod, a bare Pod checked like every other pod.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def tool_binary(name: str) -> Path:
    """A binary scripts/k8s-tools builds: the path in $NAME (scripts/k8s-check exports
    KUSTOMIZE, HELM and PROMTOOL), else .cache/bin/name."""
    configured = os.environ.get(name.upper())
    return Path(configured) if configured else REPO / ".cache" / "bin" / name


def built_tool(name: str) -> Path:
    """tool_binary(name), or a test failure that says how to build it (never a skip)."""
    binary = tool_binary(name)
    if not binary.is_file():
        pytest.fail(f"no {name} at {binary}; run scripts/k8s-tools path {name}", pytrace=False)
    return binary


@dataclass(frozen=True)
class HelmRelease:
    """The chart rendered as `helm template` renders it for one release: a release name
    and namespace (one cloudvote release per namespace) and a values file."""

    release: str
    namespace: str
    values: Path

    def command(self, *extra: str) -> list[str]:
        return [
            str(tool_binary("helm")),
            "template",
            self.release,
            str(CHART),
            "--namespace",
            self.namespace,
            "--values",
            str(self.values),
            "--kube-version",
            KUBERNETES_VERSION,
            *extra,
        ]


# The chart's render targets. cloudvote-prod: the overlay's instance label and namespace.
HELM_TARGETS = {
    "helm/cloudvote": HelmRelease("cloudvote", "cloudvote", CHART / "values.yaml"),
    "helm/cloudvote-prod": HelmRelease(
        "cloudvote-prod", "cloudvote-prod", CHART / "values-prod.yaml"
    ),
}


# Every target that deploys the whole app into a namespace of its own: the overlays (not
# multi-node, which spreads the same app over nodes) and the chart with each values file.
APP_TARGETS = (
    "overlays/dev",
    "overlays/test",
    "overlays/prod",
    "overlays/local-cluster",
    "overlays/local-observed",
    *HELM_TARGETS,
)


def overlay_names() -> list[str]:
    return sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))


def scenario_names() -> list[str]:
    return sorted(
        p.parent.name
        for p in (K8S / "scenarios").glob("*/kustomization.yaml")
        if not p.parent.name.startswith("_")
    )


def render_targets() -> dict[str, Path | HelmRelease]:
    """Name -> kustomization directory or Helm release, for everything that can be applied."""
    targets: dict[str, Path | HelmRelease] = {
        f"overlays/{name}": K8S / "overlays" / name for name in overlay_names()
    }
    targets.update({f"scenarios/{name}": K8S / "scenarios" / name for name in scenario_names()})
    for component, overlay in EXTRA_COMPONENTS.items():
        targets[f"components/{component}"] = _component_wrapper(component, overlay)
    targets.update(HELM_TARGETS)
    return targets


def target_namespace(target: str, docs: list[Doc]) -> str:
    """The namespace a target deploys into: the overlay's Namespace object, or the Helm
    release's namespace (the chart leaves creating it to `helm install --create-namespace`)."""
    if target in HELM_TARGETS:
        return HELM_TARGETS[target].namespace
    namespaces = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace"]
    assert len(namespaces) == 1, f"{target}: expected one Namespace, found {namespaces}"
    return str(namespaces[0])


def _component_wrapper(component: str, overlay: str) -> Path:
    # kustomize refuses absolute paths for bases, so the wrapper lives inside the repo
    # (in the git-ignored .cache/) and points at both with relative paths.
    directory = REPO / ".cache" / "k8s-render" / f"{component}-on-{overlay}"
    directory.mkdir(parents=True, exist_ok=True)
    up = os.path.relpath(K8S, directory)
    (directory / "kustomization.yaml").write_text(
        "# Written by tests/manifests/k8s.py: renders an optional component on an overlay.\n"
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {up}/overlays/{overlay}\n"
        f"components:\n  - {up}/components/{component}\n",
        encoding="utf-8",
    )
    return directory


class RenderError(RuntimeError):
    pass


def helm_template(release: HelmRelease, *extra: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart, as it ran: the tests read stdout, stderr and the code."""
    return subprocess.run(
        release.command(*extra), capture_output=True, text=True, check=False, timeout=120
    )


def parse(text: str) -> list[Doc]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def render(target: Path | HelmRelease) -> list[Doc]:
    if isinstance(target, HelmRelease):
        result = helm_template(target)
        if result.returncode != 0:
            raise RenderError(f"helm template {target.release} failed:\n{result.stderr}")
        return parse(result.stdout)
    result = subprocess.run(
        [str(tool_binary("kustomize")), "build", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RenderError(f"kustomize build {target} failed:\n{result.stderr}")
    return parse(result.stdout)


@dataclass
class Container:
    """One container of a pod template, with where it sits."""

    workload: Doc
    pod: Doc
    spec: Doc
    kind: str  # "container", "init" or "sidecar" (an init container with restartPolicy Always)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def where(self) -> str:
        return (
            f"{self.workload['kind']}/{self.workload['metadata']['name']} {self.kind} {self.name}"
        )

    @property
    def long_running(self) -> bool:
        """Serves for the pod's life: not an init step, not part of a run-to-completion pod
        (a Job's, a CronJob's, or a bare Pod that is never restarted, like a `helm test`)."""
        if self.kind == "init" or self.workload["kind"] in ("Job", "CronJob"):
            return False
        return not (
            self.workload["kind"] == "Pod"
            and self.pod.get("restartPolicy") in ("Never", "OnFailure")
        )


@dataclass
class Workload:
    doc: Doc
    template: Doc
    containers: list[Container] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])

    @property
    def pod_spec(self) -> Doc:
        return dict(self.template["spec"])

    @property
    def pod_labels(self) -> dict[str, str]:
        return dict(self.template.get("metadata", {}).get("labels", {}))


def pod_template(doc: Doc) -> Doc | None:
    if doc["kind"] == "Pod":
        return {"metadata": doc["metadata"], "spec": doc["spec"]}
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"])
    if doc["kind"] in WORKLOAD_KINDS:
        return dict(doc["spec"]["template"])
    return None


def workloads(docs: list[Doc]) -> Iterator[Workload]:
    for doc in docs:
        template = pod_template(doc)
        if template is None:
            continue
        workload = Workload(doc, template)
        spec = template["spec"]
        for init in spec.get("initContainers", []):
            kind = "sidecar" if init.get("restartPolicy") == "Always" else "init"
            workload.containers.append(Container(doc, spec, init, kind))
        for container in spec["containers"]:
            workload.containers.append(Container(doc, spec, container, "container"))
        yield workload


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"{kind}/{name} is not in the rendered output")


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "m": 10**-3,
}


def quantity(value: object) -> float:
    """A Kubernetes quantity ("250m", "1Gi", 2) as a number of cores or bytes."""
    text = str(value)
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _UNITS[suffix]
    return float(text)
