"""Self-healing under load (issue 6): a vote pod deleted, the worker container killed,
the postgres pod deleted. Each time the app recovers and no accepted vote is lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kubernetes.app import Cloudvote, assert_no_accepted_vote_lost
from tests.support.kube import condition, get_json, kubectl
from tests.support.load import SteadyVotes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def container_status(app: Cloudvote, pod: str, container: str) -> dict[str, object]:
    statuses = get_json("pod", "-n", app.namespace, pod)["status"]["containerStatuses"]
    return dict(next(s for s in statuses if s["name"] == container))


def host_pids_of(container_id: str) -> list[int]:
    """PIDs on this machine whose cgroup names the container (a node on this host:
    deploy/cluster, or kind's node containers); empty for a remote node."""
    pids = []
    for cgroup in Path("/proc").glob("[0-9]*/cgroup"):
        try:
            if container_id in cgroup.read_text():
                pids.append(int(cgroup.parent.name))
        except OSError:
            continue
    return pids


def kill_worker_container(app: Cloudvote) -> tuple[str, int]:
    """SIGKILL the worker container's processes, as the kernel's OOM killer or a crash
    would: no graceful shutdown. Returns the pod and the restart count before."""
    pod = app.ready_pods("worker")[0]["metadata"]["name"]
    status = container_status(app, pod, "worker")
    container_id = str(status["containerID"]).split("://", 1)[1]
    pids = host_pids_of(container_id)
    if pids:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    else:
        # A remote node: the container's PID 1 ignores SIGKILL from inside its own PID
        # namespace, so ask it to stop instead (a crash without the kernel's help).
        kubectl(
            "exec",
            "-n",
            app.namespace,
            pod,
            "-c",
            "worker",
            "--",
            "python",
            "-c",
            "import os, signal; os.kill(1, signal.SIGTERM)",
            check=False,
        )
    return pod, int(str(status["restartCount"]))


def delete_a_vote_pod(app: Cloudvote) -> str:
    pod = app.ready_pods("vote")[0]["metadata"]["name"]
    kubectl("delete", "pod", "-n", app.namespace, pod, "--wait=false")
    return pod


def under_load(
    app: Cloudvote, fault: Callable[[], object], recovered: Callable[[], bool]
) -> SteadyVotes:
    with SteadyVotes(app.host, app.port, per_second=40, threads=2, max_seconds=300) as load:
        time.sleep(3)
        fault()
        wait_until(recovered, timeout=180, interval=1, what="recovery")
        time.sleep(5)  # votes flow again after the recovery, too
    return load


def test_deleted_vote_pod_is_replaced_and_no_vote_is_lost(app: Cloudvote) -> None:
    deleted: list[str] = []

    def replaced() -> bool:
        ready = [p["metadata"]["name"] for p in app.ready_pods("vote")]
        return len(ready) >= 2 and deleted[0] not in ready

    load = under_load(app, lambda: deleted.append(delete_a_vote_pod(app)), replaced)
    assert_no_accepted_vote_lost(app, load)


def test_killed_worker_container_restarts_and_no_vote_is_lost(app: Cloudvote) -> None:
    killed: list[tuple[str, int]] = []

    def restarted() -> bool:
        pod, restarts_before = killed[0]
        status = container_status(app, pod, "worker")
        return int(str(status["restartCount"])) > restarts_before and bool(status["ready"])

    load = under_load(app, lambda: killed.append(kill_worker_container(app)), restarted)
    pod, _ = killed[0]
    last = container_status(app, pod, "worker")["lastState"]
    assert isinstance(last, dict) and "terminated" in last, last
    assert_no_accepted_vote_lost(app, load)


def test_deleted_postgres_pod_comes_back_with_its_data_and_no_vote_is_lost(
    app: Cloudvote,
) -> None:
    rows_before = int(app.psql("SELECT count(*) FROM votes"))
    old_uid = get_json("pod", "-n", app.namespace, "postgres-0")["metadata"]["uid"]

    def back() -> bool:
        pod = get_json("pod", "-n", app.namespace, "postgres-0")
        return pod["metadata"]["uid"] != old_uid and condition(pod, "Ready") == "True"

    load = under_load(
        app,
        lambda: kubectl("delete", "pod", "-n", app.namespace, "postgres-0", "--wait=false"),
        back,
    )
    # Same StatefulSet identity, same claim: the rows from before are still there.
    pod = get_json("pod", "-n", app.namespace, "postgres-0")
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["data-postgres-0"]
    assert int(app.psql("SELECT count(*) FROM votes")) >= rows_before
    assert_no_accepted_vote_lost(app, load)
