"""The Flask apps through the test client, over the in-memory queue and store.

The apps are built like `create_monolith_app` builds them, but from hand-made shapes
(`Monolith`, `VoteService`, `ResultService`), so every outage is a switch on a fake. The
`harness` fixture fails any test whose app answered a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient
from werkzeug.wrappers import Response as WerkzeugResponse

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.application.draining import DrainSettings, VoteDrainer
from cloudvote.application.live_results import LiveResults, PollingTallyChanges
from cloudvote.application.pipeline import PipelineView
from cloudvote.application.results import ResultsView
from cloudvote.application.voting import VoteCaster
from cloudvote.bootstrap import Monolith, ResultService, VoteService
from cloudvote.config import Settings
from cloudvote.entrypoints.web.apps import _base_app, create_monolith_app
from cloudvote.entrypoints.web.result import result_blueprint
from cloudvote.entrypoints.web.vote import vote_blueprint
from cloudvote.observability.tracing import Tracing
from tests.support.fakes import CATALOG, FakeClock

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
POD = {"POD_NAME": "cloudvote-6d5f-x7k2p", "NODE_NAME": "node-3", "CLOUDVOTE_RELEASE": "r7"}
# The worker's logic run by hand, once, as the monolith's background thread would run it.
DRAIN_ONCE = DrainSettings(block_ms=0, claim_every_s=3600)


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    queue: InMemoryVoteQueue
    store: InMemoryVoteStore
    statuses: list[int] = field(default_factory=list)

    def drain(self, worker: str = "worker") -> None:
        """Run the worker's logic once, as the monolith's background thread would."""
        VoteDrainer(CATALOG, self.queue, self.store, DRAIN_ONCE, name=worker).drain_once()

    def results(self, poll: str = "default") -> dict[str, object]:
        response = self.client.get(f"/api/polls/{poll}/results")
        assert response.status_code == 200
        body: dict[str, object] = response.get_json()
        return body

    def refused(self, response: WerkzeugResponse, status: int) -> str:
        """The message of a `status` answer in cloudvote's error shape, nothing queued."""
        assert response.status_code == status
        assert self.queue.depth() == 0
        if response.is_json:
            body = response.get_json()
            assert body == {"error": body["error"], "status": status}
            return str(body["error"])
        text = response.get_data(as_text=True)
        if response.mimetype == "text/plain":
            assert text.startswith(f"{status} ") and text.endswith("\n")
            return text.removeprefix(f"{status} ").removesuffix("\n")
        return text


def monolith_on_fakes(
    queue: InMemoryVoteQueue,
    store: InMemoryVoteStore,
    settings: Settings | None = None,
    live: LiveResults | None = None,
    max_streams: int = 100,
) -> Monolith:
    settings = settings or Settings()
    if live is None:
        view = ResultsView(CATALOG, store)
        changes = PollingTallyChanges(interval_s=0.01)
        live = LiveResults(view, changes, max_streams=max_streams, min_interval_s=0.01)
    return Monolith(
        settings=settings,
        catalog=CATALOG,
        caster=VoteCaster(CATALOG, queue, settings.instance_name()),
        live=live,
        drainer=VoteDrainer(CATALOG, queue, store, DRAIN_ONCE),
        readiness={"queue": queue.ping, "store": store.ping},
    )


@pytest.fixture
def harness() -> Iterator[Harness]:
    queue, store = InMemoryVoteQueue(), InMemoryVoteStore()
    app = create_monolith_app(monolith=monolith_on_fakes(queue, store))
    h = Harness(app, app.test_client(), queue, store)

    @app.after_request
    def record(response: Response) -> Response:
        h.statuses.append(response.status_code)
        return response

    yield h
    assert 500 not in h.statuses, "the app answered 500"


@pytest.fixture
def client(harness: Harness) -> FlaskClient:
    return harness.client


@dataclass(kw_only=True)
class Shown(Harness):
    """A monolith on fakes, with a pod's identity and the pipeline panel switched on."""

    live: LiveResults
    clock: FakeClock


def shown_monolith(
    settings: Settings, clock: FakeClock, pipeline_every_s: float = 1.0
) -> tuple[Monolith, InMemoryVoteQueue, InMemoryVoteStore, LiveResults]:
    queue, store = InMemoryVoteQueue(clock), InMemoryVoteStore(clock)
    live = LiveResults(
        ResultsView(CATALOG, store),
        PollingTallyChanges(interval_s=0.01),
        max_streams=10,
        min_interval_s=0.01,
        pipeline=PipelineView(store, clock),
        pipeline_every_s=pipeline_every_s,
    )
    return monolith_on_fakes(queue, store, settings, live), queue, store, live


@pytest.fixture
def shown() -> Iterator[Shown]:
    clock = FakeClock()
    monolith, queue, store, live = shown_monolith(Settings.from_env(POD), clock)
    app = create_monolith_app(monolith=monolith)
    yield Shown(app, app.test_client(), queue, store, live=live, clock=clock)
    live.stop()


def result_app(settings: Settings) -> Flask:
    monolith, _queue, _store, live = shown_monolith(settings, FakeClock())
    service = ResultService(
        settings=settings, catalog=CATALOG, readiness=monolith.readiness, live=live
    )
    app = _base_app("result", service)
    app.register_blueprint(result_blueprint(live, service.stopping))
    return app


def vote_app(
    settings: Settings, queue: InMemoryVoteQueue | None = None, tracing: Tracing | None = None
) -> Flask:
    queue = queue or InMemoryVoteQueue()
    service = VoteService(
        settings=settings,
        catalog=CATALOG,
        tracing=tracing or Tracing.unexported(),
        readiness={"queue": queue.ping},
        caster=VoteCaster(CATALOG, queue, settings.instance_name()),
    )
    app = _base_app("vote", service)
    app.register_blueprint(vote_blueprint(service.caster))
    return app
