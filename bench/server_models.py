"""Server models for the result service: what holding thousands of idle streams costs.

The fan-out design (one change feed per process) works under any server; what differs is
what each open stream costs while it waits. This runs the same `cloudvote result` under
gunicorn's gevent worker (the default) and under gthread with a thread per stream, one
after the other against one PostgreSQL, and opens the same crowd on each:

- CPU per stream to connect and get the first event, and the time for all of them;
- memory per stream (RSS of master and workers, with the crowd minus without);
- the server's CPU while it only holds the streams (keep-alives);
- `/healthz` with the crowd open;
- OS threads the server needed.

gthread's default of 32 threads per process is the setup the old result service had; it
cannot hold more streams than threads, so it is given a thread per stream here.
"""

from __future__ import annotations

import json
import sys
import time

import psutil
from tests.support.probes import probe_latencies
from tests.support.sse_crowd import ThreadedSseCrowd

from bench.stack import Stack

WEB_CONCURRENCY = 2
# Replaces the result entry of WORKER_MODELS for one run, then runs the normal CLI with
# the arguments after the model.
_LAUNCH = """
import json, sys
import cloudvote.entrypoints.server as server
model = json.loads(sys.argv[1])
if model:
    server.WORKER_MODELS["result"] = model
from cloudvote.entrypoints.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _rss(pid: int) -> int:
    return sum(member.memory_info().rss for member in _tree(pid))


def _cpu(pid: int) -> float:
    return sum(sum(member.cpu_times()[:2]) for member in _tree(pid))


def _measure_one(
    stack: Stack, name: str, model: dict[str, object] | None, streams: int
) -> dict[str, float]:
    base = stack.start(
        "result",
        launcher=(sys.executable, "-c", _LAUNCH, json.dumps(model)),
        WEB_CONCURRENCY=str(WEB_CONCURRENCY),
    )
    pid = stack.pid_of(base)
    time.sleep(1)  # let the workers finish booting before the idle readings
    rss_idle, cpu_before = _rss(pid), _cpu(pid)
    started = time.monotonic()
    with ThreadedSseCrowd(
        f"{base}/api/polls/default/results/stream", answer_timeout=30, open_timeout=60
    ) as crowd:
        crowd.open(streams)
        with_event = crowd.wait_for_first_events(timeout=60)
        all_in = time.monotonic() - started
        cpu_connected = _cpu(pid)
        time.sleep(3)
        rss_held = _rss(pid)
        cpu_hold, hold_started = _cpu(pid), time.monotonic()
        time.sleep(10)
        holding = (_cpu(pid) - cpu_hold) / (time.monotonic() - hold_started)
        health = probe_latencies(f"{base}/healthz", calls=100, timeout=2)
        threads = sum(member.num_threads() for member in _tree(pid))
    stack.processes[-1].terminate()
    stack.processes[-1].wait(20)
    return {
        "model": model or {"worker_class": "gevent"},
        "streams": streams,
        "with_first_event": with_event,
        "all_first_events_s": round(all_in, 2),
        "cpu_us_per_stream_connect": round((cpu_connected - cpu_before) / max(with_event, 1) * 1e6),
        "rss_mib_idle": round(rss_idle / 2**20, 1),
        "rss_mib_with_streams": round(rss_held / 2**20, 1),
        "rss_kib_per_stream": round((rss_held - rss_idle) / max(with_event, 1) / 1024, 1),
        "cpu_cores_while_holding": round(holding, 3),
        "healthz_p50_ms": round(health.p50 * 1e3, 1),
        "healthz_p99_ms": round(health.p99 * 1e3, 1),
        "os_threads": threads,
    }


def measure_server_models(stack: Stack, quick: bool = False) -> dict[str, object]:
    streams = 1_000 if quick else 5_000
    per_process = streams // WEB_CONCURRENCY + 100
    stack.reset_data()
    models: dict[str, dict[str, object] | None] = {
        "gevent": None,
        "gthread": {"worker_class": "gthread", "threads": per_process},
    }
    measured = {}
    for name, model in models.items():
        print(f"bench: models: {name} with {streams} streams ...", flush=True)
        measured[name] = _measure_one(stack, name, model, streams)
    gevent, gthread = measured["gevent"], measured["gthread"]
    return {
        "web_concurrency": WEB_CONCURRENCY,
        "models": measured,
        "gthread_over_gevent": {
            key: round(gthread[key] / gevent[key], 2)
            for key in ("cpu_us_per_stream_connect", "rss_kib_per_stream", "os_threads")
            if gevent[key]
        },
    }
