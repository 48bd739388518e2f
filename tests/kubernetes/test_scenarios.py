"""Every scenario of deploy/k8s/scenarios, broken, diagnosed and fixed on a real cluster
(issue 6, Scenarios; POD-03).

One healthy baseline in namespace cloudvote-scenario serves the whole module. Each test
applies its scenario over it as the scenario's README does, asserts the symptom from the
API (container state and last state, restart counts, exit codes, events, endpoints,
rollout conditions, the HPA's decisions), applies the README's fix and asserts that the
app is whole again: rollouts complete, pods ready, votes counted. Every fix converges back
to the baseline, so the tests run in file order, each starting where the previous one
left the app; hpa-flapping comes last because its fix keeps four vote pods for the
5-minute scale-down window. The namespace is deleted at the end.

About 11 minutes on the 2-CPU local cluster of deploy/cluster. One shortcut, in
hpa-flapping: the load Job is limited to 3 burst cycles instead of 8; the test stops
watching once the HPA has gone up, down and up again, which the first two cycles show.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from tests.kubernetes.app import RELEASE_DIR, require_release, wait_app_ready
from tests.kubernetes.scenarios import (
    NAMESPACE,
    apply_scenario,
    assert_serving,
    cast_votes,
    current_revision_pods,
    deploy_baseline,
    event_messages,
    get,
    last_termination,
    pods,
    previous_logs,
    ready_pods,
    remove_namespace,
    rendered_image,
    rollout_status,
    run,
    scenario_objects,
    wait_new_pod,
    wait_rolled_out,
    wait_stored,
    waiting_reason,
)
from tests.support.kube import Manifest, condition, get_json, kubectl, require_cluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

VOTE = "app.kubernetes.io/name=vote"


@pytest.fixture(scope="module", autouse=True)
def baseline() -> Iterator[str]:
    require_cluster()
    yield deploy_baseline()
    remove_namespace()


def crash_looping(status: Manifest) -> bool:
    return waiting_reason(status) == "CrashLoopBackOff" and status["restartCount"] >= 1


def container_spec(deployment: str, container: str | None = None) -> Manifest:
    spec = get("deployment", deployment)["spec"]["template"]["spec"]
    name = container or deployment
    return dict(next(c for c in spec["containers"] if c["name"] == name))


def old_pods_ready(deployment: str, expected: int) -> None:
    """The previous revision still serves: a rollout with maxUnavailable 0 removes an old
    pod only once its replacement is available."""
    template_hash, _ = current_revision_pods(deployment)
    ready = ready_pods(f"app.kubernetes.io/name={deployment}")
    old = [p for p in ready if p["metadata"]["labels"]["pod-template-hash"] != template_hash]
    assert len(old) == expected, [p["metadata"]["name"] for p in ready]


def test_crashloop_missing_secret_exits_2_until_the_volume_names_the_real_secret() -> None:
    apply_scenario("crashloop-missing-secret")
    pod, status = wait_new_pod("result", crash_looping, what="a new result pod in CrashLoopBackOff")
    name = pod["metadata"]["name"]
    assert last_termination(status)["exitCode"] == 2, status  # the app's configuration error
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "secrets")
    assert volume["secret"] == {**volume["secret"], "secretName": "cloudvote-db-credentials"}
    missing = run("get", "secret", "cloudvote-db-credentials")
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    assert (
        "DATABASE_PASSWORD_FILE=/run/secrets/cloudvote/postgres-password cannot be read"
        in previous_logs(name, "result")
    )
    assert any(
        "Back-off restarting failed container result" in m for m in event_messages(name, "BackOff")
    )
    old_pods_ready("result", 1)

    apply_scenario("baseline")
    wait_rolled_out("deployment/result")
    assert_serving("result")
    assert "optional" not in str(
        next(
            v
            for v in get("deployment", "result")["spec"]["template"]["spec"]["volumes"]
            if v["name"] == "secrets"
        )
    )


def test_crashloop_wrong_command_is_rejected_by_the_cli_and_the_rollout_never_ends() -> None:
    apply_scenario("crashloop-wrong-command")
    pod, status = wait_new_pod("result", crash_looping, what="a new result pod in CrashLoopBackOff")
    assert pod["spec"]["containers"][0]["command"] == ["cloudvote", "results"]
    assert last_termination(status)["exitCode"] == 2, status
    logs = previous_logs(pod["metadata"]["name"], "result")
    assert "invalid choice: 'results'" in logs, logs
    stuck = rollout_status("deployment/result", 10)
    assert stuck.returncode != 0 and "rollout to finish" in stuck.stdout, stuck
    old_pods_ready("result", 1)

    apply_scenario("baseline")
    wait_rolled_out("deployment/result")
    assert_serving("result")
    assert "command" not in container_spec("result")


def test_oomkilled_worker_is_killed_with_137_and_the_old_worker_keeps_counting() -> None:
    apply_scenario("oomkilled")
    pod, status = wait_new_pod(
        "worker",
        lambda s: last_termination(s).get("reason") == "OOMKilled" and s["restartCount"] >= 1,
        what="a new worker container OOMKilled",
    )
    assert last_termination(status)["exitCode"] == 137, status  # 128 + SIGKILL
    limits = next(c for c in pod["spec"]["containers"] if c["name"] == "worker")["resources"]
    assert limits["limits"]["memory"] == "32Mi"
    old_pods_ready("worker", 1)
    during = cast_votes(10)
    assert len(during) == 10
    wait_stored(during)  # the old worker, untouched by the rollout, still stores votes

    apply_scenario("baseline")
    wait_rolled_out("deployment/worker")
    assert_serving("worker")
    assert container_spec("worker")["resources"]["limits"]["memory"] == "192Mi"
    after = cast_votes(10)
    assert len(after) == 10
    wait_stored(after)


def test_aggressive_liveness_kills_vote_before_it_listens() -> None:
    apply_scenario("crashloop-aggressive-liveness")
    pod, status = wait_new_pod(
        "vote", crash_looping, timeout=150, what="a new vote pod in CrashLoopBackOff"
    )
    name = pod["metadata"]["name"]
    assert last_termination(status), status  # a container that ran, and was stopped
    spec = pod["spec"]["containers"][0]
    assert "startupProbe" not in spec and spec["livenessProbe"]["failureThreshold"] == 1
    assert any(m.startswith("Liveness probe failed") for m in event_messages(name, "Unhealthy"))
    assert any(
        "failed liveness probe, will be restarted" in m for m in event_messages(name, "Killing")
    )
    # Killed, not crashed: the previous run has no traceback, only the start of its boot.
    assert "Traceback" not in run("logs", name, "--previous").stdout
    # Nothing is asserted about the old pods: a killed container keeps booting through
    # its 5 s preStop sleep and may pass readiness for minReadySeconds, so the rollout
    # can advance and replace healthy pods with crash-looping ones (README.md).

    apply_scenario("baseline")
    wait_rolled_out("deployment/vote")
    assert_serving("vote")
    assert "startupProbe" in container_spec("vote")


def test_imagepullbackoff_never_starts_a_container_and_old_pods_serve() -> None:
    apply_scenario("imagepullbackoff")
    pod, status = wait_new_pod(
        "vote",
        lambda s: waiting_reason(s) == "ImagePullBackOff",
        timeout=120,
        what="a new vote pod in ImagePullBackOff",
    )
    name = pod["metadata"]["name"]
    # The scenario sets IfNotPresent, so the kubelet does try a registry (with the local
    # overlay's Never it would stop at ErrImageNeverPull, without trying).
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    missing = rendered_image("imagepullbackoff", "vote")
    assert missing.endswith("cloudvote-vote:0.1.1")
    assert pod["spec"]["containers"][0]["image"] == missing
    assert status["restartCount"] == 0 and not status.get("lastState"), status
    failures = event_messages(name, "Failed")
    pulled = [m for m in failures if f'Failed to pull image "{missing}"' in m]
    assert pulled, failures
    if RELEASE_DIR:
        # A real pull: the private registry answered, and it has no such tag.
        assert any("not found" in m for m in pulled), pulled
    assert "Error: ErrImagePull" in failures and "Error: ImagePullBackOff" in failures
    never_ran = run("logs", name, "--previous")
    assert never_ran.returncode != 0 and "not found" in never_ran.stderr
    old_pods_ready("vote", 2)

    apply_scenario("baseline")
    wait_rolled_out("deployment/vote")
    assert_serving("vote")
    assert container_spec("vote")["image"] == rendered_image("baseline", "vote")


READYZ = (
    "import urllib.request as u, urllib.error as e\n"
    "try: print(u.urlopen('http://127.0.0.1:5000/readyz', timeout=5).read().decode())\n"
    "except e.HTTPError as x: print(x.code, x.read().decode())\n"
)


@require_release()
def test_imagepull_unauthorized_is_a_401_from_the_registry_until_the_secret_is_named() -> None:
    apply_scenario("imagepull-unauthorized")
    pod, status = wait_new_pod(
        "vote",
        lambda s: waiting_reason(s) in ("ErrImagePull", "ImagePullBackOff"),
        timeout=120,
        what="a new vote pod refused by the registry",
    )
    name = pod["metadata"]["name"]
    spec = pod["spec"]
    # The pod names its own secret, so its ServiceAccount's was not added.
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    # The image is the one the old pods run: it exists, and only the credentials are wrong.
    assert spec["containers"][0]["image"] == rendered_image("baseline", "vote")
    assert status["restartCount"] == 0 and not status.get("lastState"), status
    assert run("get", "secret", "regcred").returncode != 0
    assert get("serviceaccount", "vote")["imagePullSecrets"] == [{"name": "registry-credentials"}]
    failures = wait_until(
        lambda: event_messages(name, "Failed"),
        lambda messages: any("401 Unauthorized" in m for m in messages),
        timeout=90,
        what="the registry's 401 in the pod's events",
    )
    assert "Error: ErrImagePull" in failures, failures
    old_pods_ready("vote", 2)

    apply_scenario("baseline")
    wait_rolled_out("deployment/vote")
    assert_serving("vote")
    assert "imagePullSecrets" not in get("deployment", "vote")["spec"]["template"]["spec"]


@pytest.mark.timeout(420)
def test_readiness_never_passes_no_traffic_no_restart_and_the_deadline_fails_the_rollout() -> None:
    apply_scenario("readiness-never-passes")
    pod, _ = wait_new_pod(
        "vote", lambda s: "running" in s.get("state", {}), what="a new vote pod running"
    )
    name = pod["metadata"]["name"]
    wait_until(
        lambda: event_messages(name, "Unhealthy"),
        lambda ms: "Readiness probe failed: HTTP probe failed with statuscode: 503" in ms,
        timeout=60,
        interval=2,
        what="a failed readiness probe event",
    )
    readyz = kubectl("exec", "-n", NAMESPACE, name, "--", "python", "-c", READYZ).stdout
    assert readyz.startswith("503") and "redis-primary" in readyz, readyz
    slices = get("endpointslices", "-l", "kubernetes.io/service-name=vote")["items"]
    endpoints = {
        e["targetRef"]["name"]: e["conditions"]["ready"]
        for s in slices
        for e in s.get("endpoints") or []
    }
    assert endpoints.get(name) is False, endpoints  # listed, but not ready: no traffic

    # Until the 120 s progress deadline: the pod stays Running, 0/1, never restarted.
    deadline = time.monotonic() + 200
    while True:
        dep = get("deployment", "vote")
        progressing = next(c for c in dep["status"]["conditions"] if c["type"] == "Progressing")
        current = next(p for p in pods(VOTE) if p["metadata"]["name"] == name)
        status = current["status"]["containerStatuses"][0]
        assert "running" in status["state"] and not status["ready"], status
        assert status["restartCount"] == 0, status
        if progressing["reason"] == "ProgressDeadlineExceeded":
            break
        assert time.monotonic() < deadline, f"no progress deadline; last: {progressing}"
        time.sleep(3)
    assert progressing["status"] == "False"
    assert dep["status"]["updatedReplicas"] == 1
    assert not event_messages(name, "Killing")  # liveness (/healthz) never failed
    failed = rollout_status("deployment/vote", 10)
    assert failed.returncode != 0 and "exceeded its progress deadline" in failed.stderr
    old_pods_ready("vote", 2)

    apply_scenario("baseline")
    wait_rolled_out("deployment/vote")
    assert_serving("vote")
    conditions = get("deployment", "vote")["status"]["conditions"]
    progressing = next(c for c in conditions if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")


def test_bad_rollout_is_undone_to_the_previous_replicaset() -> None:
    good_hash, _ = current_revision_pods("vote")
    apply_scenario("bad-rollout-undo")
    pod, status = wait_new_pod(
        "vote", crash_looping, what="a new vote pod (worker image) in CrashLoopBackOff"
    )
    bad_hash = pod["metadata"]["labels"]["pod-template-hash"]
    assert pod["spec"]["containers"][0]["image"] == rendered_image("baseline", "worker")
    assert last_termination(status)["exitCode"] == 2, status
    assert "DATABASE_URL must be set" in previous_logs(pod["metadata"]["name"], "vote")
    old_pods_ready("vote", 2)
    bad_revision = int(
        get("deployment", "vote")["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    )

    undo = run("rollout", "undo", "deployment/vote")
    assert undo.returncode == 0 and "rolled back" in undo.stdout, undo
    wait_rolled_out("deployment/vote")
    assert_serving("vote")
    assert container_spec("vote")["image"] == rendered_image("baseline", "vote")
    restored_hash, _ = current_revision_pods("vote")
    assert restored_hash == good_hash  # the kept ReplicaSet, scaled back up
    revision = int(
        get("deployment", "vote")["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    )
    assert revision > bad_revision  # the undo is a new revision
    bad_rs = get("replicasets", "-l", f"{VOTE},pod-template-hash={bad_hash}")["items"][0]
    assert bad_rs["spec"]["replicas"] == 0

    # Completing the fix in git (here: the baseline manifest) rolls nothing: the undo
    # already runs exactly what the manifest says.
    apply_scenario("baseline")
    wait_rolled_out("deployment/vote")
    assert current_revision_pods("vote")[0] == good_hash


def test_crashloop_db_not_ready_recovers_with_the_init_container_and_keeps_every_vote() -> None:
    before = cast_votes(5)
    assert len(before) == 5
    wait_stored(before)
    run("delete", "job", "migrate", "--ignore-not-found", "--wait=true", timeout=90)
    apply_scenario("crashloop-db-not-ready")

    wait_until(
        lambda: pods("app.kubernetes.io/name=postgres"),
        lambda found: not found,
        timeout=120,
        interval=2,
        what="postgres-0 gone (StatefulSet at 0)",
    )
    migrate = wait_until(
        lambda: next(
            (
                p
                for p in pods("app.kubernetes.io/name=migrate")
                if crash_looping(p["status"].get("containerStatuses", [{}])[0])
            ),
            None,
        ),
        timeout=150,
        interval=2,
        what="the migration pod in CrashLoopBackOff",
    )
    assert migrate is not None
    name = migrate["metadata"]["name"]
    assert "initContainers" not in migrate["spec"]
    assert last_termination(migrate["status"]["containerStatuses"][0])["exitCode"] == 1
    assert "psycopg.OperationalError" in previous_logs(name, "migrate")
    slices = get("endpointslices", "-l", "kubernetes.io/service-name=postgres")["items"]
    assert not [e for s in slices for e in s.get("endpoints") or []]
    job = get("job", "migrate")
    assert condition(job, "Complete") is None and condition(job, "Failed") is None
    assert job["status"].get("active") == 1
    during = cast_votes(5)  # vote needs only Redis: accepted, queued for the worker
    assert len(during) == 5

    assert run("delete", "job", "migrate", "--wait=true", timeout=90).returncode == 0
    apply_scenario("baseline")
    # The new Job's own pods, by its uid: the old Job's may still be on their way out.
    own_pods = f"batch.kubernetes.io/controller-uid={get('job', 'migrate')['metadata']['uid']}"
    fixed = wait_until(
        lambda: pods(own_pods), timeout=60, interval=1, what="the new migration pod"
    )[0]
    assert [c["name"] for c in fixed["spec"]["initContainers"]] == ["wait-for-postgres"]
    done = kubectl(
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=Complete",
        "job/migrate",
        "--timeout=180s",
        timeout=210,
    )
    assert "condition met" in done.stdout
    finished = pods(own_pods)[0]
    assert finished["status"]["containerStatuses"][0]["restartCount"] == 0
    wait_app_ready(NAMESPACE, timeout=180)
    wait_stored(before | during, timeout=180)  # nothing lost, nothing left in the queue


POSTGRES = "app.kubernetes.io/name=postgres"


def unschedulable_postgres() -> Manifest | None:
    """postgres-0 of the scenario's template, which the scheduler could not place."""
    for pod in pods(POSTGRES):
        if (
            pod["spec"]["nodeSelector"].get("disktype") == "nvme"
            and condition(pod, "PodScheduled") == "False"
        ):
            return pod
    return None


def wait_unschedulable_postgres() -> Manifest:
    pod = wait_until(
        unschedulable_postgres, timeout=120, interval=1, what="postgres-0 Pending, unschedulable"
    )
    assert pod is not None
    scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["reason"] == "Unschedulable", scheduled
    assert "didn't match Pod's node affinity/selector" in scheduled["message"], scheduled
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    assert not pod["status"].get("containerStatuses")  # nothing ever started
    return pod


@pytest.mark.timeout(540)
def test_unschedulable_node_selector_keeps_postgres_pending_until_a_node_has_the_label() -> None:
    before = cast_votes(5)
    assert len(before) == 5
    wait_stored(before)
    # The node postgres-0 runs on now: its volume is there, so that is the node to label.
    node = pods(POSTGRES)[0]["spec"]["nodeName"]
    original = get_json("node", node)["metadata"]["labels"].get("disktype")
    volume = get("pvc", "data-postgres-0")["spec"]["volumeName"]
    assert not get_json("nodes", "-l", "disktype=nvme")["items"], "a node already has the label"
    apply_scenario("unschedulable-node-selector")

    wait_unschedulable_postgres()
    assert any(
        "didn't match Pod's node affinity/selector" in m
        for m in event_messages("postgres-0", "FailedScheduling")
    )
    # The claim outlives its pod: still bound to the same volume, on the same node.
    claim = get("pvc", "data-postgres-0")
    assert (claim["status"]["phase"], claim["spec"]["volumeName"]) == ("Bound", volume)
    slices = get("endpointslices", "-l", "kubernetes.io/service-name=postgres")["items"]
    assert not [e for s in slices for e in s.get("endpoints") or []]
    wait_until(
        lambda: ready_pods("app.kubernetes.io/name=result"),
        lambda ready: not ready,
        timeout=60,
        interval=2,
        what="result unready (its /readyz checks PostgreSQL)",
    )
    stuck = rollout_status("statefulset/postgres", 10)
    assert stuck.returncode != 0 and "Waiting for 1 pods to be ready" in stuck.stdout, stuck

    # Fix 1: give the volume's node the label the pod requires.
    try:
        wait_until(
            lambda: get_json("node", node)["spec"].get("unschedulable", False),
            lambda cordoned: not cordoned,
            timeout=120,
            interval=2,
            what=f"node {node} schedulable",
        )
        kubectl("label", "node", node, "disktype=nvme", "--overwrite")
        wait_app_ready(NAMESPACE, timeout=180)  # postgres-0 first, then result and worker
        assert pods(POSTGRES)[0]["spec"]["nodeName"] == node
        wait_stored(before)  # the same volume, so the votes from before are there
    finally:
        restore = f"disktype={original}" if original else "disktype-"
        kubectl("label", "node", node, restore, "--overwrite")

    # Without the label, the running pod stays (IgnoredDuringExecution), but the next
    # pod the StatefulSet makes is Pending again.
    assert run("delete", "pod", "postgres-0", "--wait=true", timeout=120).returncode == 0
    stranded = wait_unschedulable_postgres()

    # Fix 2: back to the base's preference. The StatefulSet does not replace a pod that
    # never became ready (OrderedReady waits for it), so the stranded pod is deleted too.
    apply_scenario("baseline")
    sts = wait_until(
        lambda: get("statefulset", "postgres"),
        lambda s: s["status"].get("observedGeneration") == s["metadata"]["generation"],
        timeout=60,
        interval=1,
        what="statefulset/postgres observed",
    )
    updated = sts["status"]["updateRevision"]
    assert stranded["metadata"]["labels"]["controller-revision-hash"] != updated
    time.sleep(20)
    still = unschedulable_postgres()
    assert still is not None and still["metadata"]["uid"] == stranded["metadata"]["uid"]
    assert run("delete", "pod", "postgres-0", "--wait=true", timeout=120).returncode == 0
    wait_app_ready(NAMESPACE, timeout=180)
    fixed = pods(POSTGRES)[0]
    assert fixed["metadata"]["labels"]["controller-revision-hash"] == updated
    spec = fixed["spec"]
    assert "disktype" not in spec["nodeSelector"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in spec["affinity"]["nodeAffinity"]
    assert get("pvc", "data-postgres-0")["spec"]["volumeName"] == volume
    after = cast_votes(5)
    assert len(after) == 5
    wait_stored(before | after)


def replicas_changes(samples: list[int]) -> list[str]:
    """up/down for each change of the replica count, in order."""
    return ["up" if b > a else "down" for a, b in itertools.pairwise(samples) if a != b]


def flapped(directions: list[str]) -> bool:
    """Up, later down, later up again: a burst, a lull and the next burst."""
    remaining = iter(directions)
    return all(step in remaining for step in ("up", "down", "up"))


@pytest.mark.timeout(540)
def test_hpa_flapping_scales_up_and_down_with_each_burst_until_stabilised() -> None:
    objects = scenario_objects("hpa-flapping")
    job = next(o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "burst-load")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    job["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "--cycles=3" if arg.startswith("--cycles=") else arg for arg in command
    ]
    apply_scenario("hpa-flapping", objects)

    samples: list[int] = []
    deadline = time.monotonic() + 330
    while not flapped(replicas_changes(samples)):
        assert time.monotonic() < deadline, f"no flap within 330 s: {samples}"
        samples.append(int(get("deployment", "vote")["spec"]["replicas"]))
        time.sleep(2)
    rescales = [
        e["message"]
        for e in get(
            "events",
            "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name=vote,"
            "reason=SuccessfulRescale",
        )["items"]
    ]
    assert any("All metrics below target" in m for m in rescales), rescales
    assert any("above target" in m for m in rescales), rescales

    # The fix, applied in the middle of a burst while the load goes on: the base HPA's
    # 300 s scale-down window holds the capacity through the next lull.
    apply_scenario("baseline")
    hpa = get("hpa", "vote")
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    held: list[int] = []
    stabilised = False
    deadline = time.monotonic() + 150
    while not stabilised:
        assert time.monotonic() < deadline, f"no stabilised lull within 150 s: {held}"
        hpa = get("hpa", "vote")
        held.append(int(get("deployment", "vote")["spec"]["replicas"]))
        able = next(c for c in hpa["status"]["conditions"] if c["type"] == "AbleToScale")
        stabilised = able["reason"] == "ScaleDownStabilized"
        time.sleep(2)
    assert "down" not in replicas_changes(held), held
    run("delete", "job", "burst-load", "--wait=true", timeout=90)
    wait_until(
        lambda: pods("app.kubernetes.io/name=burst-load"),
        lambda left: not left,
        timeout=60,
        interval=2,
        what="the load's pod gone",
    )
