"""Ingest: how fast the vote service accepts durable votes, against its own ceiling."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.stack import Stack

WRK_POST_SCRIPT = """
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(url: str, seconds: int, script: Path | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk printed no {percent}% latency:\n{output}")
        return round(float(match[1]) * _UNITS[match[2]], 3)

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise ValueError(f"wrk printed no rate:\n{output}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(rate[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx_3xx": float(errors[1]) if errors else 0.0,
        "socket_errors": 0.0 if socket_errors is None else 1.0,
    }


def measure_ingest(stack: Stack, seconds: int, web_concurrency: int = 2) -> dict[str, object]:
    script = stack.workdir / "post.lua"
    script.write_text(WRK_POST_SCRIPT)
    base = stack.start("vote", WEB_CONCURRENCY=str(web_concurrency))
    run_wrk(f"{base}/", 2, script)  # warm-up: connections, imports, Redis pages
    votes = run_wrk(f"{base}/", seconds, script)
    ceiling = run_wrk(f"{base}/healthz", seconds)
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
