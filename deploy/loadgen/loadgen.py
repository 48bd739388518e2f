"""Vote load for the compose profiles `loadgen` and `seed` (COMP-10). Standard library only.

    python loadgen.py load --target http://gateway:8080 --seconds 20 --connections 8
    python loadgen.py seed --target http://gateway:8080 --poll default --votes 500

`load` posts JSON votes as fast as the service takes them from a few keep-alive
connections, for a bounded time, and prints one JSON line: votes/s, latency percentiles
and status counts. `seed` casts a fixed number of votes spread unevenly over the poll's
options, so a fresh chart has a shape. Every request carries no cookie, so each vote
comes from a new voter and every accepted vote adds one to the total.

It runs inside the app image (python is there) with this file mounted as a config, so
the production image carries no load tool.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit

# Hard bounds, whatever the arguments say: a load run stops by itself.
MAX_SECONDS = 600
MAX_CONNECTIONS = 64
MAX_SEED_VOTES = 100_000
READY_TIMEOUT_SECONDS = 60


class Target:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"--target must be http://host[:port], got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30)


def fetch_options(target: Target, poll: str) -> list[str]:
    """The poll's option ids, waiting for the service to answer (it may still be starting)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        connection = target.connect()
        try:
            connection.request("GET", "/api/polls")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                for described in json.loads(body)["polls"]:
                    if described["id"] == poll:
                        return [option["id"] for option in described["options"]]
                raise SystemExit(f"poll {poll!r} is not served by {target.host}")
        except OSError:
            pass  # not up yet
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise SystemExit(f"{target.host}:{target.port} did not answer /api/polls in time")
        time.sleep(1)


def cast(connection: http.client.HTTPConnection, poll: str, option: str) -> int:
    body = json.dumps({"option": option})
    connection.request(
        "POST",
        f"/api/polls/{poll}/votes",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    return response.status


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return round(sorted_values[index] * 1000, 3)


def run_load(target: Target, poll: str, seconds: float, connections: int) -> dict[str, object]:
    options = fetch_options(target, poll)
    deadline = time.monotonic() + min(seconds, MAX_SECONDS)
    lock = threading.Lock()
    statuses: dict[str, int] = {}
    latencies: list[float] = []

    def client(number: int) -> None:
        connection = target.connect()
        mine: list[float] = []
        counts: dict[str, int] = {}
        sent = 0
        try:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    status = str(cast(connection, poll, options[(number + sent) % len(options)]))
                except (OSError, http.client.HTTPException):
                    status = "error"
                    connection.close()
                    connection = target.connect()
                mine.append(time.perf_counter() - started)
                counts[status] = counts.get(status, 0) + 1
                sent += 1
        finally:
            connection.close()
        with lock:
            latencies.extend(mine)
            for status, count in counts.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [
        threading.Thread(target=client, args=(n,)) for n in range(min(connections, MAX_CONNECTIONS))
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    accepted = statuses.get("202", 0)
    return {
        "mode": "load",
        "target": f"http://{target.host}:{target.port}",
        "poll": poll,
        "connections": len(threads),
        "seconds": round(elapsed, 3),
        "requests": sum(statuses.values()),
        "accepted": accepted,
        "votes_per_s": round(accepted / elapsed, 1) if elapsed else 0.0,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "statuses": statuses,
    }


def run_seed(target: Target, poll: str, votes: int) -> dict[str, object]:
    options = fetch_options(target, poll)
    # Weights 1, 2, 3, ...: the first option gets the fewest votes, the last the most.
    weights = list(range(1, len(options) + 1))
    plan = [
        option
        for option, weight in zip(options, weights, strict=True)
        for _ in range(votes * weight // sum(weights))
    ]
    plan += [options[-1]] * (min(votes, MAX_SEED_VOTES) - len(plan))
    connection = target.connect()
    accepted = 0
    try:
        for option in plan:
            for attempt in range(5):  # a 503 (Redis restarting) is retried, briefly
                try:
                    status = cast(connection, poll, option)
                except (OSError, http.client.HTTPException):
                    status = 0
                    connection.close()
                    connection = target.connect()
                if status == 202:
                    accepted += 1
                    break
                time.sleep(0.2 * (attempt + 1))
    finally:
        connection.close()
    return {"mode": "seed", "poll": poll, "requested": len(plan), "accepted": accepted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("load", "seed"))
    parser.add_argument("--target", default="http://gateway:8080")
    parser.add_argument("--poll", default="default")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--votes", type=int, default=500)
    args = parser.parse_args()
    target = Target(args.target)
    if args.mode == "load":
        report = run_load(target, args.poll, args.seconds, args.connections)
        ok = bool(report["accepted"])
    else:
        report = run_seed(target, args.poll, min(args.votes, MAX_SEED_VOTES))
        ok = report["accepted"] == report["requested"]
    print(json.dumps(report), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
