"""The snapshot CronJob (WL-06): every poll's tallies, saved as one JSON file.

    python snapshot_results.py --api=http://result:5000 --out=/snapshots --keep=96

Reads the public results API (GET /api/polls, then /api/polls/<poll>/results for each),
writes results-<UTC time>.json to --out atomically (a temporary file, then a rename, so
a reader never sees half a file), and deletes all but the newest --keep snapshots.
Retries a refused or timed-out connection for up to --connect-wait seconds: a new pod's
NetworkPolicy rules are programmed asynchronously (kube-router, Calico and Cilium all do
it a moment after the pod starts), so a Job's very first request can be refused although
the policy allows it. Exits 1 if the API still does not answer, so the Job is marked
Failed and retried. Standard
library only: it runs on the result image's Python (deploy/k8s/base/snapshot.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def get_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http API
        return json.load(response)


def take_snapshot(api: str, timeout: float) -> dict[str, Any]:
    listing = get_json(f"{api}/api/polls", timeout)
    polls = listing.get("polls", listing) if isinstance(listing, dict) else listing
    results = {}
    for poll in polls:
        poll_id = poll["id"] if isinstance(poll, dict) else str(poll)
        quoted = urllib.parse.quote(poll_id, safe="")
        results[poll_id] = get_json(f"{api}/api/polls/{quoted}/results", timeout)
    return {
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": api,
        "results": results,
    }


def write_snapshot(out: Path, snapshot: dict[str, Any], keep: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = snapshot["taken_at"].replace(":", "").replace("-", "")
    target = out / f"results-{stamp}.json"
    partial = out / f".{target.name}.partial"
    partial.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with partial.open("rb") as written:
        os.fsync(written.fileno())
    partial.replace(target)
    for old in sorted(out.glob("results-*.json"))[:-keep]:
        old.unlink()
    return target


def failed(error: Exception) -> int:
    print(json.dumps({"event": "snapshot.failed", "error": str(error)}), file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="the result service, e.g. http://result:5000")
    parser.add_argument("--out", type=Path, required=True, help="directory for the snapshots")
    parser.add_argument("--keep", type=int, default=96, help="how many snapshots to keep")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument(
        "--connect-wait", type=float, default=30.0, help="seconds to retry a failed connection"
    )
    args = parser.parse_args(argv)
    if args.keep < 1:
        parser.error("--keep must be at least 1")
    deadline = time.monotonic() + args.connect_wait
    while True:
        try:
            snapshot = take_snapshot(args.api.rstrip("/"), args.timeout)
            break
        except urllib.error.HTTPError as error:  # the API answered: retrying will not help
            return failed(error)
        except (OSError, urllib.error.URLError) as error:
            if time.monotonic() >= deadline:
                return failed(error)
            time.sleep(1)
        except (ValueError, KeyError, TypeError) as error:
            return failed(error)
    path = write_snapshot(args.out, snapshot, args.keep)
    print(
        json.dumps(
            {"event": "snapshot.written", "path": str(path), "polls": len(snapshot["results"])}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
