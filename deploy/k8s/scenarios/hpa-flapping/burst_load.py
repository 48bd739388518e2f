"""Bursts of votes, then silence, repeated: load that makes an unstabilised HPA flap.

    python burst_load.py --target=http://gateway:80 --on=45 --off=45 --cycles=8

Each burst posts JSON votes on the default poll from --connections keep-alive
connections for --on seconds; then nothing for --off seconds. Prints one JSON line per
burst. Bounded: at most 20 cycles of at most 120 s each, whatever the arguments say.
Standard library only (it runs on the vote image's Python).
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

MAX_CYCLES = 20
MAX_PHASE_SECONDS = 120


def burst(
    host: str, port: int, seconds: float, counts: dict[str, int], lock: threading.Lock
) -> None:
    deadline = time.monotonic() + seconds
    body = json.dumps({"option": "a"})
    connection = http.client.HTTPConnection(host, port, timeout=5)
    while time.monotonic() < deadline:
        try:
            connection.request(
                "POST",
                "/api/polls/default/votes",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            key = str(response.status)
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=5)
            key = "error"
            time.sleep(0.2)
        with lock:
            counts[key] = counts.get(key, 0) + 1
    connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--on", type=float, default=45)
    parser.add_argument("--off", type=float, default=45)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args(argv)
    parts = urlsplit(args.target)
    host, port = parts.hostname or "gateway", parts.port or 80
    on = min(args.on, MAX_PHASE_SECONDS)
    off = min(args.off, MAX_PHASE_SECONDS)
    for cycle in range(min(args.cycles, MAX_CYCLES)):
        counts: dict[str, int] = {}
        lock = threading.Lock()
        threads = [
            threading.Thread(target=burst, args=(host, port, on, counts, lock))
            for _ in range(max(1, min(args.connections, 16)))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"cycle": cycle + 1, "seconds": on, "responses": counts}), flush=True)
        time.sleep(off)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
