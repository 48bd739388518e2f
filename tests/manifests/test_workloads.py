"""What every pod and container must have (issue 4 and STYLE.md), checked on every render
target: security, requests and limits, probes, image tags, labels, selectors, secrets as
files; and the rollout, autoscaling and disruption settings of the web services."""

from __future__ import annotations

import re

import pytest

from tests.manifests.k8s import (
    APP_TARGETS,
    REPO,
    Container,
    Doc,
    Workload,
    by_kind,
    find,
    labels_match,
    quantity,
    render_targets,
    workloads,
)

TARGETS = sorted(render_targets())
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
APP_CONTAINERS = {"vote", "result", "worker"}
# The lowest UID and GID a container may run as (CKV_K8S_40): below it are the node's own
# system and login users.
MIN_ID = 10000
# Faults that a scenario introduces on purpose (see its README.md): exempt from the rule
# they break, and only there.
DELIBERATE_FAULTS = {("scenarios/crashloop-aggressive-liveness", "vote", "startupProbe")}


def all_containers(docs: list[Doc]) -> list[Container]:
    return [c for w in workloads(docs) for c in w.containers]


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_hardened(target: str, rendered: dict[str, list[Doc]]) -> None:
    """runAsNonRoot, seccomp RuntimeDefault, no service-account token, on every pod."""
    for workload in workloads(rendered[target]):
        spec, where = workload.pod_spec, f"{target}: {workload.kind}/{workload.name}"
        security = spec.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, where
        # A numeric user: the kubelet cannot verify runAsNonRoot for a named USER.
        assert isinstance(security.get("runAsUser"), int) and security["runAsUser"] > 0, where
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, f"{where}: hostPath volume {volume['name']}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_hardened(target: str, rendered: dict[str, list[Doc]]) -> None:
    for container in all_containers(rendered[target]):
        security = container.spec.get("securityContext", {})
        where = f"{target}: {container.where}"
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert "add" not in security.get("capabilities", {}), where
        assert security.get("privileged") is not True, where


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_runs_with_a_high_uid_and_gid(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """10000 and up (checkov CKV_K8S_40): a UID that no user on the node has, so a process
    that escapes its container owns nothing there. The container's own setting wins over
    the pod's, as in the kubelet; fsGroup, the group of the pod's volumes, too."""
    for container in all_containers(rendered[target]):
        pod = container.pod.get("securityContext", {})
        own = container.spec.get("securityContext", {})
        where = f"{target}: {container.where}"
        for key in ("runAsUser", "runAsGroup"):
            value = own.get(key, pod.get(key))
            assert isinstance(value, int) and value >= MIN_ID, f"{where}: {key} {value}"
        if "fsGroup" in pod:
            assert pod["fsGroup"] >= MIN_ID, f"{where}: fsGroup {pod['fsGroup']}"


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_has_requests_and_limits(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    for container in all_containers(rendered[target]):
        resources = container.spec.get("resources", {})
        where = f"{target}: {container.where}"
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in resources.get(bound, {}), f"{where}: no {bound}.{resource}"
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert request <= limit, f"{where}: {resource} request above its limit"


@pytest.mark.parametrize("target", TARGETS)
def test_every_long_running_container_has_probes(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """Liveness on every long-running container (sidecars too), readiness on every one
    that serves a port, and all three probes on the app containers. Init steps and Job
    containers have none: their exit code is their health."""
    for container in all_containers(rendered[target]):
        spec, where = container.spec, f"{target}: {container.where}"
        if not container.long_running:
            assert "livenessProbe" not in spec and "readinessProbe" not in spec, where
            continue
        assert "livenessProbe" in spec, f"{where}: no liveness probe"
        if spec.get("ports"):
            assert "readinessProbe" in spec, f"{where}: serves a port but has no readiness probe"
        if container.name in APP_CONTAINERS and container.kind == "container":
            if (target, container.name, "startupProbe") not in DELIBERATE_FAULTS:
                assert "startupProbe" in spec, f"{where}: no startup probe"
            assert "readinessProbe" in spec, f"{where}: no readiness probe"


def test_web_services_probe_healthz_and_readyz(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/local-cluster"]
    for name in ("vote", "result", "worker"):
        (container,) = [
            c.spec for c in all_containers([find(docs, "Deployment", name)]) if c.name == name
        ]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("target", TARGETS)
def test_images_are_pinned_never_latest(target: str, rendered: dict[str, list[Doc]]) -> None:
    for container in all_containers(rendered[target]):
        image = container.spec["image"]
        name, _, tag = image.rpartition(":")
        assert name and tag and "/" not in tag, f"{target}: {container.where}: {image} has no tag"
        assert tag != "latest", f"{target}: {container.where}: {image}"
        # Always only where a scenario needs the registry asked at every start.
        allowed = ("IfNotPresent", "Never", *(["Always"] if "imagepull" in target else []))
        assert container.spec.get("imagePullPolicy") in allowed, container.where


@pytest.mark.parametrize("target", ["overlays/local-cluster", "overlays/local-observed"])
def test_local_cluster_never_pulls(target: str, rendered: dict[str, list[Doc]]) -> None:
    for container in all_containers(rendered[target]):
        assert container.spec["imagePullPolicy"] == "Never", container.where
        image = container.spec["image"]
        assert image.startswith(("cloudvote-", "cloudvote-airgap/")), image


def test_app_images_match_the_compose_tags(rendered: dict[str, list[Doc]]) -> None:
    """`cloudvote-<service>:<package version>`, as compose.yaml tags what it builds."""
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version
    images = {c.spec["image"] for c in all_containers(rendered["overlays/local-cluster"])}
    for service in ("vote", "worker", "result"):
        assert f"cloudvote-{service}:{version.group(1)}" in images


@pytest.mark.parametrize("target", TARGETS)
def test_recommended_labels_everywhere(target: str, rendered: dict[str, list[Doc]]) -> None:
    for doc in rendered[target]:
        labels = doc["metadata"].get("labels", {})
        for key in RECOMMENDED_LABELS:
            assert key in labels, f"{target}: {doc['kind']}/{doc['metadata']['name']} lacks {key}"
    for workload in workloads(rendered[target]):
        for key in (*RECOMMENDED_LABELS, "app.kubernetes.io/instance"):
            assert key in workload.pod_labels, f"{target}: {workload.name}'s pods lack {key}"


@pytest.mark.parametrize("target", TARGETS)
def test_service_selectors_match_pod_labels(target: str, rendered: dict[str, list[Doc]]) -> None:
    """A Service whose selector matches no pod template has no endpoints (K8S-07); a
    targetPort name that no matching container declares sends traffic nowhere."""
    docs = rendered[target]
    templates = list(workloads(docs))
    for service in by_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        matching = [w for w in templates if labels_match({"matchLabels": selector}, w.pod_labels)]
        name = service["metadata"]["name"]
        assert matching, f"{target}: Service {name} selects no pod template"
        assert len({w.name for w in matching}) == 1, f"{target}: Service {name} is ambiguous"
        port_names = {
            port.get("name")
            for w in matching
            for c in w.containers
            for port in c.spec.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target_port = port.get("targetPort", port["port"])
            if isinstance(target_port, str):
                assert target_port in port_names, f"{target}: Service {name} -> {target_port}"


@pytest.mark.parametrize("target", TARGETS)
def test_workload_selectors_match_their_templates(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    for workload in workloads(rendered[target]):
        selector = workload.doc["spec"].get("selector")
        if selector is None:
            continue  # Jobs get a generated selector
        assert labels_match(selector, workload.pod_labels), workload.name
        assert set(selector.get("matchLabels", {})) == {"app.kubernetes.io/name"}, (
            f"{workload.name}: selectors hold only the stable name label"
        )


@pytest.mark.parametrize("target", TARGETS)
def test_pdbs_and_hpas_point_at_real_workloads(target: str, rendered: dict[str, list[Doc]]) -> None:
    docs = rendered[target]
    templates = list(workloads(docs))
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        assert any(labels_match(pdb["spec"]["selector"], w.pod_labels) for w in templates)
        assert "minAvailable" not in pdb["spec"], "maxUnavailable never blocks a drain for ever"
    for scaler in by_kind(docs, "HorizontalPodAutoscaler") + by_kind(docs, "ScaledObject"):
        ref = scaler["spec"]["scaleTargetRef"]
        target_doc = find(docs, ref.get("kind", "Deployment"), ref["name"])
        assert "replicas" not in target_doc["spec"], (
            f"{target}: {ref['name']} sets replicas, which apply would reset under its HPA"
        )


@pytest.mark.parametrize("target", TARGETS)
def test_secrets_are_files_never_env(target: str, rendered: dict[str, list[Doc]]) -> None:
    for container in all_containers(rendered[target]):
        for variable in container.spec.get("env", []):
            assert "secretKeyRef" not in variable.get("valueFrom", {}), container.where
            name = variable["name"]
            if "PASSWORD" in name:
                assert name.endswith("_FILE"), f"{container.where}: {name}"
        for source in container.spec.get("envFrom", []):
            assert "secretRef" not in source, container.where


def test_each_pod_mounts_only_the_secret_keys_it_needs(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["overlays/local-observed"]
    expected = {
        "redis-exporter": {"redis-password"},
        "postgres-exporter": {"postgres-password"},
        "vote": {"redis-password"},
        "result": {"postgres-password"},
        "worker": {"redis-password", "postgres-password"},
        "redis": {"redis-password"},
        "postgres": {"postgres-password"},
        "migrate": {"postgres-password"},
    }
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"].startswith("cloudvote-credentials-"), "hash suffix"
    for workload in workloads(docs):
        volumes = [v for v in workload.pod_spec.get("volumes", []) if "secret" in v]
        keys = {item["key"] for v in volumes for item in v["secret"].get("items", [])}
        assert keys == expected.get(workload.name, set()), workload.name
        for volume in volumes:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            assert volume["secret"]["defaultMode"] == 0o440


def test_polls_file_is_mounted_and_shared_settings_come_from_a_configmap(
    rendered: dict[str, list[Doc]],
) -> None:
    """CFG-01 both ways: the polls file as a mounted file, the shared settings as env."""
    docs = rendered["overlays/dev"]
    polls = next(d for d in docs if d["metadata"]["name"].startswith("cloudvote-polls-"))
    settings = next(d for d in docs if d["metadata"]["name"].startswith("cloudvote-settings-"))
    assert "polls:" in polls["data"]["polls.yaml"]
    assert settings["data"]["CLOUDVOTE_POLLS_FILE"] == "/etc/cloudvote/polls.yaml"
    assert settings["data"]["LOG_LEVEL"] == "DEBUG"  # dev's merge over base's INFO
    for name in ("vote", "result", "worker"):
        pod = find(docs, "Deployment", name)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "settings")
        assert volume["configMap"]["name"] == polls["metadata"]["name"]
        container = next(c for c in pod["containers"] if c["name"] == name)
        assert {"configMapRef": {"name": settings["metadata"]["name"]}} in container["envFrom"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "settings")
        assert mount["mountPath"] == "/etc/cloudvote" and mount["readOnly"] is True


def test_web_rollouts_surge_one_and_never_go_below_capacity(
    rendered: dict[str, list[Doc]],
) -> None:
    for name in ("vote", "result"):
        spec = find(rendered["overlays/local-cluster"], "Deployment", name)["spec"]
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        assert 1 <= spec["revisionHistoryLimit"] <= 10


def test_grace_period_covers_prestop_and_gunicorns_graceful_timeout(
    rendered: dict[str, list[Doc]],
) -> None:
    """preStop sleep + the server's GRACEFUL_TIMEOUT_SECONDS must end before the SIGKILL."""
    source = (REPO / "src/cloudvote/entrypoints/server.py").read_text()
    match = re.search(r"^GRACEFUL_TIMEOUT_SECONDS = (\d+)", source, re.M)
    assert match
    graceful = int(match.group(1))
    for name in ("vote", "result"):
        pod = find(rendered["overlays/local-cluster"], "Deployment", name)["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + graceful < pod["spec"]["terminationGracePeriodSeconds"], name


def test_hpas_scale_web_services_on_cpu_between_2_and_10_with_stabilization(
    rendered: dict[str, list[Doc]],
) -> None:
    for target in ("overlays/test", "overlays/prod", "helm/cloudvote", "helm/cloudvote-prod"):
        for name in ("vote", "result"):
            hpa = find(rendered[target], "HorizontalPodAutoscaler", name)["spec"]
            assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] <= 10
            assert hpa["metrics"][0]["resource"]["name"] == "cpu"
            assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
            assert "stabilizationWindowSeconds" in hpa["behavior"]["scaleUp"]
    base = (REPO / "deploy/k8s/base/vote.yaml").read_text()
    assert "minReplicas: 2" in base and "maxReplicas: 10" in base


def test_flapping_scenario_removes_the_stabilization(rendered: dict[str, list[Doc]]) -> None:
    hpa = find(rendered["scenarios/hpa-flapping"], "HorizontalPodAutoscaler", "vote")["spec"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0


def test_worker_pod_has_init_waits_ambassador_and_adapter(rendered: dict[str, list[Doc]]) -> None:
    worker = find(rendered["overlays/local-cluster"], "Deployment", "worker")
    spec = worker["spec"]["template"]["spec"]
    inits = [c["name"] for c in spec["initContainers"]]
    assert inits == ["wait-for-redis", "wait-for-postgres", "db-ambassador"]
    assert spec["initContainers"][2]["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["worker", "stats-adapter"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["DATABASE_URL"].startswith("postgresql://cloudvote@127.0.0.1:5432/")


# Each well-known tool in the pods, by its upstream image, and the Debian-built stand-in
# (deploy/airgap, tagged with bookworm's version) that overlays/local-cluster uses instead.
TOOL_IMAGES = {
    ("Deployment", "worker", "db-ambassador"): (
        "ghcr.io/cloudnative-pg/pgbouncer:",
        "cloudvote-airgap/pgbouncer:1.18-bookworm",
    ),
    ("DaemonSet", "node-agent", "node-exporter"): (
        "quay.io/prometheus/node-exporter:",
        "cloudvote-airgap/node-exporter:1.5-bookworm",
    ),
}


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/local-cluster"])
def test_ambassador_and_node_agent_are_well_kept_tools(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """pgbouncer and node_exporter, not programs of our own: upstream images by a pinned
    tag, swapped for the air-gap stand-ins where nothing can be pulled."""
    docs = rendered[target]
    for (kind, name, container_name), (upstream, standin) in TOOL_IMAGES.items():
        (container,) = [
            c.spec for c in all_containers([find(docs, kind, name)]) if c.name == container_name
        ]
        if target == "overlays/local-cluster":
            assert container["image"] == standin
        else:
            assert container["image"].startswith(upstream), container["image"]
    compose = (REPO / "deploy/airgap/compose.standins.yaml").read_text()
    for _, standin in TOOL_IMAGES.values():
        assert f"image: {standin}\n" in compose


# node_exporter collectors whose files the kernel does not namespace: read from inside an
# unprivileged pod, they are the node's numbers, not the pod's.
NODE_WIDE_COLLECTORS = {
    "cpu",
    "loadavg",
    "meminfo",
    "vmstat",
    "stat",
    "diskstats",
    "pressure",
    "filefd",
}


def test_node_agent_runs_node_exporter_on_every_node_with_node_wide_collectors_only(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/dev"]
    daemonset = find(docs, "DaemonSet", "node-agent")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "command" not in container, "the image's entrypoint is node_exporter"
    required = {"--path.procfs=/proc", "--path.sysfs=/sys", "--collector.disable-defaults"}
    assert required <= set(args)
    collectors = {a.removeprefix("--collector.") for a in args if a.startswith("--collector.")}
    assert collectors - {"disable-defaults"} <= NODE_WIDE_COLLECTORS
    assert {"cpu", "meminfo", "loadavg"} <= collectors
    assert any(t["key"] == "node-role.kubernetes.io/control-plane" for t in pod["tolerations"])
    service = find(docs, "Service", "node-agent")["spec"]
    assert service["clusterIP"] == "None"


def test_gateway_ships_logs_with_a_sidecar_to_the_static_volume(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/local-cluster"]
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    pvc = find(docs, "PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["storageClassName"] == ""
    pv = find(docs, "PersistentVolume", pvc["spec"]["volumeName"])
    assert pv["spec"]["claimRef"] == {"namespace": "cloudvote-local", "name": "gateway-logs"}


def test_stateful_stores_use_headless_services_and_claim_templates(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/local-cluster"]
    classes = {d["metadata"]["name"] for d in by_kind(docs, "StorageClass")}
    for name in ("redis", "postgres"):
        statefulset = find(docs, "StatefulSet", name)["spec"]
        assert find(docs, "Service", statefulset["serviceName"])["spec"]["clusterIP"] == "None"
        (template,) = statefulset["volumeClaimTemplates"]
        assert template["spec"]["storageClassName"] in classes
        volumes = statefulset["template"]["spec"].get("volumes", [])
        assert not any(v["name"] == "data" for v in volumes), "no emptyDir for data"


@pytest.mark.parametrize("target", APP_TARGETS)
def test_quota_fits_the_app_at_its_autoscalers_maximum(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """Every pod at its highest count, plus one surge pod per Deployment, fits the quota,
    so the ResourceQuota never blocks an autoscaler or a rollout."""
    docs = rendered[target]
    nodes = 1 if target in ("overlays/local-cluster", "overlays/local-observed") else 3
    hard = by_kind(docs, "ResourceQuota")[0]["spec"]["hard"]
    totals = {"requests.cpu": 0.0, "requests.memory": 0.0, "limits.cpu": 0.0, "limits.memory": 0.0}
    pods = 0
    for workload in workloads(docs):
        count = max_pods(workload, docs, nodes)
        pods += count
        for key in totals:
            bound, resource = key.split(".")
            totals[key] += count * pod_amount(workload, bound, resource)
    for key, total in totals.items():
        assert total <= quantity(hard[key]), f"{target}: {key} {total:g} > {hard[key]}"
    assert pods <= int(hard["pods"]), f"{target}: {pods} pods > {hard['pods']}"
    claims = by_kind(docs, "PersistentVolumeClaim") + [
        template
        for statefulset in by_kind(docs, "StatefulSet")
        for template in statefulset["spec"].get("volumeClaimTemplates", [])
    ]
    storage = sum(quantity(c["spec"]["resources"]["requests"]["storage"]) for c in claims)
    assert len(claims) <= int(hard["persistentvolumeclaims"]), target
    assert storage <= quantity(hard["requests.storage"]), f"{target}: {storage:g} bytes"


@pytest.mark.parametrize("target", ["overlays/local-cluster", "overlays/local-observed"])
def test_local_cluster_fits_one_two_cpu_node(target: str, rendered: dict[str, list[Doc]]) -> None:
    """At the autoscalers' minimum plus one surge pod, the app requests at most 1 CPU:
    kind's kube-system pods request about 1 of a 2-CPU node's CPUs."""
    docs = rendered[target]
    cpu = 0.0
    largest = 0.0
    for workload in workloads(docs):
        if workload.kind in ("Job", "CronJob"):
            continue
        each = pod_amount(workload, "requests", "cpu")
        cpu += min_pods(workload, docs) * each
        largest = max(largest, each)
    assert cpu + largest <= 1.0, f"{cpu + largest:.3f} CPUs requested"


def pod_amount(workload: Workload, bound: str, resource: str) -> float:
    """The pod's effective request or limit, as the scheduler and quota count it: the
    long-running containers and sidecars together, or the largest init step if higher."""

    def amount(container: Container) -> float:
        return quantity(container.spec["resources"][bound][resource])

    steady = sum(amount(c) for c in workload.containers if c.kind != "init")
    init = max((amount(c) for c in workload.containers if c.kind == "init"), default=0.0)
    return max(steady, init)


def _scaler_bounds(workload: Workload, docs: list[Doc]) -> tuple[int, int] | None:
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        if hpa["spec"]["scaleTargetRef"]["name"] == workload.name:
            return int(hpa["spec"].get("minReplicas", 1)), int(hpa["spec"]["maxReplicas"])
    for scaled in by_kind(docs, "ScaledObject"):
        if scaled["spec"]["scaleTargetRef"]["name"] == workload.name:
            spec = scaled["spec"]
            return int(spec.get("minReplicaCount", 0)), int(spec.get("maxReplicaCount", 100))
    return None


def max_pods(workload: Workload, docs: list[Doc], nodes: int) -> int:
    if workload.kind == "DaemonSet":
        return nodes
    if workload.kind in ("Job", "CronJob"):
        return 1
    bounds = _scaler_bounds(workload, docs)
    count = bounds[1] if bounds else int(workload.doc["spec"].get("replicas", 1))
    return count + (1 if workload.kind == "Deployment" else 0)


def min_pods(workload: Workload, docs: list[Doc]) -> int:
    if workload.kind == "DaemonSet":
        return 1
    bounds = _scaler_bounds(workload, docs)
    return bounds[0] if bounds else int(workload.doc["spec"].get("replicas", 1))
