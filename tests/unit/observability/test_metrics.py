"""The Prometheus observers feed the shared metrics, and /metrics renders them."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from cloudvote.observability.metrics import (
    PrometheusDrainObserver,
    PrometheusLiveResultsObserver,
    render_metrics,
)


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_the_drain_observer_counts_batches_retries_and_the_queue_depth() -> None:
    applied, changed = (
        _value("cloudvote_votes_applied_total"),
        _value("cloudvote_votes_changed_total"),
    )
    retries = _value("cloudvote_dependency_retries_total", {"dependency": "redis"})
    observer = PrometheusDrainObserver()

    observer.batch_applied(size=5, changed=3, seconds=0.01)
    observer.retried("redis")
    observer.depth_measured(42)

    assert _value("cloudvote_votes_applied_total") == applied + 5
    assert _value("cloudvote_votes_changed_total") == changed + 3
    assert _value("cloudvote_dependency_retries_total", {"dependency": "redis"}) == retries + 1
    assert _value("cloudvote_queue_depth") == 42


def test_the_live_results_observer_tracks_open_and_refused_streams() -> None:
    refused = _value("cloudvote_result_streams_refused_total")
    observer = PrometheusLiveResultsObserver()
    open_before = _value("cloudvote_result_streams_open")

    observer.streams_open(2)
    observer.streams_open(-1)
    observer.stream_refused()

    assert _value("cloudvote_result_streams_open") == open_before + 1
    assert _value("cloudvote_result_streams_refused_total") == refused + 1
    observer.streams_open(-1)


def test_render_is_this_process_without_a_directory_and_the_directory_with_one(
    tmp_path: Path,
) -> None:
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    assert b"cloudvote_votes_applied_total" in body

    shared, _ = render_metrics(str(tmp_path))
    # An empty directory: no server process has written metrics there yet.
    assert b"cloudvote_votes_applied_total" not in shared
