"""Ingest: how fast the vote service accepts durable votes, against its own ceiling."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

from bench.stack import Stack

WRK_POST_SCRIPT = """
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""
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
    url: str, seconds: int, script: Path | None = None, servers: Iterable[int] = ()
) -> dict[str, float]:
    """Run wrk; with `servers` (pids), also report their CPU per request.

    CPU per request does not depend on what else the machine is doing, unlike req/s,
    so it is the figure to compare on a busy or shared machine.
    """
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    processes = [psutil.Process(pid) for pid in servers]
    before = cpu_seconds(processes)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = parse_wrk(output)
    if processes:
        requests = figures["requests"]
        used = cpu_seconds(processes) - before
        figures["server_cpu_us_per_request"] = round(used / requests * 1e6, 1)
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
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(rate[1]),
        "requests": float(count[1]) if count else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx_3xx": float(errors[1]) if errors else 0.0,
        "socket_errors": 0.0 if socket_errors is None else 1.0,
    }


def measure_ingest(stack: Stack, seconds: int, web_concurrency: int = 2) -> dict[str, object]:
    script = stack.workdir / "post.lua"
    script.write_text(WRK_POST_SCRIPT)
    base = stack.start("vote", WEB_CONCURRENCY=str(web_concurrency))
    # The vote server's process tree and Redis: everything a vote costs on the server side.
    servers = (stack.processes[-1].pid, stack.redis.pid or 0)
    run_wrk(f"{base}/", 2, script)  # warm-up: connections, imports, Redis pages
    votes = run_wrk(f"{base}/", seconds, script, servers)
    ceiling = run_wrk(f"{base}/healthz", seconds, servers=servers)
    depth = stack.redis.client().xlen("votes")
    stack.stop_all()
    return {
        "request": "POST / vote=a (form), 16 connections, wrk on the same machine",
        "web_concurrency": web_concurrency,
        "votes": votes,
        "healthz_ceiling": ceiling,
        "ratio_of_ceiling": round(votes["requests_per_s"] / ceiling["requests_per_s"], 3),
        "votes_in_stream_after_run": depth,
    }
