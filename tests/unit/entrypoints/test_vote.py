"""The vote routes (web/vote.py): the ballot page, form votes, the JSON API, the voter
cookie, and every bad vote refused with a clear message and nothing queued."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.fakes import VOTER
from tests.unit.entrypoints.conftest import PARENT_SPAN, TRACE_ID, Harness, Shown

FORM_VOTE: dict[str, Any] = {"data": {"vote": "a"}}


def _set_cookies(response: TestResponse, name: str) -> list[str]:
    return [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]


def _the_cookie(response: TestResponse, name: str) -> tuple[str, list[str]]:
    """The one `name` cookie the response sets: its value and its lower-cased attributes."""
    [cookie] = _set_cookies(response, name)
    pair, *attributes = cookie.split(";")
    return pair.removeprefix(f"{name}="), [part.strip().lower() for part in attributes]


@pytest.mark.parametrize(
    ("path", "option", "form_type", "poll", "counts"),
    [
        ("/", "a", None, "default", {"a": 1, "b": 0}),
        ("/polls/lunch", "salad", None, "lunch", {"pizza": 0, "salad": 1}),
        ("/", "b", "multipart/form-data", "default", {"a": 0, "b": 1}),
    ],
    ids=["default-poll", "named-poll", "multipart"],
)
def test_a_form_vote_answers_303_back_to_its_poll_page_and_is_queued(
    harness: Harness,
    path: str,
    option: str,
    form_type: str | None,
    poll: str,
    counts: dict[str, int],
) -> None:
    response = harness.client.post(path, data={"vote": option}, content_type=form_type)

    assert response.status_code == 303
    assert response.headers["Location"] == path
    assert harness.queue.depth() == 1
    harness.drain()
    assert harness.results(poll) == {"poll": poll, "counts": counts, "total": 1}


def test_a_new_voter_gets_a_random_128_bit_http_only_same_site_lax_cookie(
    client: FlaskClient,
) -> None:
    value, attributes = _the_cookie(client.post("/", data={"vote": "a"}), "voter_id")

    assert re.fullmatch(r"[0-9a-f]{32}", value)
    assert "httponly" in attributes
    assert "samesite=lax" in attributes


def test_two_new_voters_get_different_ids(harness: Harness) -> None:
    first = harness.app.test_client().post("/", data={"vote": "a"})
    second = harness.app.test_client().post("/", data={"vote": "a"})

    assert _set_cookies(first, "voter_id") != _set_cookies(second, "voter_id")
    harness.drain()
    assert harness.results()["total"] == 2


def test_a_returning_voter_keeps_the_cookie_and_is_not_given_a_new_one(
    client: FlaskClient,
) -> None:
    client.set_cookie("voter_id", VOTER)

    response = client.post("/", data={"vote": "a"})

    assert response.status_code == 303
    assert _set_cookies(response, "voter_id") == []


def test_a_forged_voter_cookie_is_replaced_by_a_fresh_id(
    harness: Harness, client: FlaskClient
) -> None:
    client.set_cookie("voter_id", "admin")

    response = client.post("/", data={"vote": "a"})

    [cookie] = _set_cookies(response, "voter_id")
    assert "voter_id=admin" not in cookie
    [delivery] = harness.queue.receive(10, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", delivery.fields["voter"])


def test_a_revote_with_the_same_cookie_replaces_the_previous_vote_in_the_tallies(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/", data={"vote": "a"})
    harness.drain()
    assert harness.results()["counts"] == {"a": 1, "b": 0}

    client.post("/", data={"vote": "b"})
    harness.drain()

    assert harness.results() == {"poll": "default", "counts": {"a": 0, "b": 1}, "total": 1}


def test_the_form_vote_redirect_has_no_body_and_remembers_the_choice_for_a_year(
    client: FlaskClient,
) -> None:
    response = client.post("/", data={"vote": "b"})

    assert response.status_code == 303
    assert response.get_data() == b""
    value, attributes = _the_cookie(response, "voted_default")
    assert value == "b"
    assert "max-age=31536000" in attributes
    assert "samesite=lax" in attributes


def test_the_page_remembers_the_choice_after_the_redirect(client: FlaskClient) -> None:
    client.post("/", data={"vote": "b"})

    page = client.get("/")

    assert page.status_code == 200
    assert 'id="voted"' in page.get_data(as_text=True)


def test_json_vote_answers_202_with_exactly_poll_option_and_status(
    harness: Harness, client: FlaskClient
) -> None:
    response = client.post("/api/polls/lunch/votes", json={"option": "pizza"})

    assert response.status_code == 202
    assert response.get_json() == {"poll": "lunch", "option": "pizza", "status": "accepted"}
    assert len(_set_cookies(response, "voter_id")) == 1
    harness.drain()
    assert harness.results("lunch")["counts"] == {"pizza": 1, "salad": 0}


def test_json_revote_by_the_same_voter_replaces_the_vote(
    harness: Harness, client: FlaskClient
) -> None:
    client.post("/api/polls/default/votes", json={"option": "a"})
    client.post("/api/polls/default/votes", json={"option": "b"})
    harness.drain()

    assert harness.results()["counts"] == {"a": 0, "b": 1}


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/", ['value="a"', "Cats", "Dogs"]),
        ("/polls/lunch", ["What for lunch?", 'action="/polls/lunch"', 'value="pizza"']),
    ],
    ids=["default-poll", "named-poll"],
)
def test_each_poll_has_a_vote_page_with_its_options_that_sets_the_voter_cookie(
    client: FlaskClient, path: str, shown: list[str]
) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    page = response.get_data(as_text=True)
    assert [text for text in shown if text not in page] == []
    assert len(_set_cookies(response, "voter_id")) == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/polls/nope", FORM_VOTE),
        ("POST", "/polls/nope", FORM_VOTE),
        ("POST", "/api/polls/nope/votes", FORM_VOTE),
        ("POST", "/api/polls/nope/votes", {"json": {"option": "a"}}),  # a good body, even
        ("GET", "/results/nope", FORM_VOTE),
        ("GET", "/api/polls/nope/results", FORM_VOTE),
        ("GET", "/api/polls/nope/results/stream", FORM_VOTE),
    ],
    ids=["page", "form", "api-form", "api-json", "results-page", "results-api", "stream"],
)
def test_an_unknown_poll_is_404_and_nothing_is_queued(
    harness: Harness, method: str, path: str, body: dict[str, Any]
) -> None:
    response = harness.client.open(path, method=method, **body)

    assert harness.refused(response, 404) == "unknown poll 'nope'"


@pytest.mark.parametrize(
    ("path", "body", "valid"),
    [
        ("/", {"data": {"vote": "c"}}, "a, b"),
        ("/api/polls/lunch/votes", {"json": {"option": "soup"}}, "pizza, salad"),
    ],
    ids=["form", "api"],
)
def test_an_unknown_option_is_400_naming_the_valid_options(
    harness: Harness, path: str, body: dict[str, Any], valid: str
) -> None:
    response = harness.client.post(path, **body)

    assert f"valid options: {valid}" in harness.refused(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "{",
        "not json",
        "[]",
        '"a"',
        "null",
        "{}",
        '{"option": ""}',
        '{"option": 1}',
        '{"option": null}',
        '{"option": ["a"]}',
        '{"choice": "a"}',
    ],
)
def test_a_missing_or_malformed_json_body_is_400(
    harness: Harness, client: FlaskClient, body: str
) -> None:
    response = client.post("/api/polls/default/votes", data=body, content_type="application/json")

    assert '"option"' in harness.refused(response, 400)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"option": "a"}', "text/plain"),
        ("option=a", "application/x-www-form-urlencoded"),
        ('{"option": "a"}', None),
    ],
)
def test_a_vote_api_body_that_is_not_declared_json_is_415_naming_application_json(
    harness: Harness, client: FlaskClient, data: str, content_type: str | None
) -> None:
    response = client.post("/api/polls/default/votes", data=data, content_type=content_type)

    assert "Content-Type: application/json" in harness.refused(response, 415)


@pytest.mark.parametrize(
    "data", [{}, {"vote": ""}, {"choice": "a"}], ids=["no-field", "empty", "other-field"]
)
@pytest.mark.parametrize("path", ["/", "/polls/lunch"])
def test_a_form_post_without_the_vote_field_is_400(
    harness: Harness, client: FlaskClient, path: str, data: dict[str, str]
) -> None:
    response = client.post(path, data=data)

    assert "missing form field 'vote'" in harness.refused(response, 400)


def test_a_form_post_with_a_json_body_is_400(harness: Harness, client: FlaskClient) -> None:
    harness.refused(client.post("/", json={"vote": "a"}), 400)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"option": 1}', '"option" must be a string, not a number'),
        ('{"option": true}', '"option" must be a string, not true or false'),
        ('{"option": ["a"]}', '"option" must be a string, not a list'),
        ('{"option": ""}', '"option" must not be empty'),
        ('{"choice": "a"}', 'missing "option"'),
        ("[1]", "the body is not a JSON object"),
        ("{", "the body is not a JSON object"),
    ],
)
def test_a_bad_json_vote_is_told_exactly_what_is_wrong(
    harness: Harness, client: FlaskClient, body: str, error: str
) -> None:
    response = client.post("/api/polls/default/votes", data=body, content_type="application/json")

    assert harness.refused(response, 400) == f'{error}; expected {{"option": "<option id>"}}'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"vote=%ff%fe", "application/x-www-form-urlencoded"),
        (b"vote=\xff", "application/x-www-form-urlencoded"),
        (
            b'--x\r\nContent-Disposition: form-data; name="vote"\r\n\r\n\xff\xfe\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
        ),
    ],
    ids=["percent-encoded", "raw", "multipart"],
)
def test_a_form_value_that_is_not_utf8_is_a_clear_400(
    harness: Harness, client: FlaskClient, body: bytes, content_type: str
) -> None:
    response = client.post("/", data=body, content_type=content_type)

    assert "form field 'vote' is not valid UTF-8 text" in harness.refused(response, 400)


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/", {"data": {"vote": "a"}}),
        ("/polls/lunch", {"data": {"vote": "pizza"}}),
        ("/api/polls/default/votes", {"json": {"option": "a"}}),
    ],
)
def test_queue_down_answers_503_with_retry_after_and_stores_nothing(
    harness: Harness, client: FlaskClient, path: str, kwargs: dict[str, object]
) -> None:
    harness.queue.available = False

    response = client.post(path, **kwargs)

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "nothing was stored" in response.get_data(as_text=True)
    harness.queue.available = True
    assert harness.queue.depth() == 0


def test_store_down_does_not_stop_votes_being_accepted(
    harness: Harness, client: FlaskClient
) -> None:
    harness.store.available = False

    response = client.post("/", data={"vote": "a"})

    assert response.status_code == 303
    assert harness.queue.depth() == 1


def test_the_trace_id_travels_with_the_vote_into_the_queue(
    harness: Harness, client: FlaskClient
) -> None:
    client.post(
        "/api/polls/default/votes",
        json={"option": "b"},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"},
    )

    [delivery] = harness.queue.receive(10, 0)
    assert delivery.fields["trace"] == TRACE_ID


def test_a_vote_carries_the_name_of_the_replica_that_accepted_it(shown: Shown) -> None:
    shown.client.post("/", data={"vote": "a"})

    [delivery] = shown.queue.receive(10, 0)
    assert delivery.fields["via"] == "cloudvote-6d5f-x7k2p"
