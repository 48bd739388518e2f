"""Ingest: how fast the vote service accepts durable votes, against its own ceiling."""

from __future__ import annotations

import functools
import os
import re
import statistics
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from bench.peer.app import VOTES_LIST
from bench.peer.server import running_peer
from bench.stack import Stack

WRK_POST_SCRIPT = """
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""
# The JSON API, each request from a new voter (as SteadyVotes in tests/support/load.py), so
# every vote is a new row downstream and none is a cheap re-vote. The id is a random
# per-thread prefix and a counter: unique without costing wrk a random number per byte.
WRK_API_VOTE_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"option": "a"}'
wrk.headers["Content-Type"] = "application/json"
local prefix, counter = "", 0
function init(args)
  local urandom = assert(io.open("/dev/urandom", "rb"))
  local bytes = urandom:read(8)
  urandom:close()
  prefix = (bytes:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end
function request()
  counter = counter + 1
  wrk.headers["Cookie"] = "voter_id=" .. prefix .. string.format("%016x", counter)
  return wrk.format()
end
"""
API_VOTE_PATH = "/api/polls/default/votes"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU of the processes, counting children a server has forked."""
    total = 0.0
    for process in processes:
        for member in [process, *process.children(recursive=True)]:
            times = member.cpu_times()
            total += times.user + times.system
    return total


def run_wrk(
    url: str,
    seconds: int,
    script: Path | None = None,
    servers: Iterable[int] = (),
    connections: int = 16,
    cpu_clock: Callable[[], float] | None = None,
) -> dict[str, float]:
    """Run wrk; with `servers` (pids) or a `cpu_clock`, also report server CPU per request.

    CPU per request does not depend on what else the machine is doing, unlike req/s,
    so it is the figure to compare on a busy or shared machine. `cpu_clock` returns the
    servers' CPU seconds so far, for servers that are not this machine's child processes
    (pods: bench/cluster_bench.py reads their cgroups).
    """
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    processes = [psutil.Process(pid) for pid in servers]
    if cpu_clock is None and processes:
        cpu_clock = functools.partial(cpu_seconds, processes)
    before = cpu_clock() if cpu_clock else 0.0
    # wrk stops itself after `seconds`; the timeout guards against a hung wrk (it can hang
    # when its target's address disappears mid-run).
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 15
    ).stdout
    figures = parse_wrk(output)
    if cpu_clock and figures["requests"]:
        used = cpu_clock() - before
        figures["server_cpu_us_per_request"] = round(used / figures["requests"] * 1e6, 1)
    return figures


def parse_wrk(output: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk printed no {percent}% latency:\n{output}")
        return round(float(match[1]) * _UNITS[match[2]], 3)

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise ValueError(f"wrk printed no rate:\n{output}")
    count = re.search(r"(\d+) requests in", output)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    # "Socket errors: connect 0, read 3, write 0, timeout 0": their sum.
    socket_errors = re.search(r"Socket errors: (.*)", output)
    socket_error_count = sum(map(int, re.findall(r"\d+", socket_errors[1]))) if socket_errors else 0
    return {
        "requests_per_s": float(rate[1]),
        "requests": float(count[1]) if count else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx_3xx": float(errors[1]) if errors else 0.0,
        "socket_errors": float(socket_error_count),
    }


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs (only figures that every run has)."""
    if not runs:
        return {}
    keys = [key for key in runs[0] if key != "round" and all(key in one for one in runs)]
    return {key: round(statistics.median(one[key] for one in runs), 3) for key in keys}


class StopRounds(Exception):
    """Raised by `before_each` when the comparison can no longer be fair (a target went away)."""


def compare_interleaved(
    targets: Mapping[str, str],
    seconds: int,
    rounds: int,
    script: Path | None = None,
    before_each: Callable[[], object] | None = None,
    cpu_clock: Callable[[], float] | None = None,
    scripts: Mapping[str, Path | None] | None = None,
    cpu_clocks: Mapping[str, Callable[[], float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The same wrk load on every target, in rounds; per target, the median run and all runs.

    On a shared machine the load from elsewhere drifts over seconds and minutes. Taking
    turns spreads that drift over every target alike, and rotating the order each round
    stops one target always running right after another (or after `before_each`, such as
    waiting for a queue to drain). Each run records its round, to pair runs up, and the
    1-minute load average it started at, to show how busy the machine was. A run that
    fails is recorded as such and the rounds go on; `before_each` may end them early by
    raising StopRounds.

    `scripts` and `cpu_clocks` give a target its own wrk script or server CPU clock (such
    as a GET on the same server as a ceiling, or servers that are different processes),
    in place of `script` and `cpu_clock`.
    """
    if not targets:
        return {}
    script_of = {name: script for name in targets} | dict(scripts or {})
    clock_of = {name: cpu_clock for name in targets} | dict(cpu_clocks or {})
    for name, url in targets.items():
        run_wrk(url, 2, script_of[name])  # warm-up: connections, keep-alive pools, imports
    names = list(targets)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    failed: dict[str, list[str]] = {name: [] for name in names}
    stopped = None
    for number in range(rounds):
        shift = number % len(names)
        try:
            for name in names[shift:] + names[:shift]:
                if before_each is not None:
                    before_each()
                load = os.getloadavg()[0]
                try:
                    figures = run_wrk(
                        targets[name], seconds, script_of[name], cpu_clock=clock_of[name]
                    )
                except (subprocess.SubprocessError, ValueError) as error:
                    failed[name].append(f"round {number}: {type(error).__name__}: {error}"[:300])
                    continue
                runs[name].append({"round": number, **figures, "load_1m": round(load, 2)})
        except StopRounds as reason:
            stopped = f"after {number} rounds: {reason}"
            break
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = {"url": targets[name], **median_run(runs[name]), "rounds": runs[name]}
        if failed[name]:
            entry["failed_runs"] = failed[name]
        if stopped:
            entry["stopped_early"] = stopped
        result[name] = entry
    return result


INGEST_ROUNDS = 5
# The figures given per target as a median over the rounds and a [min, max] range.
RANGED = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
PEER_DESCRIPTION = (
    "bench/peer: example-voting-app's vote service rebuilt (Flask, gunicorn 4 sync workers, "
    "--keep-alive 0, one RPUSH per vote, ballot page rendered with 200), on its own Redis "
    "with no AOF"
)


def paired_ratio(
    numerators: list[dict[str, float]], denominators: list[dict[str, float]], key: str
) -> dict[str, Any]:
    """`key`'s ratio within each round both sides ran, then its median and range.

    Runs in one round are seconds apart, so they saw nearly the same load from elsewhere;
    a ratio taken within the round cancels most of that drift, and a ratio of medians does not.
    """
    below = {run["round"]: run[key] for run in denominators if run.get(key)}
    per_round = [
        round(run[key] / below[run["round"]], 3)
        for run in numerators
        if key in run and run["round"] in below
    ]
    if not per_round:
        return {"median": None, "range": None, "per_round": []}
    return {
        "median": round(statistics.median(per_round), 3),
        "range": [min(per_round), max(per_round)],
        "per_round": per_round,
    }


def summarize_target(entry: dict[str, Any]) -> dict[str, Any]:
    """A compare_interleaved entry with each figure's range and the errors summed over runs."""
    runs: list[dict[str, float]] = entry["rounds"]
    ranges = {
        key: [min(run[key] for run in runs), max(run[key] for run in runs)]
        for key in RANGED
        if runs and all(key in run for run in runs)
    }
    errors = {
        "non_2xx_3xx": sum(run["non_2xx_3xx"] for run in runs),
        "socket_errors": sum(run["socket_errors"] for run in runs),
        "failed_runs": len(entry.get("failed_runs", [])),
    }
    rest = {key: value for key, value in entry.items() if key != "rounds"}
    return {**rest, "range": ranges, "errors": errors, "rounds": runs}


def measure_ingest(
    stack: Stack, seconds: int, web_concurrency: int = 2, rounds: int = INGEST_ROUNDS
) -> dict[str, object]:
    """cloudvote's vote service, its /healthz and the reference peer, taking turns.

    All three get the same wrk load (`POST /` form `vote=a` for the two vote services,
    `GET /healthz` on cloudvote's server as its ceiling) in `rounds` rounds of `seconds`.
    Server CPU per request counts each target's server process tree and its own Redis.
    Every ratio is taken within a round, then its median and range are reported.
    """
    script = stack.workdir / "post.lua"
    script.write_text(WRK_POST_SCRIPT)
    base = stack.start("vote", WEB_CONCURRENCY=str(web_concurrency))
    # The vote server's process tree and Redis: everything a vote costs on the server side.
    ours = functools.partial(
        cpu_seconds, [psutil.Process(stack.processes[-1].pid), psutil.Process(stack.redis.pid)]
    )
    with running_peer(stack.workdir) as peer:
        theirs = functools.partial(cpu_seconds, [psutil.Process(pid) for pid in peer.server_pids])
        compared = compare_interleaved(
            {"cloudvote": f"{base}/", "healthz": f"{base}/healthz", "peer": f"{peer.url}/"},
            seconds,
            rounds,
            script,
            scripts={"healthz": None},
            cpu_clocks={"cloudvote": ours, "healthz": ours, "peer": theirs},
        )
        with peer.redis.client() as client:
            peer_depth = client.llen(VOTES_LIST)
    with stack.redis.client() as client:
        depth = client.xlen("votes")
    stack.stop_all()
    votes, ceiling, reference = (
        summarize_target(compared[name]) for name in ("cloudvote", "healthz", "peer")
    )

    def ratio(top: dict[str, Any], bottom: dict[str, Any], key: str) -> dict[str, Any]:
        return paired_ratio(top["rounds"], bottom["rounds"], key)

    cloudvote_over_peer = {key: ratio(votes, reference, key) for key in RANGED}
    of_ceiling = ratio(votes, ceiling, "requests_per_s")
    cpu_of_healthz = ratio(votes, ceiling, "server_cpu_us_per_request")
    p99_below = [
        ours_run["p99_ms"] < peer_run["p50_ms"]
        for ours_run in votes["rounds"]
        for peer_run in reference["rounds"]
        if ours_run["round"] == peer_run["round"]
    ]
    return {
        "request": "POST / vote=a (form), wrk -t2 -c16 on the same machine",
        "method": (
            f"{rounds} rounds of {seconds} s per target, order rotated each round; figures "
            "are medians over the rounds, ratios are taken within each round"
        ),
        "web_concurrency": web_concurrency,
        "votes": votes,
        "healthz_ceiling": ceiling,
        "ratio_of_ceiling": of_ceiling["median"],
        "cpu_vote_over_healthz": cpu_of_healthz["median"],
        "peer": {"what": PEER_DESCRIPTION, **reference},
        "cloudvote_over_peer": cloudvote_over_peer["requests_per_s"]["median"],
        "cloudvote_p99_below_peer_p50": bool(
            votes.get("p99_ms") is not None
            and reference.get("p50_ms") is not None
            and votes["p99_ms"] < reference["p50_ms"]
        ),
        "cloudvote_p99_below_peer_p50_rounds": f"{sum(p99_below)} of {len(p99_below)}",
        "paired_ratios": {
            "vote_over_healthz": {
                "requests_per_s": of_ceiling,
                "server_cpu_us_per_request": cpu_of_healthz,
            },
            "cloudvote_over_peer": cloudvote_over_peer,
        },
        "votes_in_stream_after_run": depth,
        "votes_in_peer_list_after_run": peer_depth,
    }
