"""`make bench`: run the harnesses and write JSON and a PNG summary to bench/results/."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.drain import measure_drain
from bench.fanout import measure_fanout
from bench.freshness import measure_freshness
from bench.ingest import measure_ingest
from bench.machine import describe_machine
from bench.server_models import measure_server_models
from bench.stack import running_stack
from bench.tracing import measure_tracing
from bench.vm_vs_container import measure_vm_vs_container

RESULTS = Path(__file__).with_name("results")
HARNESSES = ("ingest", "drain", "freshness", "fanout", "models", "tracing", "vm_vs_container")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated subset of " + ",".join(HARNESSES))
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(HARNESSES)
    RESULTS.mkdir(exist_ok=True)
    machine = describe_machine()
    with running_stack() as stack:
        for name in chosen:
            print(f"bench: {name} ...", flush=True)
            started = time.time()
            if name == "ingest":
                figures = measure_ingest(stack, seconds=3 if args.quick else 10)
            elif name == "drain":
                votes = 20_000 if args.quick else 200_000
                figures = measure_drain(stack, votes=votes, voters=votes // 4)
            elif name == "freshness":
                figures = measure_freshness(stack, rate=1000, seconds=5 if args.quick else 20)
            elif name == "fanout":
                figures = measure_fanout(stack, quick=args.quick)
            elif name == "models":
                figures = measure_server_models(stack, quick=args.quick)
            elif name == "tracing":
                figures = measure_tracing(stack, seconds=3 if args.quick else 5)
            elif name == "vm_vs_container":
                # Needs no part of the stack: its own VMs and containers (plus a PNG).
                figures = measure_vm_vs_container(quick=args.quick, results=RESULTS)
            else:
                raise SystemExit(f"unknown harness {name!r}; choose from {HARNESSES}")
            record = {"harness": name, "measured_at": started, "machine": machine, **figures}
            (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
            shown = {k: v for k, v in figures.items() if k not in ("delays_ms", "setups")}
            print(f"bench: {name}: {json.dumps(shown)}", flush=True)
    from bench.plot import plot_summary, plot_tracing

    plot_summary(RESULTS)
    if "tracing" in chosen:
        plot_tracing(RESULTS)


if __name__ == "__main__":
    main()
