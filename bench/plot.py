"""One PNG with the harnesses side by side, drawn from the JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt


def _load(results: Path, name: str) -> dict[str, object] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def plot_summary(results: Path) -> Path:
    figure, (ingest_ax, drain_ax, fresh_ax, fanout_ax) = plt.subplots(1, 4, figsize=(20, 4.5))
    ingest = _load(results, "ingest")
    if ingest:
        # Bars: medians over the alternating rounds; whiskers: their range.
        shown = [
            ("cloudvote\nPOST /", ingest.get("votes"), "#2f6fdf"),
            ("peer (example-\nvoting-app) POST /", ingest.get("peer"), "#e67e22"),
            ("cloudvote\nGET /healthz", ingest.get("healthz_ceiling"), "#9aa7b6"),
        ]
        shown = [(label, one, color) for label, one, color in shown if one]
        rates = [one["requests_per_s"] for _, one, _ in shown]  # type: ignore[index]
        spans = [one.get("range", {}).get("requests_per_s") for _, one, _ in shown]  # type: ignore[attr-defined]
        whiskers = [
            [rate - span[0] if span else 0 for rate, span in zip(rates, spans, strict=True)],
            [span[1] - rate if span else 0 for rate, span in zip(rates, spans, strict=True)],
        ]
        bars = ingest_ax.bar(
            [label for label, _, _ in shown],
            rates,
            yerr=whiskers,
            capsize=4,
            color=[color for _, _, color in shown],
        )
        ingest_ax.bar_label(
            bars,
            labels=[f"p99 {one['p99_ms']:g} ms" for _, one, _ in shown],  # type: ignore[index]
            fontsize=8,
        )
        ingest_ax.axhline(4000, color="#c0392b", linestyle="--", label="target 4,000/s")
        versus = ingest.get("cloudvote_over_peer")
        ingest_ax.set_title(
            f"ingest: {rates[0]:,.0f} votes/s"
            + (f", {versus:.2f}x the peer" if versus else "")
            + f" ({ingest['ratio_of_ceiling']:.0%} of /healthz)"
        )
        ingest_ax.set_ylabel("requests/s")
        ingest_ax.tick_params(axis="x", labelsize=8)
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
    fanout = _load(results, "fanout")
    if fanout:
        _plot_fanout(fanout_ax, fanout)
    figure.tight_layout()
    out = results / "summary.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _plot_fanout(axes: plt.Axes, fanout: dict[str, Any]) -> None:
    """Viewers connected against viewers that got a first event, per level and the monolith."""
    levels = fanout["levels"]
    labels = [f"{level['viewers']:,}" for level in levels]
    opened = [level["viewers"] for level in levels]
    served = [level["with_first_event"] for level in levels]
    monolith = fanout.get("monolith")
    if monolith:
        labels.append(f"{monolith['viewers']:,}\nmonolith")
        opened.append(monolith["viewers"])
        served.append(monolith["with_first_event"])
    places = range(len(labels))
    axes.bar([x - 0.2 for x in places], opened, width=0.4, color="#9aa7b6", label="connected")
    axes.bar([x + 0.2 for x in places], served, width=0.4, color="#2f6fdf", label="got results")
    axes.set_xticks(list(places), labels)
    axes.set_yscale("log")
    axes.set_xlabel("open result streams")
    delivery, health = fanout["delivery"], fanout["healthz"]
    axes.set_title(
        f"fanout at {delivery['viewers']:,} streams: vote → every stream p99 "
        f"{delivery['p99_ms']} ms,\n/healthz p99 {health['p99_ms']} ms, "
        f"{levels[-1]['rss_per_stream_kib']} KiB/stream, "
        f"{levels[-1]['store_reads_per_s_under_load']} store reads/s",
        fontsize=10,
    )
    axes.legend()


def plot_tracing(results: Path) -> Path | None:
    """CPU per vote for each tracing setup, under the server and in process, with each
    setup's ratio to ratio 0."""
    tracing = _load(results, "tracing")
    if not tracing:
        return None
    setups: dict[str, Any] = tracing["setups"]  # type: ignore[assignment]
    in_process: dict[str, Any] = tracing.get("in_process") or {}  # type: ignore[assignment]
    labels = list(setups)
    key = "server_cpu_us_per_request"
    figure, axes = plt.subplots(figsize=(9, 4.8))
    places = range(len(labels))
    server = [setups[label].get(key, 0) for label in labels]
    spans = [setups[label].get("range", {}).get(key) for label in labels]
    whiskers = [
        [value - span[0] if span else 0 for value, span in zip(server, spans, strict=True)],
        [span[1] - value if span else 0 for value, span in zip(server, spans, strict=True)],
    ]
    groups = [
        (
            "server under wrk (gunicorn, 2 processes)",
            server,
            whiskers,
            tracing["cpu_over_ratio_0"],
            "#2f6fdf",
            -0.2,
        )
    ]
    if in_process:
        own = [in_process["cpu_us_per_vote"].get(label, 0) for label in labels]
        groups.append(
            (
                "in process, one vote at a time",
                own,
                None,
                in_process["cpu_over_ratio_0"],
                "#27ae60",
                0.2,
            )
        )
    for name, values, error, ratios, color, offset in groups:
        bars = axes.bar(
            [x + offset for x in places],
            values,
            width=0.4,
            yerr=error,
            capsize=3,
            color=color,
            label=name,
        )

        def note(label: str, ratios: dict[str, Any] = ratios) -> str:
            median = ratios.get(label, {}).get("median")
            return "base" if label == "0" else (f"{median:.2f}x" if median else "")

        axes.bar_label(bars, labels=[note(label) for label in labels], fontsize=8)
    axes.set_xticks(
        list(places), ["off" if label == "off" else f"ratio {label}" for label in labels]
    )
    overhead = tracing.get("overhead_at_default_ratio")
    axes.set_title(
        "vote service CPU per vote by tracing setup (ratios: paired, against ratio 0)"
        + (f"\nserver: {overhead:+.1%} at the default ratio 0.1" if overhead is not None else ""),
        fontsize=10,
    )
    axes.set_ylabel("CPU µs per vote (median)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    out = results / "tracing.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
