"""The monolith: both web apps and the worker in one process, on SQLite (ARCH-01)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from werkzeug.serving import WSGIRequestHandler, make_server

from cloudvote.bootstrap import build_monolith
from cloudvote.config import Settings
from cloudvote.domain.polls import PollCatalog
from cloudvote.entrypoints.web.apps import create_monolith_app
from cloudvote.entrypoints.web.observed import HEADERS_TOO_LARGE

log = logging.getLogger("cloudvote.monolith")
access_log = logging.getLogger("cloudvote.access")


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, with its request lines as JSON fields and its errors in our words.

    werkzeug writes each request as one preformatted line, coloured with ANSI escapes for a
    terminal; in a JSON log those escapes are noise a log shipper must strip. This logs the
    same facts as fields instead. The few errors the HTTP parser answers before the app
    (a header line too long, too many headers) get cloudvote's JSON, not its HTML page.
    """

    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s: %(explain)s", "status": %(code)d}'

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        access_log.info(
            "http.request",
            extra={
                "method": getattr(self, "command", None),
                "path": getattr(self, "path", None),
                "status": int(code) if str(code).isdigit() else str(code),
            },
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code == 431:
            message, explain = "request headers too large", HEADERS_TOO_LARGE
        # The format is filled in by http.server; a quote or backslash from a bad request
        # line would break the JSON.
        super().send_error(code, _json_safe(message), _json_safe(explain))


def _json_safe(text: str | None) -> str | None:
    return None if text is None else text.replace("\\", "/").replace('"', "'")


def run_monolith(
    settings: Settings, host: str = "127.0.0.1", catalog: PollCatalog | None = None
) -> int:
    monolith = build_monolith(settings, catalog)
    drainer = monolith.drainer
    worker = threading.Thread(target=drainer.run, name="worker")
    app = create_monolith_app(monolith=monolith, liveness=worker.is_alive)
    # A threaded server: one slow client or open results stream must not block votes.
    server = make_server(host, settings.port, app, threaded=True, request_handler=_RequestHandler)
    worker.start()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("process.stopping", extra={"signal": signal.Signals(signum).name})
        monolith.stopping.set()
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
        monolith.close()
    return 0
