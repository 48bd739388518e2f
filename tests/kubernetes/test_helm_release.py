"""The Helm chart on the cluster: pushed to the private registry as an OCI artifact,
installed from there with every image by signed digest, checked with `helm test`, upgraded
under a steady vote load with no vote failed or lost, and rolled back.

The tests run in order, on one release in namespace cloudvote-helm, beside cloudvote-local.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubernetes.app import (
    RELEASE_DIR,
    REPO,
    Cloudvote,
    assert_no_accepted_vote_lost,
    prepare_static_volumes,
    require_release,
    wait_app_ready,
)
from tests.support.kube import get_json, kubectl
from tests.support.load import SteadyVotes

CHART = REPO / "deploy/helm/cloudvote"
NAMESPACE = "cloudvote-helm"
RELEASE = "cloudvote"
REGISTRY = "registry.cloudvote.test:5443"
CHART_REPOSITORY = f"oci://{REGISTRY}/charts"
REGISTRY_HOME = Path(RELEASE_DIR).parent if RELEASE_DIR else Path()
# The chart's image keys -> the names the local-cluster overlay gives those images, which
# key the release's digests.
RELEASED_NAMES = {
    "vote": "cloudvote-vote",
    "worker": "cloudvote-worker",
    "result": "cloudvote-result",
    "redis": "cloudvote-airgap/redis",
    "postgres": "cloudvote-airgap/postgres",
    "nginx": "cloudvote-airgap/nginx",
    "pgbouncer": "cloudvote-airgap/pgbouncer",
    "nodeExporter": "cloudvote-airgap/node-exporter",
}

pytestmark = [
    pytest.mark.slow,
    # An install, an upgrade and a rollback each wait for rollouts (on 2 busy CPUs).
    pytest.mark.timeout(900),
    require_release(),
]


class Helm:
    """The helm CLI with a registry login and CA trust of its own (never the user's)."""

    def __init__(self, home: Path) -> None:
        built = subprocess.run(
            [str(REPO / "scripts/k8s-tools"), "path", "helm"],
            capture_output=True,
            text=True,
            check=True,
        )
        self.binary = built.stdout.strip()
        self.env = {
            **os.environ,
            "HELM_REGISTRY_CONFIG": str(home / "registry.json"),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "SSL_CERT_FILE": str(REGISTRY_HOME / "trust.pem"),
        }

    def __call__(
        self, *args: str, timeout: float = 900, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 900) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result.stdout


def release_values(path: Path) -> Path:
    """Values that install the released digests from the registry on this cluster."""
    release = yaml.safe_load(
        (Path(RELEASE_DIR) / "overlays-local-cluster" / "kustomization.yaml").read_text()
    )
    digests = {i["name"]: (i["newName"], i["digest"]) for i in release["images"]}
    images = {}
    for key, name in RELEASED_NAMES.items():
        repository, digest = digests[name]
        images[key] = {
            "registry": REGISTRY,
            "repository": repository.removeprefix(f"{REGISTRY}/"),
            "digest": digest,
        }
    values: dict[str, Any] = {
        "global": {"imagePullSecrets": [{"name": "registry-credentials"}]},
        "images": images,
        # Reached from outside like cloudvote-local: a node port, which the quota must allow.
        "gateway": {"service": {"type": "NodePort"}},
        "namespaceGuards": {"quota": {"services.nodeports": "1"}},
        "persistence": {
            "gatewayLogs": {
                "persistentVolume": {"hostPath": f"/var/local/cloudvote/{NAMESPACE}/gateway-logs"}
            }
        },
    }
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def helm() -> Iterator[Helm]:
    with tempfile.TemporaryDirectory(prefix="cloudvote-helm-") as home:
        tool = Helm(Path(home))
        password = (REGISTRY_HOME / "password").read_text().strip()
        login = tool(
            "registry",
            "login",
            REGISTRY,
            "--username",
            "cloudvote",
            "--password-stdin",
            stdin=password,
        )
        assert login.returncode == 0, login.stderr
        yield tool


@pytest.fixture(scope="module")
def installed(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloudvote]:
    """The chart, packaged and pushed, then installed from the registry."""
    workdir = tmp_path_factory.mktemp("helm")
    values = release_values(workdir / "values.yaml")
    package = helm.ok("package", str(CHART), "--destination", str(workdir))
    archive = package.strip().rsplit(": ", 1)[-1]
    helm.ok("push", archive, CHART_REPOSITORY)
    chart = f"{CHART_REPOSITORY}/cloudvote"
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    remove_release()  # whatever an earlier, interrupted run left
    # The pull Secret the values name, made the way an operator makes it; and the node
    # directory of the static log volume, as tests/kubernetes/app.py's deploy does.
    kubectl("create", "namespace", NAMESPACE)
    # From the file, never --docker-password: a password on a command line is in every
    # process listing, and in the log if the command fails.
    kubectl(
        "create",
        "secret",
        "generic",
        "registry-credentials",
        "-n",
        NAMESPACE,
        "--type=kubernetes.io/dockerconfigjson",
        f"--from-file=.dockerconfigjson={REGISTRY_HOME / 'registry.json'}",
    )
    rendered = helm.ok(
        "template", RELEASE, chart, "--version", version, "-n", NAMESPACE, "-f", str(values)
    )
    prepare_static_volumes([d for d in yaml.safe_load_all(rendered) if d])
    try:
        helm.ok(
            "install",
            RELEASE,
            chart,
            "--version",
            version,
            "-n",
            NAMESPACE,
            "-f",
            str(values),
            "--timeout",
            "10m",
        )
        wait_app_ready(NAMESPACE)
        yield Cloudvote.find(NAMESPACE)
    finally:
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
        remove_release()


def remove_release() -> None:
    """The namespace (with the Secret and claims the chart keeps on uninstall) and the
    cluster-wide static volume."""
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=240s", timeout=300)
    kubectl("delete", "pv", f"{NAMESPACE}-gateway-logs", "--ignore-not-found", timeout=120)


def history(helm: Helm) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(
        helm.ok("history", RELEASE, "-n", NAMESPACE, "-o", "json")
    )
    return entries


def revisions() -> dict[str, str]:
    """Each Deployment's revision: it grows when its pod template changes."""
    return {
        d["metadata"]["name"]: d["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for d in get_json("deployments", "-n", NAMESPACE)["items"]
    }


def settings_log_level() -> str:
    configmap = get_json("configmap", "-n", NAMESPACE, "cloudvote-settings")
    return str(configmap["data"]["LOG_LEVEL"])


def test_the_release_came_from_the_registry_by_signed_digest(
    helm: Helm, installed: Cloudvote
) -> None:
    shown = yaml.safe_load(helm.ok("show", "chart", f"{CHART_REPOSITORY}/cloudvote"))
    assert shown["name"] == "cloudvote"
    (entry,) = history(helm)
    assert entry["status"] == "deployed" and entry["revision"] == 1
    # Exactly the release's digests, which deploy/registry/verify checked before the
    # cloudvote-local deploy (test_registry.py checks the gate itself).
    release = yaml.safe_load(
        (Path(RELEASE_DIR) / "overlays-local-cluster" / "kustomization.yaml").read_text()
    )
    signed = {f"{i['newName']}@{i['digest']}" for i in release["images"] if "digest" in i}
    for pod in get_json("pods", "-n", NAMESPACE)["items"]:
        for container in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            assert container["image"] in signed, container["image"]


def test_helm_test_casts_a_vote_and_reads_it_back(helm: Helm, installed: Cloudvote) -> None:
    tested = helm("test", RELEASE, "-n", NAMESPACE, "--logs", "--timeout", "5m")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Phase:          Succeeded" in tested.stdout, tested.stdout


def test_upgrade_under_steady_votes_fails_none_and_loses_none(
    helm: Helm, installed: Cloudvote
) -> None:
    before = revisions()
    with SteadyVotes(installed.host, installed.port, per_second=40, max_seconds=600) as load:
        # A settings change: vote, result and worker roll (checksum/config), the migration
        # hook runs first.
        helm.ok(
            "upgrade",
            RELEASE,
            f"{CHART_REPOSITORY}/cloudvote",
            "-n",
            NAMESPACE,
            "--reset-then-reuse-values",
            "--set",
            "settings.logLevel=DEBUG",
            "--timeout",
            "10m",
        )
        # Not `helm upgrade --wait`: it also waits for the snapshot claim, which binds only
        # when the CronJob first runs (WaitForFirstConsumer). The rollouts are what count.
        wait_app_ready(NAMESPACE)
    assert settings_log_level() == "DEBUG"
    after = revisions()
    rolled = {name for name, revision in after.items() if revision != before[name]}
    # The settings' readers rolled, and only they: the gateway's config did not change.
    assert rolled == {"vote", "result", "worker"}, (before, after)
    assert set(load.statuses) == {"202"}, load.summary()
    assert_no_accepted_vote_lost(installed, load)
    assert [e["status"] for e in history(helm)] == ["superseded", "deployed"]


def test_rollback_restores_the_first_revision_and_history_shows_it(
    helm: Helm, installed: Cloudvote
) -> None:
    helm.ok("rollback", RELEASE, "1", "-n", NAMESPACE, "--timeout", "10m")
    wait_app_ready(NAMESPACE)
    assert settings_log_level() == "INFO"
    entries = history(helm)
    assert [e["revision"] for e in entries] == [1, 2, 3]
    assert [e["status"] for e in entries] == ["superseded", "superseded", "deployed"]
    assert entries[-1]["description"] == "Rollback to 1"
    shown = helm.ok("history", RELEASE, "-n", NAMESPACE)
    print(shown)  # the table a user sees, in the test log
    assert installed.http.vote("b").status_code == 202
