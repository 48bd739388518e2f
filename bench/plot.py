"""One PNG with the three harnesses side by side, drawn from the JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt


def _load(results: Path, name: str) -> dict[str, object] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_summary(results: Path) -> Path:
    figure, (ingest_ax, drain_ax, fresh_ax) = plt.subplots(1, 3, figsize=(15, 4.5))
    ingest = _load(results, "ingest")
    if ingest:
        votes = ingest["votes"]["requests_per_s"]  # type: ignore[index]
        ceiling = ingest["healthz_ceiling"]["requests_per_s"]  # type: ignore[index]
        ingest_ax.bar(
            ["POST / (vote)", "GET /healthz"], [votes, ceiling], color=["#2f6fdf", "#9aa7b6"]
        )
        ingest_ax.axhline(4000, color="#c0392b", linestyle="--", label="target 4,000/s")
        ingest_ax.set_title(
            f"ingest: {votes:,.0f} votes/s ({ingest['ratio_of_ceiling']:.0%} of ceiling)"
        )
        ingest_ax.set_ylabel("requests/s")
        ingest_ax.legend()
    drain = _load(results, "drain")
    if drain:
        drain_ax.bar(["cloudvote worker"], [drain["votes_per_s"]], color="#2f6fdf")  # type: ignore[list-item]
        drain_ax.axhline(20000, color="#c0392b", linestyle="--", label="target 20,000/s")
        drain_ax.set_title(f"drain: {drain['votes_per_s']:,} votes/s into PostgreSQL")
        drain_ax.set_ylabel("votes/s")
        drain_ax.legend()
    fresh = _load(results, "freshness")
    if fresh and fresh["delays_ms"]:
        fresh_ax.hist(fresh["delays_ms"], bins=50, color="#2f6fdf")  # type: ignore[arg-type]
        fresh_ax.axvline(1000, color="#c0392b", linestyle="--", label="target p99 1 s")
        fresh_ax.set_title(
            f"freshness at {fresh['target_rate']}/s: "
            f"p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms"
        )
        fresh_ax.set_xlabel("202 → visible in result API (ms)")
        fresh_ax.legend()
    figure.tight_layout()
    out = results / "summary.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
