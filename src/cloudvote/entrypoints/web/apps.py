"""Application factories: one per service shape, all built from the same blueprints."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, jsonify, render_template

from cloudvote.bootstrap import (
    Monolith,
    Shape,
    build_monolith,
    build_result_service,
    build_vote_service,
)
from cloudvote.config import Settings
from cloudvote.domain.polls import PollCatalog, UnknownPoll
from cloudvote.entrypoints.web.observed import error_response, install_common
from cloudvote.entrypoints.web.result import result_blueprint
from cloudvote.entrypoints.web.vote import vote_blueprint
from cloudvote.observability.identity import ServedBy


def create_vote_app(settings: Settings | None = None, catalog: PollCatalog | None = None) -> Flask:
    """The vote service: pages and API that put votes on the queue."""
    service = build_vote_service(settings or Settings.from_env(), catalog)
    app = _base_app("vote", service)
    app.register_blueprint(vote_blueprint(service.caster))
    return app


def create_result_app(
    settings: Settings | None = None, catalog: PollCatalog | None = None
) -> Flask:
    """The result service: tallies from the store, as a page, JSON and a live stream."""
    service = build_result_service(settings or Settings.from_env(), catalog)
    app = _base_app("result", service)
    app.register_blueprint(result_blueprint(service.live, service.stopping))
    return app


def create_monolith_app(
    settings: Settings | None = None,
    monolith: Monolith | None = None,
    liveness: Callable[[], bool] = lambda: True,
) -> Flask:
    """Vote and result on one port, over SQLite; the CLI runs the worker beside it.

    `liveness` lets the caller report the worker thread: if it has died, /healthz fails
    so that a supervisor restarts the process instead of leaving votes undrained.
    """
    monolith = monolith or build_monolith(settings or Settings.from_env())
    app = _base_app("monolith", monolith, liveness)
    app.register_blueprint(vote_blueprint(monolith.caster))
    app.register_blueprint(result_blueprint(monolith.live, monolith.stopping))
    return app


def _base_app(service: str, shape: Shape, liveness: Callable[[], bool] = lambda: True) -> Flask:
    app = Flask(__name__)
    app.extensions["cloudvote"] = shape
    served_by = ServedBy.describe(service, shape.settings)
    install_common(
        app,
        served_by,
        shape.readiness,
        liveness,
        shape.settings.metrics_dir,
        tracing=shape.tracing,
    )
    catalog = shape.catalog

    @app.get("/api/polls")
    def list_polls() -> Response:
        return jsonify(polls=_describe(catalog))

    @app.get("/about")
    def about() -> str:
        """What the viewer is looking at, for each shape, with the current one marked."""
        return render_template("about.html", polls=list(catalog), docs_url=shape.settings.docs_url)

    @app.errorhandler(UnknownPoll)
    def unknown_poll(error: UnknownPoll) -> Response:
        return error_response(404, str(error))

    return app


def _describe(catalog: PollCatalog) -> list[dict[str, object]]:
    return [
        {
            "id": poll.id,
            "question": poll.question,
            "options": [{"id": o.id, "label": o.label} for o in poll.options],
        }
        for poll in catalog
    ]
