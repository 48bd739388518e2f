"""The Helm chart (deploy/helm/cloudvote) deploys what the kustomize overlays deploy.

The parity test renders the chart with values-prod.yaml and overlays/prod and compares
every object field by field. The two may differ only where DIFFERENCES says so, each with
its reason, and each listed difference must still be there: a change made to one side and
not the other fails here, and so does a difference that went away without its entry.

The rest checks what only the chart has: the values schema's refusals, digest pinning,
the credentials Secret, the checksum that rolls pods, the `helm test` hook, the optional
Gateway API route, and the config files it shares with the kustomize base by symlink.
The generic rules (schemas, security, probes, flows, quotas) run on the chart's renders
in the other modules: helm/cloudvote and helm/cloudvote-prod are render targets there.
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.k8s import (
    CHART,
    HELM_TARGETS,
    K8S,
    REPO,
    Doc,
    HelmRelease,
    by_kind,
    find,
    helm_template,
    parse,
    pod_template,
    tool_binary,
    workloads,
)

OVERLAY = "overlays/prod"
CHART_PROD = "helm/cloudvote-prod"
DEFAULTS = HELM_TARGETS["helm/cloudvote"]
DIGEST = "sha256:" + "0123456789abcdef" * 4
# kustomize's generated names end in a 10-character content hash.
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")

Key = tuple[str, str]  # kind, name


def key(doc: Doc) -> Key:
    return str(doc["kind"]), HASH_SUFFIX.sub("", str(doc["metadata"]["name"]))


def chart(*extra: str, release: HelmRelease = DEFAULTS) -> list[Doc]:
    result = helm_template(release, *extra)
    assert result.returncode == 0, result.stderr
    return parse(result.stdout)


def refused(*extra: str) -> str:
    """helm template's error output for values it must refuse."""
    result = helm_template(DEFAULTS, *extra)
    assert result.returncode != 0, f"helm template accepted {extra}"
    return result.stderr


# -- parity with overlays/prod ---------------------------------------------------------

# Objects that only one side renders, and why.
ONLY_IN_OVERLAY: dict[Key, str] = {
    ("Namespace", "cloudvote-prod"): (
        "Helm keeps its release record in the release's namespace and cannot own it: the "
        "namespace comes from `helm install --create-namespace` (or the platform team), "
        "and README.md labels it for the restricted Pod Security Standard"
    ),
    ("Secret", "cloudvote-credentials"): (
        "values-prod.yaml sets credentials.existingSecret: the operator creates the Secret "
        "from the same secrets.env that the overlay's secretGenerator reads (same name, "
        "same keys), so no password passes through Helm's release record"
    ),
}
ONLY_IN_CHART: dict[Key, str] = {
    ("Pod", "cloudvote-test"): (
        "the `helm test` hook: a vote through the gateway, read back from the results "
        "API; kustomize has no test hook (tests/kubernetes does the same from outside)"
    ),
    ("NetworkPolicy", "cloudvote-test"): (
        "the test pod's own egress to the gateway, a test hook too: under default deny "
        "it could reach nothing otherwise"
    ),
}

Fix = Callable[[list[Doc], list[Doc]], int]


def _metadata(doc: Any) -> Iterator[dict[str, Any]]:
    """Every metadata block inside an object: its own, its pod templates', its claim
    templates'."""
    if isinstance(doc, dict):
        for name, value in doc.items():
            if name == "metadata" and isinstance(value, dict):
                yield value
            yield from _metadata(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _metadata(item)


def _strip_hash_suffixes(overlay: list[Doc], _: list[Doc]) -> int:
    generated = {
        doc["metadata"]["name"]: key(doc)[1]
        for doc in overlay
        if doc["kind"] in ("ConfigMap", "Secret") and HASH_SUFFIX.search(doc["metadata"]["name"])
    }
    count = 0

    def walk(node: Any) -> Any:
        nonlocal count
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and node in generated:
            count += 1
            return generated[node]
        return node

    overlay[:] = [walk(doc) for doc in overlay]
    return count


def _managed_by(overlay: list[Doc], chart_docs: list[Doc]) -> int:
    count = 0
    for docs, tool in ((overlay, "kustomize"), (chart_docs, "Helm")):
        for metadata in (m for doc in docs for m in _metadata(doc)):
            labels = metadata.get("labels", {})
            if "app.kubernetes.io/managed-by" in labels:
                assert labels.pop("app.kubernetes.io/managed-by") == tool
                count += 1
    return count


def _chart_version_label(_: list[Doc], chart_docs: list[Doc]) -> int:
    count = 0
    for doc in chart_docs:
        labels = doc["metadata"].get("labels", {})
        if "helm.sh/chart" in labels:
            assert labels.pop("helm.sh/chart").startswith("cloudvote-")
            count += 1
    return count


def _pop_annotation(metadata: dict[str, Any], name: str) -> str:
    value = str(metadata["annotations"].pop(name))
    if not metadata["annotations"]:
        del metadata["annotations"]
    return value


def _config_checksums(_: list[Doc], chart_docs: list[Doc]) -> int:
    count = 0
    for doc in chart_docs:
        template = pod_template(doc)
        if template and "checksum/config" in template["metadata"].get("annotations", {}):
            assert re.fullmatch(
                r"[0-9a-f]{64}", _pop_annotation(template["metadata"], "checksum/config")
            )
            count += 1
    return count


def _migration_hook(_: list[Doc], chart_docs: list[Doc]) -> int:
    job = find(chart_docs, "Job", "migrate")["metadata"]
    assert _pop_annotation(job, "helm.sh/hook") == "post-install,pre-upgrade"
    assert _pop_annotation(job, "helm.sh/hook-delete-policy") == "before-hook-creation"
    return 1


def _claim_template_name_labels(_: list[Doc], chart_docs: list[Doc]) -> int:
    count = 0
    for statefulset in by_kind(chart_docs, "StatefulSet"):
        for claim in statefulset["spec"]["volumeClaimTemplates"]:
            name = claim["metadata"]["labels"].pop("app.kubernetes.io/name")
            assert name == statefulset["metadata"]["name"]
            count += 1
    return count


@dataclass(frozen=True)
class Difference:
    why: str
    fix: Fix  # makes both sides alike in this one respect; returns how often it applied


# Where the chart must differ from overlays/prod, and why. Each fix applies to copies.
DIFFERENCES = {
    "hash suffix": Difference(
        "kustomize names generated ConfigMaps and Secrets with a content hash and rewrites "
        "each reference; the chart keeps fixed names (and rolls pods by checksum/config)",
        _strip_hash_suffixes,
    ),
    "managed-by": Difference(
        "app.kubernetes.io/managed-by says which tool applied the object: kustomize, Helm",
        _managed_by,
    ),
    "helm.sh/chart": Difference(
        "Helm's convention: the chart and version that made an object, on its metadata "
        "only (never on pod or claim templates, where it would restart pods or break "
        "upgrades on every chart release)",
        _chart_version_label,
    ),
    "checksum/config": Difference(
        "fixed ConfigMap names need a content hash on the pod template, or a changed "
        "nginx.conf or polls.yaml would not roll the pods that read it at start",
        _config_checksums,
    ),
    "migration hook": Difference(
        "the migrate Job is a post-install,pre-upgrade hook: a Job's template is immutable, "
        "so a plain Job would fail every upgrade that changes the image, and the schema "
        "must be migrated before new app pods start",
        _migration_hook,
    ),
    "claim template name label": Difference(
        "overlays/prod/storage.yaml's patch replaces the volumeClaimTemplates list (it has "
        "no merge key) and so drops base's app.kubernetes.io/name label on the claims; the "
        "chart keeps base's label",
        _claim_template_name_labels,
    ),
}


def _mismatches(left: Any, right: Any, path: str) -> Iterator[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        for name in sorted(set(left) | set(right)):
            where = f"{path}.{name}"
            if name not in right:
                yield f"{where}: only in the overlay: {json.dumps(left[name])[:200]}"
            elif name not in left:
                yield f"{where}: only in the chart: {json.dumps(right[name])[:200]}"
            else:
                yield from _mismatches(left[name], right[name], where)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            yield from _mismatches(a, b, f"{path}[{index}]")
    elif left != right:
        yield f"{path}: overlay {json.dumps(left)[:200]} != chart {json.dumps(right)[:200]}"


@pytest.fixture(scope="module")
def normalized(
    rendered: dict[str, list[Doc]],
) -> tuple[dict[Key, Doc], dict[Key, Doc], dict[str, int]]:
    """Both prod renders with every listed difference removed, and how often each applied."""
    overlay = copy.deepcopy(rendered[OVERLAY])
    chart_docs = copy.deepcopy(rendered[CHART_PROD])
    applied = {
        name: difference.fix(overlay, chart_docs) for name, difference in DIFFERENCES.items()
    }
    return {key(d): d for d in overlay}, {key(d): d for d in chart_docs}, applied


def test_prod_chart_renders_the_overlays_objects(
    normalized: tuple[dict[Key, Doc], dict[Key, Doc], dict[str, int]],
) -> None:
    overlay, chart_docs, _ = normalized
    assert set(overlay) - set(chart_docs) == set(ONLY_IN_OVERLAY), "objects only in overlays/prod"
    assert set(chart_docs) - set(overlay) == set(ONLY_IN_CHART), "objects only in the chart"


def test_prod_chart_equals_the_overlay_but_for_the_listed_differences(
    normalized: tuple[dict[Key, Doc], dict[Key, Doc], dict[str, int]],
) -> None:
    """Images, probes, resources, security contexts, NetworkPolicies, PDBs, HPAs,
    Services, storage, config file contents: every field of every common object."""
    overlay, chart_docs, _ = normalized
    found = [
        f"{kind}/{name}{mismatch}"
        for kind, name in sorted(set(overlay) & set(chart_docs))
        for mismatch in _mismatches(overlay[kind, name], chart_docs[kind, name], "")
    ]
    assert not found, (
        "the chart and overlays/prod differ (change both, or list the difference with its "
        "reason in DIFFERENCES):\n" + "\n".join(found)
    )


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_each_listed_difference_is_still_real(
    name: str, normalized: tuple[dict[Key, Doc], dict[Key, Doc], dict[str, int]]
) -> None:
    """A listed difference that no longer applies is an outdated excuse: remove it."""
    assert normalized[2][name] > 0, f"{name!r} no longer differs: {DIFFERENCES[name].why}"


def test_prod_chart_and_overlay_grant_the_same_rbac(rendered: dict[str, list[Doc]]) -> None:
    """Least privilege on both sides: no Role or binding, and no pod that mounts a token."""
    rbac = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    accounts = {}
    for target in (OVERLAY, CHART_PROD):
        docs = rendered[target]
        assert [d for d in docs if d["kind"] in rbac] == [], target
        accounts[target] = {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")}
        for account in by_kind(docs, "ServiceAccount"):
            assert account["automountServiceAccountToken"] is False, target
        for workload in workloads(docs):
            assert workload.pod_spec["automountServiceAccountToken"] is False, workload.name
            # Every pod, the `helm test` pod too, runs as one of the release's own accounts.
            account = workload.pod_spec.get("serviceAccountName", "default")
            assert account in accounts[target], workload.name
    assert accounts[OVERLAY] == accounts[CHART_PROD]


# -- the values schema -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("vote.replicas=0", "at '/vote/replicas': minimum: got 0, want 1"),
        ("gateway.replicas=two", "at '/gateway/replicas': got string, want integer"),
        ("images.vote.digest=sha256:abc", "at '/images/vote/digest': 'sha256:abc' does not match"),
        ("images.worker.pullPolicy=always", "at '/images/worker/pullPolicy': value must be one of"),
        ("vote.resources.limits=null", "at '/vote/resources': missing property 'limits'"),
        ("result.resources.requests.cpu=lots", "at '/result/resources/requests/cpu'"),
        ("vote.replica=3", "at '/vote': additional properties 'replica' not allowed"),
        ("gateway.service.type=External", "at '/gateway/service/type': value must be one of"),
        ("credentials.existingSecret=Not_A_Name", "at '/credentials/existingSecret'"),
    ],
)
def test_schema_refuses_a_bad_value_with_a_message_naming_it(value: str, message: str) -> None:
    stderr = refused("--set", value)
    assert "values don't meet the specifications of the schema" in stderr
    assert message in stderr, stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["images.vote.tag=latest"], 'images.vote.tag: "latest" is refused'),
        (["vote.autoscaling.minReplicas=11"], "vote.autoscaling.minReplicas (11) is above"),
        (["keda.enabled=true", "keda.minReplicaCount=20"], "keda.minReplicaCount (20) is above"),
        (["gateway.service.type=LoadBalancer"], "services.loadbalancers"),
    ],
)
def test_chart_refuses_values_that_conflict(values: list[str], message: str) -> None:
    """What a schema cannot say (one value against another) the templates check."""
    args = [arg for value in values for arg in ("--set", value)]
    assert message in refused(*args)


def test_chart_refuses_a_cluster_without_stable_native_sidecars() -> None:
    """The ambassador and the log shipper are native sidecars, stable in Kubernetes 1.33."""
    result = helm_template(DEFAULTS, "--kube-version", "1.32.0")
    assert result.returncode != 0
    assert "chart requires kubeVersion: >=1.33.0-0" in result.stderr


def test_schema_is_draft_7_and_closed_where_typos_hide() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    for name in ("image", "resources", "cpuMemory", "pdb", "webAutoscaling"):
        assert schema["definitions"][name]["additionalProperties"] is False, name


# -- images ----------------------------------------------------------------------------


def _images(docs: list[Doc]) -> dict[str, str]:
    return {c.where: str(c.spec["image"]) for w in workloads(docs) for c in w.containers}


def test_a_digest_pins_the_image_and_wins_over_the_tag() -> None:
    docs = chart("--set", f"images.vote.digest={DIGEST}")
    images = _images(docs)
    assert images["Deployment/vote container vote"] == f"cloudvote-vote@{DIGEST}"
    others = {where: image for where, image in images.items() if "@" in image}
    assert list(others) == ["Deployment/vote container vote"], "only vote was pinned"
    prod = chart("--set", f"images.worker.digest={DIGEST}", release=HELM_TARGETS[CHART_PROD])
    worker_images = {
        image for where, image in _images(prod).items() if where.startswith("Deployment/worker")
    }
    assert (
        f"europe-west1-docker.pkg.dev/cloudvote-prod/cloudvote/cloudvote-worker@{DIGEST}"
        in worker_images
    )


def test_app_images_default_to_the_charts_app_version() -> None:
    app_version = re.search(r'^appVersion: "([^"]+)"', (CHART / "Chart.yaml").read_text(), re.M)
    assert app_version
    images = set(_images(chart()).values())
    for service in ("vote", "worker", "result"):
        assert f"cloudvote-{service}:{app_version.group(1)}" in images


# -- credentials -----------------------------------------------------------------------


def _secret_names(docs: list[Doc]) -> set[str]:
    names = {
        volume["secret"]["secretName"]
        for w in workloads(docs)
        for volume in w.pod_spec.get("volumes", [])
        if "secret" in volume
    }
    for auth in by_kind(docs, "TriggerAuthentication"):
        names.update(ref["name"] for ref in auth["spec"]["secretTargetRef"])
    return names


def test_generated_secret_holds_random_passwords_and_outlives_the_release() -> None:
    docs = chart()
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == "cloudvote-credentials"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"postgres-password", "redis-password"}
    assert _secret_names(docs) == {"cloudvote-credentials"}
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template, "upgrades must keep the first passwords"
    for values in (CHART / "values.yaml", CHART / "values-prod.yaml"):
        assert not list(_password_keys(yaml.safe_load(values.read_text()))), values


def _password_keys(node: Any, path: str = "") -> Iterator[str]:
    """Keys that could hold a password in a values file."""
    if isinstance(node, dict):
        for name, value in node.items():
            if re.search("password|passwd|token", str(name), re.I):
                yield f"{path}.{name}"
            yield from _password_keys(value, f"{path}.{name}")


def test_existing_secret_is_used_and_no_secret_is_rendered() -> None:
    docs = chart(
        "--set", "credentials.existingSecret=team-vault-cloudvote", "--set", "keda.enabled=true"
    )
    assert by_kind(docs, "Secret") == []
    assert _secret_names(docs) == {"team-vault-cloudvote"}
    prod = chart(release=HELM_TARGETS[CHART_PROD])
    assert by_kind(prod, "Secret") == [] and _secret_names(prod) == {"cloudvote-credentials"}


def test_existing_secret_has_the_keys_of_the_overlays_secrets_file() -> None:
    example = (K8S / "overlays" / "prod" / "secrets.env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    items = {
        item["key"]
        for w in workloads(chart())
        for volume in w.pod_spec.get("volumes", [])
        if "secret" in volume
        for item in volume["secret"]["items"]
    }
    assert items == keys


# -- config files: one copy, and pods that roll when it changes ------------------------

BASE_FILES = sorted([*(K8S / "base" / "config").iterdir(), *(K8S / "base" / "scripts").iterdir()])


def test_chart_files_are_symlinks_to_the_kustomize_base() -> None:
    """One copy of each config file: the chart's files/ links to deploy/k8s/base."""
    files = sorted((CHART / "files").iterdir())
    assert [f.name for f in files] == sorted(f.name for f in BASE_FILES)
    for link in files:
        assert link.is_symlink(), f"{link} is a copy; make it a relative symlink"
        assert not Path(link.readlink()).is_absolute(), f"{link}: relative, to work in any clone"
        assert link.resolve() in BASE_FILES, f"{link} -> {link.resolve()}"


def test_helm_package_carries_the_linked_content(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(tool_binary("helm")), "package", str(CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (package,) = tmp_path.glob("cloudvote-*.tgz")
    with tarfile.open(package) as archive:
        for original in BASE_FILES:
            member = archive.extractfile(f"cloudvote/files/{original.name}")
            assert member is not None, original.name
            assert io.BytesIO(member.read()).getvalue() == original.read_bytes(), original.name


def _checksums(docs: list[Doc]) -> dict[str, str]:
    return {
        w.name: w.template["metadata"]["annotations"]["checksum/config"]
        for w in workloads(docs)
        if "checksum/config" in w.template["metadata"].get("annotations", {})
    }


def test_a_config_change_rolls_exactly_the_pods_that_read_it() -> None:
    before = _checksums(chart())
    assert set(before) == {"vote", "result", "worker", "gateway", "redis"}
    polls = "polls:\n  - id: default\n    question: Tea or coffee?\n    options: []\n"
    after = _checksums(chart("--set-string", f"pollsOverride={polls}"))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"vote", "result", "worker"}, "the pods that mount the polls file"


# -- helm test ---------------------------------------------------------------------------


def test_helm_test_votes_through_the_gateway_with_the_apps_real_contract() -> None:
    docs = chart()
    pod = find(docs, "Pod", "cloudvote-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    policy = find(docs, "NetworkPolicy", "cloudvote-test")
    assert int(policy["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0, "policy first"
    (container,) = pod["spec"]["containers"]
    script = container["command"][-1]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GATEWAY_URL"] == "http://gateway.cloudvote.svc.cluster.local:80"
    gateway = find(docs, "Service", "gateway")["spec"]["ports"]
    assert [p["port"] for p in gateway] == [80]
    vote_routes = (REPO / "src/cloudvote/entrypoints/web/vote.py").read_text()
    result_routes = (REPO / "src/cloudvote/entrypoints/web/result.py").read_text()
    assert '@bp.post("/api/polls/<poll_id>/votes")' in vote_routes
    assert '@bp.get("/api/polls/<poll_id>/results")' in result_routes
    assert 'VOTER_COOKIE = "voter_id"' in vote_routes
    assert '/api/polls/default/votes"' in script and '/api/polls/default/results"' in script
    assert '"Cookie": f"voter_id={secrets.token_hex(16)}"' in script
    assert '{"option": "a"}' in script
    assert pod["spec"]["securityContext"]["runAsUser"] >= 10000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_chart_without_tests_or_policies_renders_neither() -> None:
    docs = chart("--set", "tests.enabled=false")
    assert ("Pod", "cloudvote-test") not in {key(d) for d in docs}
    assert by_kind(chart("--set", "networkPolicy.enabled=false"), "NetworkPolicy") == []


# -- optional entry points and components ----------------------------------------------


def test_gateway_api_route_splits_like_the_ingress() -> None:
    docs = chart("--set", "gatewayAPI.enabled=true")
    (route,) = by_kind(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    backends = {
        rule["matches"][0]["path"]["value"]: rule["backendRefs"][0]
        for rule in route["spec"]["rules"]
    }
    ports = {
        name: find(docs, "Service", name)["spec"]["ports"][0]["port"]
        for name in ("result", "gateway")
    }
    assert backends == {
        "/results": {"name": "result", "port": ports["result"]},
        "/": {"name": "gateway", "port": ports["gateway"]},
    }
    assert find(docs, "NetworkPolicy", "result-from-ingress-controller")


def test_defaults_leave_cluster_wide_and_optional_objects_off() -> None:
    """One release per namespace must not collide with another's cluster-wide objects."""
    kinds = {d["kind"] for d in chart()}
    assert not kinds & {"StorageClass", "Ingress", "HTTPRoute", "ScaledObject"}
    (volume,) = by_kind(chart(), "PersistentVolume")
    assert volume["metadata"]["name"] == "cloudvote-gateway-logs"  # <namespace>-gateway-logs
    assert find(chart(), "Service", "gateway")["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("values", ["values.yaml", "values-prod.yaml"])
def test_helm_lint_strict_passes(values: str) -> None:
    result = subprocess.run(
        [str(tool_binary("helm")), "lint", "--strict", str(CHART), "--values", str(CHART / values)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class _FakeApp(BaseHTTPRequestHandler):
    """The gateway's two routes as the test pod sees them: results (503 at first, as while
    the app starts) and votes, which count only a well-formed JSON vote with a voter id."""

    total = 7
    results_calls = 0

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _json(self, status: int, body: dict[str, object]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def do_GET(self) -> None:
        type(self).results_calls += 1
        if self.path != "/api/polls/default/results" or self.results_calls == 1:
            self._json(503, {"error": "starting"})
        else:
            self._json(200, {"poll": "default", "counts": {}, "total": self.total})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        voter = self.headers.get("Cookie", "").removeprefix("voter_id=")
        if (
            self.path == "/api/polls/default/votes"
            and self.headers["Content-Type"] == "application/json"
            and body == {"option": "a"}
            and re.fullmatch(r"[0-9a-f]{32}", voter)
        ):
            type(self).total += 1
            self._json(202, {"poll": "default", "option": "a", "status": "accepted"})
        else:
            self._json(400, {"error": "bad vote"})


def test_helm_test_script_casts_a_vote_and_waits_until_it_is_counted() -> None:
    """The pod's program, run here against a stand-in of the gateway on loopback."""
    pod = find(chart(), "Pod", "cloudvote-test")
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    server = HTTPServer(("127.0.0.1", 0), _FakeApp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", command[2]],
            env={"GATEWAY_URL": f"http://127.0.0.1:{server.server_port}"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "counted: total 7 -> 8" in result.stdout
