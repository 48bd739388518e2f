"""The worker process: drain the queue, and serve health, metrics and stats on a side port."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from types import FrameType

from flask import Flask, Response, jsonify
from werkzeug.serving import make_server

from cloudvote.application.draining import VoteDrainer
from cloudvote.bootstrap import Worker, build_worker
from cloudvote.config import Settings
from cloudvote.domain.polls import PollCatalog
from cloudvote.entrypoints.web.observed import install_common
from cloudvote.observability.identity import ServedBy

log = logging.getLogger("cloudvote.worker")

# The loop reports progress at least once per block timeout (1 s) or backoff (≤ 2 s);
# this much silence means it is stuck, and the liveness probe should restart the pod.
STUCK_AFTER_SECONDS = 60.0


def create_worker_app(worker: Worker) -> Flask:
    drainer = worker.drainer
    app = Flask(__name__)
    # No route here calls Redis or PostgreSQL: the drain loop measures the queue depth,
    # so /healthz, /metrics and /stats answer at once even while a dependency hangs.
    served_by = ServedBy.describe("worker", worker.settings)
    install_common(
        app,
        served_by,
        worker.readiness,
        liveness=lambda: _loop_alive(drainer),
        metrics_dir=worker.settings.metrics_dir,
    )

    @app.get("/stats")
    def stats() -> Response:
        """Internal counters as plain JSON: the Kubernetes adapter container turns them
        into Prometheus text, showing the adapter pattern (POD-06)."""
        body = dataclasses.asdict(drainer.stats)
        body["seconds_since_progress"] = round(time.monotonic() - body.pop("last_progress"), 3)
        return jsonify(body)

    return app


def _loop_alive(drainer: VoteDrainer) -> bool:
    return time.monotonic() - drainer.stats.last_progress < STUCK_AFTER_SECONDS


def run_worker(
    settings: Settings,
    host: str = "0.0.0.0",  # noqa: S104 - in a container
    catalog: PollCatalog | None = None,
) -> int:
    worker = build_worker(settings, catalog)
    drainer = worker.drainer
    server = make_server(host, settings.port, create_worker_app(worker), threaded=True)
    health_thread = threading.Thread(target=server.serve_forever, name="health", daemon=True)
    health_thread.start()
    stop_on_signals(drainer.stop_event)
    log.info("worker.listening", extra={"port": settings.port})
    try:
        drainer.run()
    finally:
        server.shutdown()
        worker.close()
    return 0


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (docker stop, a pod deletion) ends the loop after the batch in hand."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("process.stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
