"""The kustomize sources themselves: idioms, copies that must not drift, secrets hygiene."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.manifests.k8s import K8S, REPO


def kustomizations() -> list[dict[str, object]]:
    return [
        {"path": path, **yaml.safe_load(path.read_text())}
        for path in sorted(K8S.rglob("kustomization.yaml"))
    ]


def test_labels_not_the_deprecated_common_labels() -> None:
    for kustomization in kustomizations():
        assert "commonLabels" not in kustomization, kustomization["path"]
        assert "bases" not in kustomization, kustomization["path"]
        assert "patchesStrategicMerge" not in kustomization, kustomization["path"]
        assert "patchesJson6902" not in kustomization, kustomization["path"]


def test_every_directory_a_person_applies_has_a_readme() -> None:
    for kustomization in kustomizations():
        directory = kustomization["path"].parent  # type: ignore[attr-defined]
        if directory.name.startswith("_") or directory.name == "base":
            continue
        assert (directory / "README.md").is_file(), directory


def test_copies_of_compose_files_are_identical() -> None:
    """kustomize reads nothing outside deploy/k8s, so these two are copies."""
    pairs = {
        "config/polls.example.yaml": "deploy/k8s/base/config/polls.yaml",
        "deploy/redis/redis-start.sh": "deploy/k8s/base/config/redis-start.sh",
        "deploy/otel-collector/config.yaml": (
            "deploy/k8s/components/tracing/config/collector.yaml"
        ),
    }
    for original, copy in pairs.items():
        assert (REPO / original).read_bytes() == (REPO / copy).read_bytes(), copy


def _routes(path: str) -> list[tuple[str, str]]:
    """(location, upstream or return) pairs of the server block, in order."""
    text = (REPO / path).read_text()
    routes = []
    for match in re.finditer(r"^\s+location ([^{\n]+)\{([^}]*)\}", text, re.M):
        body = match.group(2)
        action = re.search(r"(proxy_pass \S+|return \d+)", body)
        routes.append((match.group(1).strip(), action.group(1) if action else ""))
    return routes


def test_kubernetes_gateway_routes_the_same_paths_as_compose() -> None:
    compose = _routes("deploy/gateway/nginx.conf")
    kubernetes = _routes("deploy/k8s/base/config/nginx.conf")
    assert len(compose) >= 6
    assert kubernetes == compose


def test_gateway_logs_to_minute_files_for_the_sidecar() -> None:
    conf = (REPO / "deploy/k8s/base/config/nginx.conf").read_text()
    assert "access_log /var/log/gateway/access-$log_minute.log json;" in conf
    assert "access_log /dev/stdout json" in conf
    assert "worker_shutdown_timeout" in conf


def test_secret_files_are_ignored_and_examples_are_committed() -> None:
    for overlay in sorted((K8S / "overlays").iterdir()):
        if "secretGenerator" not in (overlay / "kustomization.yaml").read_text():
            continue  # it reuses the secrets of the overlay it builds on
        example = overlay / "secrets.env.example"
        assert example.is_file(), overlay
        keys = [
            line.split("=", 1)[0]
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        ]
        assert keys == ["postgres-password", "redis-password"], overlay
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(overlay / "secrets.env")], cwd=REPO, check=False
        )
        assert ignored.returncode == 0, f"{overlay}/secrets.env is not git-ignored"
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", str(overlay / "secrets.env")],
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        assert tracked.returncode != 0, f"{overlay}/secrets.env is committed"


def test_no_plaintext_secret_objects_in_the_sources() -> None:
    """Secrets come only from secretGenerator; no `kind: Secret` with data is committed."""
    for path in K8S.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                raise AssertionError(f"{path} holds a Secret")
