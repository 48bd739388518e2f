"""The monolith: both web apps and the worker in one process, on SQLite (ARCH-01)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from werkzeug.serving import make_server

from cloudvote.bootstrap import build_monolith
from cloudvote.config import Settings
from cloudvote.entrypoints.web.apps import create_monolith_app
from cloudvote.entrypoints.web.observed import shutting_down

log = logging.getLogger("cloudvote.monolith")


def run_monolith(settings: Settings, host: str = "127.0.0.1") -> int:
    components = build_monolith(settings)
    drainer = components.drainer
    assert drainer is not None
    worker = threading.Thread(target=drainer.run, name="worker")
    app = create_monolith_app(components=components, liveness=worker.is_alive)
    # A threaded server: one slow client or open results stream must not block votes.
    server = make_server(host, settings.port, app, threaded=True)
    worker.start()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("process.stopping", extra={"signal": signal.Signals(signum).name})
        shutting_down.set()
        drainer.stop_event.set()
        # shutdown() waits for serve_forever to return, so it cannot run on this thread.
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info(
        "monolith.listening",
        extra={"url": f"http://{host}:{settings.port}", "data": str(settings.resolved_data_dir())},
    )
    try:
        server.serve_forever()
    finally:
        drainer.stop_event.set()
        worker.join()
        components.close()
    return 0
