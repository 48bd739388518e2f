"""Fan-out: live results to thousands of open streams from one result service.

The crowd (tests/support/sse_crowd.py) grows through the levels on one stack (vote, worker,
and result with WEB_CONCURRENCY=2), so every figure at a level is taken with that many
viewers connected. Growing one crowd, rather than a fresh one per level, matters: the
server looks for viewers that left only at each keep-alive (every 15 s), so a closed crowd
would still be counted by the next level.

At each level: how many streams got their first event, the RSS of result's master and
workers, PostgreSQL transactions over an idle window (no votes, so the worker commits
nothing and every transaction is result's), and result's own count of store reads while a
slow steady vote load runs. At the top level, also: vote 202 → event on every stream, over
all (stream, vote) pairs, and `/healthz` from a separate client. Last, the monolith.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families
from tests.support.load import SteadyVotes
from tests.support.probes import probe_latencies
from tests.support.servers import free_port
from tests.support.sse_crowd import StreamRecord, ThreadedSseCrowd

from bench.ingest import cpu_seconds
from bench.stack import CLOUDVOTE, Stack

POLL = "default"
WEB_CONCURRENCY = 2
LOAD_VOTES_PER_S = 10
PG_STATS_IDLE_FLUSH_S = 11.0


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ranked = sorted(values)
    cuts = statistics.quantiles(ranked, n=100) if len(ranked) >= 2 else ranked * 99
    return {"p50_ms": _ms(cuts[49]), "p99_ms": _ms(cuts[98]), "max_ms": _ms(ranked[-1])}


def tree_rss(pid: int) -> int:
    """RSS in bytes of a server and every process it forked (gunicorn's workers)."""
    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])


def metric_total(base: str, name: str) -> float:
    """The sum of every sample of `name` on a service's /metrics."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def pg_transactions(stack: Stack) -> int:
    """Commits plus rollbacks in the app's database so far (a new connection each time, so
    the statistics snapshot is fresh; the reading itself is one more transaction)."""
    with stack.postgres.connect() as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def api_total(base: str) -> int:
    body = requests.get(f"{base}/api/polls/{POLL}/results", timeout=10).json()
    return int(body["total"])


def settled_total(base: str, quiet: float = 1.5, timeout: float = 60) -> int:
    """The total once the worker has drained the last load: unchanged for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = api_total(base), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = api_total(base)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise RuntimeError(f"the total kept changing for {timeout}s")


def first_event_delays(records: list[StreamRecord]) -> list[float]:
    return [r.first_event_at - r.opened_at for r in records if r.first_event_at is not None]


class _Voter:
    """Votes through the JSON API, each from a new voter, on one kept-alive connection."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)

    def cast(self) -> float:
        """Send one vote; return the monotonic time its 202 arrived."""
        self.connection.request(
            "POST",
            f"/api/polls/{POLL}/votes",
            json.dumps({"option": "a"}),
            {"Content-Type": "application/json", "Cookie": f"voter_id={secrets.token_hex(16)}"},
        )
        response = self.connection.getresponse()
        response.read()
        accepted = time.monotonic()
        if response.status != 202:
            raise RuntimeError(f"vote answered {response.status}")
        return accepted

    def close(self) -> None:
        self.connection.close()


def _level(
    stack: Stack,
    crowd: ThreadedSseCrowd,
    result: str,
    vote: str,
    result_pid: int,
    viewers: int,
    baseline_rss: int,
    probe_xacts: int,
    idle_seconds: float,
    load_seconds: float,
) -> dict[str, object]:
    before = len(crowd.streams())
    crowd.open(viewers - before)
    crowd.wait_for_first_events(timeout=30)
    streams = crowd.streams()
    new = streams[before:]
    # An idle backend publishes its transaction counts up to 10 s late (PostgreSQL 15's
    # idle flush interval): wait that out, so the opening's reads stay out of the window.
    time.sleep(PG_STATS_IDLE_FLUSH_S)
    rss = tree_rss(result_pid)

    # No votes: the worker commits nothing, so every transaction is result's.
    xacts_before = pg_transactions(stack)
    idle_reads_before = metric_total(result, "cloudvote_results_store_reads_total")
    time.sleep(idle_seconds)
    idle_xacts = pg_transactions(stack) - xacts_before - probe_xacts
    idle_reads = metric_total(result, "cloudvote_results_store_reads_total") - idle_reads_before

    reads_before = metric_total(result, "cloudvote_results_store_reads_total")
    parts = urlsplit(vote)
    with SteadyVotes(
        parts.hostname or "", parts.port or 80, per_second=LOAD_VOTES_PER_S, threads=2
    ) as load:
        time.sleep(load_seconds)
    reads = metric_total(result, "cloudvote_results_store_reads_total") - reads_before

    return {
        "viewers": viewers,
        "answered": dict(crowd.outcomes()),
        "with_first_event": sum(1 for r in streams if r.first_event_at is not None),
        "ended_by_server": sum(1 for r in streams if r.status == 200 and r.ended_at),
        "first_event_of_new_streams": _quantiles(first_event_delays(new)),
        "server_streams_open": metric_total(result, "cloudvote_result_streams_open"),
        "rss_mib": round(rss / 2**20, 1),
        "rss_per_stream_kib": round((rss - baseline_rss) / viewers / 1024, 1),
        "idle_window_s": idle_seconds,
        "idle_pg_xacts_per_s": round(idle_xacts / idle_seconds, 2),
        "idle_pg_xacts_per_s_per_process": round(idle_xacts / idle_seconds / WEB_CONCURRENCY, 2),
        "idle_store_reads_per_s": round(idle_reads / idle_seconds, 2),
        "load_votes_per_s": round(len(load.accepted) / load_seconds, 1),
        "store_reads_per_s_under_load": round(reads / load_seconds, 2),
        "store_reads_per_s_per_process": round(reads / load_seconds / WEB_CONCURRENCY, 2),
    }


def _delivery(
    crowd: ThreadedSseCrowd, result: str, result_pid: int, vote: str, votes: int, spacing: float
) -> tuple[dict[str, object], list[float]]:
    """Vote 202 → event, for every (open stream, vote) pair."""
    base = settled_total(result)
    crowd.wait_for_total(base, timeout=30)  # every stream caught up with the load phase
    voter = _Voter(vote)
    accepted: list[float] = []
    servers = psutil.Process(result_pid)
    started, result_cpu, crowd_cpu = time.monotonic(), cpu_seconds([servers]), _own_cpu()
    try:
        for _ in range(votes):
            accepted.append(voter.cast())
            time.sleep(spacing)
    finally:
        voter.close()
    reached = crowd.wait_for_total(base + votes, timeout=30)
    wall = time.monotonic() - started
    result_cpu, crowd_cpu = cpu_seconds([servers]) - result_cpu, _own_cpu() - crowd_cpu
    live = crowd.live()
    delays, missing = [], 0
    per_vote: list[list[float]] = [[] for _ in accepted]
    for record in live:
        for number, at in enumerate(accepted, start=1):
            seen = record.first_total_at(base + number)
            if seen is None:
                missing += 1
            else:
                delays.append(seen - at)
                per_vote[number - 1].append(seen - at)
    firsts = [min(one) for one in per_vote if one]
    lasts = [max(one) for one in per_vote if one]
    return {
        "viewers": len(live),
        "votes": votes,
        "spacing_s": spacing,
        "reached_last_vote": reached,
        "pairs": len(delays),
        "pairs_missing": missing,
        **_quantiles(delays),
        # Per vote, its first and its last stream: the spread is the fan-out's own time.
        "first_stream_median_ms": _ms(statistics.median(firsts)) if firsts else None,
        "last_stream_median_ms": _ms(statistics.median(lasts)) if lasts else None,
        # CPU share of one core over the phase: result's processes, and this one (the crowd).
        "result_cpu_cores": round(result_cpu / wall, 2),
        "crowd_cpu_cores": round(crowd_cpu / wall, 2),
    }, delays


def _own_cpu() -> float:
    """This process alone (its children are the servers): the crowd and the voter."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _monolith(viewers: int) -> dict[str, object]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    with tempfile.TemporaryDirectory(prefix="cloudvote-bench-dev-") as data:
        process = subprocess.Popen(
            [CLOUDVOTE, "dev", "--port", str(port), "--data-dir", data],
            env={**env, "LOG_LEVEL": "WARNING", "TMPDIR": data},
            stdout=subprocess.DEVNULL,
            stderr=open(Path(data) / "dev.log", "wb"),  # noqa: SIM115
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{base}/readyz", timeout=3).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the monolith did not become ready")
                time.sleep(0.1)
            stream = f"{base}/api/polls/{POLL}/results/stream"
            with ThreadedSseCrowd(stream, viewers, answer_timeout=20, open_timeout=60) as crowd:
                crowd.wait_for_first_events(timeout=30)
                streams = crowd.streams()
                health = probe_latencies(f"{base}/healthz", calls=50, timeout=2)
                voter = _Voter(base)
                try:
                    voter.cast()
                finally:
                    voter.close()
                reached = crowd.wait_for_total(1, timeout=30)
                outcomes = dict(crowd.outcomes())
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {
        "viewers": viewers,
        "answered": outcomes,
        "with_first_event": sum(1 for r in streams if r.first_event_at is not None),
        "first_event": _quantiles(first_event_delays(streams)),
        "vote_reached": reached,
        "healthz": {
            "calls": len(health.seconds),
            "p50_ms": _ms(health.p50),
            "p99_ms": _ms(health.p99),
        },
    }


def measure_fanout(stack: Stack, quick: bool = False) -> dict[str, object]:
    levels = (10, 500) if quick else (10, 1_000, 5_000)
    idle_seconds, load_seconds = (5.0, 5.0) if quick else (10.0, 10.0)
    votes = 5 if quick else 20
    stack.reset_data()
    stack.migrate()
    # What two readings cost by themselves (the first one's connection and query), with
    # nothing else connected yet.
    first = pg_transactions(stack)
    probe_xacts = pg_transactions(stack) - first
    vote = stack.start("vote")
    stack.start("worker")
    result = stack.start("result", WEB_CONCURRENCY=str(WEB_CONCURRENCY))
    result_pid = stack.pid_of(result)
    time.sleep(1)
    baseline_rss = tree_rss(result_pid)
    stream = f"{result}/api/polls/{POLL}/results/stream"
    measured = []
    with ThreadedSseCrowd(stream, answer_timeout=20, open_timeout=60) as crowd:
        for viewers in levels:
            print(f"bench: fanout: {viewers} viewers ...", flush=True)
            measured.append(
                _level(
                    stack,
                    crowd,
                    result,
                    vote,
                    result_pid,
                    viewers,
                    baseline_rss,
                    probe_xacts,
                    idle_seconds,
                    load_seconds,
                )
            )
        print(f"bench: fanout: delivery and /healthz at {levels[-1]} viewers ...", flush=True)
        delivery, delays = _delivery(crowd, result, result_pid, vote, votes, spacing=0.5)
        health = probe_latencies(f"{result}/healthz", calls=50 if quick else 200, timeout=2)
    stack.stop_all()
    monolith_viewers = 200 if quick else 1_000
    print(f"bench: fanout: monolith at {monolith_viewers} viewers ...", flush=True)
    monolith = _monolith(monolith_viewers)
    delays.sort()
    return {
        "web_concurrency": WEB_CONCURRENCY,
        "pg_xacts_per_reading_pair": probe_xacts,
        "baseline_rss_mib": round(baseline_rss / 2**20, 1),
        "levels": measured,
        "delivery": delivery,
        "healthz": {
            "viewers": levels[-1],
            "calls": len(health.seconds),
            "p50_ms": _ms(health.p50),
            "p99_ms": _ms(health.p99),
            "max_ms": _ms(max(health.seconds)),
        },
        "monolith": monolith,
        # Every 100th sorted (stream, vote) delay: enough for the histogram.
        "delays_ms": [_ms(d) for d in delays[::100]],
    }
