"""Node-level concepts, proven on several nodes (issue 11).

The order is the order of a maintenance evening: look at the placement, release, drain a
worker, lose a worker, lose the database's node, and rejoin a node. Each test leaves every
node Ready and schedulable, and cloudvote rolled out, for the next one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from tests.kubernetes.app import Cloudvote, GatewayReader, assert_no_accepted_vote_lost
from tests.nodes import cluster
from tests.nodes.cluster import Nodes
from tests.nodes.conftest import TIMINGS
from tests.support.kube import get_json, kubectl, ready_pods, wait_rollout
from tests.support.load import SteadyVotes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

VOTE = "app.kubernetes.io/name=vote"
NODE_AGENT = "app.kubernetes.io/name=node-agent"
STATELESS = ("gateway", "vote", "result", "worker")
# The PodDisruptionBudget's refusal, as kubectl drain prints it while it retries.
PDB_REFUSAL = "violate the pod's disruption budget"


def rolled_out(app: Cloudvote) -> None:
    for name in STATELESS:
        wait_rollout(app.namespace, f"deployment/{name}", timeout=300)
    for name in ("postgres", "redis"):
        wait_rollout(app.namespace, f"statefulset/{name}", timeout=300)


def rebalance(app: Cloudvote) -> None:
    """Spread the stateless tiers again: nothing moves a running pod back by itself."""
    for name in STATELESS:
        kubectl("rollout", "restart", "-n", app.namespace, f"deployment/{name}")
    rolled_out(app)


def data_nodes(app: Cloudvote) -> set[str]:
    """Where postgres and redis run (their volumes live there)."""
    return {
        get_json("pod", "-n", app.namespace, pod)["spec"]["nodeName"]
        for pod in ("postgres-0", "redis-0")
    }


def stateless_worker(app: Cloudvote, nodes: Nodes) -> str:
    """A worker node that holds neither postgres nor redis: drained or lost, it costs replicas."""
    candidates = [name for name in nodes.workers if name not in data_nodes(app)]
    assert candidates, f"postgres and redis cover every worker: {data_nodes(app)}"
    return candidates[0]


@pytest.fixture
def steady_load(app: Cloudvote) -> Iterator[SteadyVotes]:
    with SteadyVotes(app.host, app.port, per_second=40, threads=2, max_seconds=900) as load:
        time.sleep(2)  # the load is flowing before anything changes
        yield load


def test_the_daemonset_runs_exactly_one_pod_on_every_node(app: Cloudvote, nodes: Nodes) -> None:
    placed = cluster.pods_by_node(app.namespace, NODE_AGENT)
    assert sorted(placed) == list(nodes.all), placed
    assert all(len(pods) == 1 for pods in placed.values()), placed
    ready = {p["spec"]["nodeName"] for p in ready_pods(app.namespace, NODE_AGENT)}
    assert sorted(ready) == list(nodes.all), "a node agent is not Ready"


def spread_evenly(placed: dict[str, list[str]], workers: tuple[str, ...]) -> bool:
    """maxSkew 1 over the workers: their pod counts differ by one at most."""
    counts = [len(placed.get(worker, [])) for worker in workers]
    return set(placed) <= set(workers) and max(counts) - min(counts) <= 1


def test_vote_replicas_run_on_different_nodes(app: Cloudvote, nodes: Nodes) -> None:
    placed = cluster.pods_by_node(app.namespace, VOTE)
    assert sum(len(pods) for pods in placed.values()) >= 2, placed
    assert len(placed) >= 2 and spread_evenly(placed, nodes.workers), placed


def test_postgres_and_redis_prefer_the_node_labelled_ssd(app: Cloudvote, nodes: Nodes) -> None:
    assert len(nodes.ssd) == 1, f"deploy/kind/cluster.yaml labels one worker: {nodes.ssd}"
    assert data_nodes(app) == set(nodes.ssd)


def test_a_rolling_update_spreads_the_new_pods_and_fails_no_request(
    app: Cloudvote, nodes: Nodes, steady_load: SteadyVotes
) -> None:
    release = secrets.token_hex(3)
    with GatewayReader(app) as reader:
        kubectl(
            "set", "env", "-n", app.namespace, "deployment/vote", f"CLOUDVOTE_RELEASE={release}"
        )
        wait_rollout(app.namespace, "deployment/vote", timeout=240)
        time.sleep(2)
    steady_load.stop()

    new_pods = [
        pod
        for pod in ready_pods(app.namespace, VOTE)
        if any(
            env.get("value") == release
            for env in pod["spec"]["containers"][0].get("env", [])
            if env["name"] == "CLOUDVOTE_RELEASE"
        )
    ]
    assert len(new_pods) >= 2
    placed: dict[str, list[str]] = {}
    for pod in new_pods:
        placed.setdefault(pod["spec"]["nodeName"], []).append(pod["metadata"]["name"])
    assert len(placed) >= 2 and spread_evenly(placed, nodes.workers), placed
    assert set(steady_load.statuses) == {"202"}, steady_load.summary()
    assert reader.failures == [] and reader.ok > 0, reader.failures[:20]
    assert_no_accepted_vote_lost(app, steady_load)


def test_a_drain_under_load_waits_for_the_budget_and_fails_no_vote(
    app: Cloudvote, nodes: Nodes
) -> None:
    drained = stateless_worker(app, nodes)
    others = [name for name in nodes.workers if name != drained]
    # Spreading happens only at scheduling time. Bunch both vote pods on the node to
    # drain, as an earlier maintenance leaves them: cordon the others, move their pods.
    for name in others:
        cluster.cordon(name)
    try:
        elsewhere = [
            pod
            for node_name, pods in cluster.pods_by_node(app.namespace, VOTE).items()
            if node_name != drained
            for pod in pods
        ]
        for pod in elsewhere:
            kubectl("delete", "pod", "-n", app.namespace, pod)
        wait_rollout(app.namespace, "deployment/vote", timeout=180)
    finally:
        for name in others:
            cluster.uncordon(name)
    placed = cluster.pods_by_node(app.namespace, VOTE)
    assert list(placed) == [drained] and len(placed[drained]) >= 2, placed

    try:
        with (
            SteadyVotes(app.host, app.port, per_second=40, threads=2, max_seconds=600) as load,
            GatewayReader(app) as reader,
        ):
            time.sleep(2)
            output, seconds = cluster.drain(drained)
            rolled_out(app)
            time.sleep(2)
        TIMINGS["drain of a worker with both vote pods"] = seconds
        # The budget let one vote pod go, and refused the second until the first one's
        # replacement was Ready on another node: the drain waited instead of emptying
        # the vote tier.
        assert PDB_REFUSAL in output, output
        assert cluster.pods_by_node(app.namespace, VOTE).keys() <= set(others)
        assert set(load.statuses) == {"202"}, load.summary()
        assert reader.failures == [] and reader.ok > 0, reader.failures[:20]
        assert_no_accepted_vote_lost(app, load)
    finally:
        cluster.uncordon(drained)
        rebalance(app)


def test_a_lost_worker_has_its_pods_replaced_and_loses_no_accepted_vote(
    app: Cloudvote, nodes: Nodes
) -> None:
    lost = stateless_worker(app, nodes)
    container = cluster.kind_container(lost)
    on_lost = {
        name: pods
        for name in STATELESS
        if (pods := cluster.pods_by_node(app.namespace, f"app.kubernetes.io/name={name}").get(lost))
    }
    assert on_lost, f"no stateless pod on {lost} to replace"

    try:
        with SteadyVotes(app.host, app.port, per_second=40, threads=2, max_seconds=600) as load:
            time.sleep(2)
            # Power off: SIGKILL to the node's init, no drain, no goodbye to the API.
            killed = time.monotonic()
            cluster.docker("kill", "--signal", "KILL", container)
            cluster.wait_not_ready(lost)
            not_ready = time.monotonic() - killed
            wait_until(
                lambda: cluster.taint_keys(lost),
                lambda keys: "node.kubernetes.io/unreachable" in keys,
                timeout=60,
                interval=1,
                what=f"{lost} tainted unreachable",
            )
            tainted = time.monotonic() - killed

            def replaced() -> bool:
                for name, pods in on_lost.items():
                    ready = ready_pods(app.namespace, f"app.kubernetes.io/name={name}")
                    fresh = [p for p in ready if p["metadata"]["name"] not in pods]
                    if any(p["spec"]["nodeName"] == lost for p in ready) or len(fresh) < len(pods):
                        return False
                return True

            wait_until(replaced, timeout=300, interval=1, what=f"replacements for {on_lost}")
            replaced_after = time.monotonic() - killed
            time.sleep(5)
        TIMINGS["lost worker: NotReady after"] = not_ready
        TIMINGS["lost worker: unreachable taint after"] = tainted
        TIMINGS["lost worker: every stateless pod replaced after"] = replaced_after
        # Until the node was NotReady, its pods still stood behind the Services: some
        # requests went nowhere. None of the votes that were accepted may be lost.
        print(f"lost worker {lost}: {load.summary()}")
        assert_no_accepted_vote_lost(app, load)
    finally:
        cluster.docker("start", container)
        cluster.wait_ready(lost, timeout=240)
        rolled_out(app)


def test_a_lost_database_node_keeps_postgres_0_bound_to_it_until_it_returns(
    app: Cloudvote, nodes: Nodes
) -> None:
    """A StatefulSet never runs two copies of postgres-0: with its node gone, it waits."""
    (lost,) = data_nodes(app)
    container = cluster.kind_container(lost)
    claim_before = get_json("pvc", "-n", app.namespace, "data-postgres-0")["metadata"]["uid"]
    votes_before = int(app.psql("SELECT count(*) FROM votes").strip())
    pod_uid = get_json("pod", "-n", app.namespace, "postgres-0")["metadata"]["uid"]

    killed = time.monotonic()
    cluster.docker("kill", "--signal", "KILL", container)
    try:
        cluster.wait_not_ready(lost)
        TIMINGS["lost database node: NotReady after"] = time.monotonic() - killed
        # Ask for postgres-0 to go, as an eviction would. Its kubelet cannot confirm that
        # the container stopped, so the pod stays, marked for deletion, and the
        # StatefulSet must not start a second postgres-0 elsewhere meanwhile.
        kubectl("delete", "pod", "-n", app.namespace, "postgres-0", "--wait=false")
        time.sleep(45)  # past the stateless pods' 30 s toleration: they have left
        pod = get_json("pod", "-n", app.namespace, "postgres-0")
        assert pod["metadata"]["uid"] == pod_uid, "a second postgres-0 was created"
        assert pod["metadata"].get("deletionTimestamp"), pod["metadata"]
        assert pod["spec"]["nodeName"] == lost
        assert cluster.pods_by_node(app.namespace, VOTE).keys().isdisjoint({lost})
    finally:
        cluster.docker("start", container)
        cluster.wait_ready(lost, timeout=240)
    wait_rollout(app.namespace, "statefulset/postgres", timeout=300)
    TIMINGS["lost database node: postgres-0 serving again after"] = time.monotonic() - killed
    rolled_out(app)
    assert get_json("pvc", "-n", app.namespace, "data-postgres-0")["metadata"]["uid"] == (
        claim_before
    )
    assert int(app.psql("SELECT count(*) FROM votes").strip()) >= votes_before


def test_a_node_that_joins_gets_its_daemonset_pod(app: Cloudvote, nodes: Nodes) -> None:
    """A worker removed from the cluster and registered again, as a replaced machine is."""
    joining = stateless_worker(app, nodes)
    container = cluster.kind_container(joining)
    old_uid = cluster.node(joining)["metadata"]["uid"]
    kubectl("drain", joining, "--ignore-daemonsets", "--delete-emptydir-data", timeout=360)
    kubectl("delete", "node", joining, timeout=120)
    wait_until(
        lambda: cluster.pods_by_node(app.namespace, NODE_AGENT).get(joining),
        lambda pods: not pods,
        timeout=120,
        interval=1,
        what=f"the node agent on {joining} gone with its node",
    )
    started = time.monotonic()
    # The kubelet registers its node when it starts: this node object is a new one.
    cluster.docker("exec", container, "systemctl", "restart", "kubelet")
    cluster.wait_ready(joining, timeout=180)
    assert cluster.node(joining)["metadata"]["uid"] != old_uid
    wait_until(
        lambda: [
            p for p in ready_pods(app.namespace, NODE_AGENT) if p["spec"]["nodeName"] == joining
        ],
        lambda pods: len(pods) == 1,
        timeout=120,
        interval=1,
        what=f"a node agent on the new {joining}",
    )
    TIMINGS["joined node: its node agent Ready after"] = time.monotonic() - started
    placed = cluster.pods_by_node(app.namespace, NODE_AGENT)
    assert sorted(placed) == list(nodes.all) and all(len(p) == 1 for p in placed.values())
