"""The application factories (web/apps.py): the polls API, /about, and which routes each
shape serves."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloudvote.adapters.memory import InMemoryVoteQueue, InMemoryVoteStore
from cloudvote.config import Settings
from cloudvote.entrypoints.web.apps import create_monolith_app
from tests.unit.entrypoints.conftest import Shown, monolith_on_fakes, result_app, vote_app


def test_the_polls_api_lists_every_poll_with_its_options(client: FlaskClient) -> None:
    response = client.get("/api/polls")

    assert response.status_code == 200
    assert response.get_json() == {
        "polls": [
            {
                "id": "default",
                "question": "Cats or Dogs?",
                "options": [{"id": "a", "label": "Cats"}, {"id": "b", "label": "Dogs"}],
            },
            {
                "id": "lunch",
                "question": "What for lunch?",
                "options": [{"id": "pizza", "label": "Pizza"}, {"id": "salad", "label": "Salad"}],
            },
        ]
    }


def test_the_vote_app_alone_serves_no_result_routes() -> None:
    queue = InMemoryVoteQueue()
    client = vote_app(Settings(), queue).test_client()

    assert client.post("/", data={"vote": "a"}).status_code == 303
    assert client.get("/api/polls/default/results").status_code == 404
    assert client.get("/api/polls").status_code == 200
    assert queue.depth() == 1


def _sections(html: str) -> dict[str, tuple[str, str]]:
    """Each shape's section: (its class, its paragraph as plain text)."""
    found = re.findall(
        r'<section id="([a-z]+)"(?: class="([a-z]+)")?>\s*<h2>[^<]*</h2>\s*<p>(.*?)</p>', html, re.S
    )
    return {name: (cls, " ".join(re.sub(r"<[^>]+>", "", p).split())) for name, cls, p in found}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def test_about_explains_each_shape_in_three_sentences(shown: Shown) -> None:
    html = shown.client.get("/about").get_data(as_text=True)

    sections = _sections(html)
    assert set(sections) == {"monolith", "compose", "kubernetes"}
    for name, (_, text) in sections.items():
        assert len(_sentences(text)) == 3, (name, _sentences(text))


@pytest.mark.parametrize(
    ("app", "current"),
    [
        (
            lambda: create_monolith_app(
                monolith=monolith_on_fakes(InMemoryVoteQueue(), InMemoryVoteStore())
            ),
            "monolith",
        ),
        (lambda: vote_app(Settings()), "compose"),
        (
            lambda: result_app(Settings.from_env({"POD_NAME": "r-1", "NODE_NAME": "n"})),
            "kubernetes",
        ),
    ],
    ids=["monolith", "compose", "kubernetes"],
)
def test_about_marks_the_shape_that_served_it(app: Callable[[], Flask], current: str) -> None:
    html = app().test_client().get("/about").get_data(as_text=True)

    marked = [name for name, (cls, _) in _sections(html).items() if cls == "current"]
    assert marked == [current]


def test_about_links_the_concept_map() -> None:
    settings = Settings.from_env(
        {"CLOUDVOTE_DOCS_URL": "https://example.org/cloudvote/docs/concepts.md"}
    )
    html = vote_app(settings).test_client().get("/about").get_data(as_text=True)

    assert '<a href="https://example.org/cloudvote/docs/concepts.md">docs/concepts.md</a>' in html


def test_about_names_the_concept_map_where_no_docs_url_is_set(shown: Shown) -> None:
    html = shown.client.get("/about").get_data(as_text=True)

    assert "docs/concepts.md" in html
