"""Compose benchmark: image sizes, time from `up` to healthy, and the cost of the L7 hop.

    python -m bench.compose_bench [--quick]      (scripts/compose-e2e runs it with --quick)

Writes bench/results/compose.json. It runs its own project (`-p cloudvote-bench`, port
5002) so that it never touches a stack someone is using, and removes it at the end.

Ingest is measured three ways with the same wrk load (form posts, as bench/ingest.py):

- through the published port: the browser's path, host -> docker-proxy -> nginx -> vote;
- to the gateway container's address: nginx -> vote, without Docker's port forwarding;
- to the vote container's address directly: no gateway at all.

The difference between the last two is the price of the L7 gateway (ARCH-04); the first
adds Docker's userland port proxy. The loadgen profile repeats the gateway-vs-direct
comparison from inside the frontend network. Everything shares the machine's cores
(wrk, nginx, vote, Redis, the worker draining), so compare ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.compose.project import Project, run

from bench.ingest import WRK_POST_SCRIPT, compare_interleaved
from bench.machine import describe_machine

RESULTS = Path(__file__).with_name("results")
SERVICES = ("redis", "postgres", "migrate", "vote", "worker", "result", "gateway")


def image_sizes(project: Project) -> dict[str, dict[str, object]]:
    config = json.loads(project.compose("config", "--format", "json").stdout)
    sizes: dict[str, dict[str, object]] = {}
    for service in sorted(config["services"]):
        image = config["services"][service].get("image")
        if not image or image in {v["image"] for v in sizes.values()}:
            continue
        found = run(["docker", "image", "inspect", image], check=False)
        if found.returncode != 0:
            continue
        data = json.loads(found.stdout)[0]
        sizes[service] = {
            "image": image,
            "mb": round(data["Size"] / 1e6, 1),
            "layers": len(data["RootFS"]["Layers"]),
        }
    # The app images' base, to show what the virtualenv adds on top of it.
    base = os.environ.get("PYTHON_IMAGE", "python:3.11-slim-bookworm")
    found = run(["docker", "image", "inspect", base], check=False)
    if found.returncode == 0:
        data = json.loads(found.stdout)[0]
        sizes["app base"] = {
            "image": base,
            "mb": round(data["Size"] / 1e6, 1),
            "layers": len(data["RootFS"]["Layers"]),
        }
    return sizes


def watch_health(project: Project, started: float, stop: threading.Event) -> dict[str, float]:
    """Seconds from `started` until each service was first healthy (migrate: exited 0)."""
    seen: dict[str, float] = {}
    while not stop.is_set() and len(seen) < len(SERVICES):
        listing = project.compose("ps", "--all", "--format", "json", check=False).stdout
        for line in listing.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            service = entry["Service"]
            done = entry.get("Health") == "healthy" or (
                service == "migrate" and entry.get("State") == "exited" and entry["ExitCode"] == 0
            )
            if done and service not in seen:
                seen[service] = round(time.monotonic() - started, 2)
        stop.wait(0.2)
    return seen


def timed_up(project: Project) -> dict[str, object]:
    stop = threading.Event()
    result: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    watcher = threading.Thread(
        target=lambda: result.setdefault("per_service", watch_health(project, started, stop))
    )
    watcher.start()
    total = project.up()
    stop.set()
    watcher.join()
    return {"total_s": round(total, 2), "per_service_s": result.get("per_service", {})}


def container_ip(project: Project, service: str, network: str) -> str:
    data = project.inspect(project.container(service))
    address: str = data["NetworkSettings"]["Networks"][f"{project.name}_{network}"]["IPAddress"]
    return address


def wait_for_drain(project: Project, timeout: float = 120) -> None:
    """Let the worker empty the queue, so one run's backlog does not slow the next."""
    probe = (
        "import json, urllib.request as u;"
        "print(json.load(u.urlopen('http://127.0.0.1:8080/stats'))['queue_depth'])"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = project.compose("exec", "-T", "worker", "python", "-c", probe).stdout.strip()
        if depth == "0":
            return
        time.sleep(1)
    raise RuntimeError(f"the queue did not drain within {timeout} s")


def wrk_ingest(project: Project, seconds: int, rounds: int, workdir: Path) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (scripts/install-test-deps installs it)"}
    script = workdir / "compose-post.lua"
    script.write_text(WRK_POST_SCRIPT)
    targets = {
        "published_port_via_gateway": f"http://127.0.0.1:{project.port}/",
        "gateway_container_direct": f"http://{container_ip(project, 'gateway', 'frontend')}:8080/",
        "vote_container_direct": f"http://{container_ip(project, 'vote', 'frontend')}:5000/",
    }
    # Interleaved rounds, each after a drained queue: drift on a shared machine (the
    # worker's backlog, other processes) then falls on every target alike.
    figures: dict[str, Any] = compare_interleaved(
        targets, seconds, rounds, script, before_each=lambda: wait_for_drain(project)
    )
    direct = figures["vote_container_direct"]
    via = figures["gateway_container_direct"]
    figures["gateway_cost"] = {
        "throughput_ratio": round(via["requests_per_s"] / direct["requests_per_s"], 3),
        "added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
        "added_p99_ms": round(via["p99_ms"] - direct["p99_ms"], 3),
    }
    return figures


def loadgen_ingest(project: Project, seconds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, target in (
        ("via_gateway", "http://gateway:8080"),
        ("direct_to_vote", "http://vote:5000"),
    ):
        env = {
            "LOADGEN_TARGET": target,
            "LOADGEN_SECONDS": str(seconds),
            "LOADGEN_CONNECTIONS": "8",
        }
        wait_for_drain(project)
        runner = Project(project.name, project.port, {**project.env, **env})
        output = runner.compose("--profile", "loadgen", "run", "--rm", "-T", "loadgen").stdout
        figures[name] = json.loads(
            [line for line in output.splitlines() if line.startswith("{")][-1]
        )
    figures["throughput_ratio"] = round(
        figures["via_gateway"]["votes_per_s"] / figures["direct_to_vote"]["votes_per_s"], 3
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short load runs (CI)")
    args = parser.parse_args()
    seconds, rounds = (5, 2) if args.quick else (10, 3)
    project = Project(name="cloudvote-bench", port=5002)
    RESULTS.mkdir(exist_ok=True)
    record: dict[str, Any] = {"harness": "compose", "measured_at": time.time(), "quick": args.quick}
    record["machine"] = describe_machine()
    record["engine"] = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    record["image_sizes"] = image_sizes(project)
    print(f"compose-bench: images {json.dumps(record['image_sizes'])}", flush=True)
    project.down(volumes=True)
    try:
        record["up_to_healthy"] = {"fresh_volumes": timed_up(project)}
        project.down()
        record["up_to_healthy"]["existing_volumes"] = timed_up(project)
        print(f"compose-bench: up {json.dumps(record['up_to_healthy'])}", flush=True)
        with tempfile.TemporaryDirectory() as workdir:
            wrk = wrk_ingest(project, seconds, rounds, Path(workdir))
        record["ingest_wrk"] = {"seconds": seconds, "rounds": rounds, "connections": 16, **wrk}
        print(f"compose-bench: wrk {json.dumps(record['ingest_wrk'])}", flush=True)
        record["ingest_loadgen"] = {"seconds": seconds, **loadgen_ingest(project, seconds)}
        print(f"compose-bench: loadgen {json.dumps(record['ingest_loadgen'])}", flush=True)
    finally:
        project.down(volumes=True)
    (RESULTS / "compose.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"compose-bench: wrote {RESULTS / 'compose.json'}", flush=True)


if __name__ == "__main__":
    main()
