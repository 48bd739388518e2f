"""The vote service's routes: the ballot page, the form post and the JSON API."""

from __future__ import annotations

import logging
import secrets
from typing import TypeVar
from urllib.parse import parse_qsl

from flask import Blueprint, Response, jsonify, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from cloudvote.application.voting import VoteCaster
from cloudvote.domain.polls import Poll, PollCatalog, UnknownOption
from cloudvote.domain.votes import is_valid_voter_id
from cloudvote.entrypoints.web.observed import error_response
from cloudvote.observability.metrics import VOTES_ACCEPTED, VOTES_REJECTED
from cloudvote.observability.tracing import current_trace_id
from cloudvote.ports.queue import QueueUnavailable

log = logging.getLogger("cloudvote.vote")

R = TypeVar("R", bound=BaseResponse)

VOTER_COOKIE = "voter_id"
_ONE_YEAR = 365 * 24 * 3600
# Cookies are written here rather than with set_cookie, which formats a date (Expires)
# and quotes the value on every response: the values are ids from a small alphabet (a
# voter id is hex, an option id matches the catalog's id pattern), so nothing needs
# quoting, and every current browser honours Max-Age without an Expires.
_VOTER_COOKIE_ATTRIBUTES = f"; HttpOnly; Max-Age={_ONE_YEAR}; Path=/; SameSite=Lax"
_CHOICE_COOKIE_ATTRIBUTES = f"; Max-Age={_ONE_YEAR}; Path=/; SameSite=Lax"
# How long a client should wait before retrying while the queue is down.
RETRY_AFTER_SECONDS = "2"


def vote_blueprint(caster: VoteCaster) -> Blueprint:
    catalog = caster.catalog
    bp = Blueprint("vote", __name__)

    @bp.get("/")
    def default_page() -> Response:
        return _page(catalog, catalog.default)

    @bp.post("/")
    def default_form_vote() -> BaseResponse:
        return _form_vote(caster, catalog.default.id, "/")

    @bp.get("/polls/<poll_id>")
    def poll_page(poll_id: str) -> Response:
        return _page(catalog, catalog.require(poll_id))

    @bp.post("/polls/<poll_id>")
    def poll_form_vote(poll_id: str) -> BaseResponse:
        return _form_vote(caster, poll_id, f"/polls/{poll_id}")

    @bp.post("/api/polls/<poll_id>/votes")
    def api_vote(poll_id: str) -> Response:
        catalog.require(poll_id)  # 404 before body checks: the URL is wrong first
        if not request.is_json:
            sent = request.mimetype or "no Content-Type"
            return _rejected(
                415, f'votes are JSON: send Content-Type: application/json, not "{sent}"'
            )
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _rejected(
                400, 'the body is not a JSON object; expected {"option": "<option id>"}'
            )
        option = body.get("option")
        if not isinstance(option, str) or not option:
            problem = _option_problem(option)
            return _rejected(400, f'{problem}; expected {{"option": "<option id>"}}')
        voter_id, is_new = _voter_id()
        failure = _cast(caster, poll_id, option, voter_id)
        if failure is not None:
            return failure
        response = jsonify(poll=poll_id, option=option, status="accepted")
        response.status_code = 202
        return _with_voter_cookie(response, voter_id, is_new)

    return bp


def _page(catalog: PollCatalog, poll: Poll) -> Response:
    voter_id, is_new = _voter_id()
    action = "/" if poll.id == catalog.default.id else f"/polls/{poll.id}"
    html = render_template(
        "vote.html",
        poll=poll,
        polls=list(catalog),
        action=action,
        chosen=request.cookies.get(f"voted_{poll.id}"),
        results_url="/results" if poll.id == catalog.default.id else f"/results/{poll.id}",
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    return _with_voter_cookie(response, voter_id, is_new)


def _option_problem(option: object) -> str:
    """What is wrong with the "option" of a JSON vote (not a non-empty string), in words a
    client can act on."""
    if option is None:
        return 'missing "option"'
    if not isinstance(option, str):
        return f'"option" must be a string, not {_JSON_TYPES.get(type(option), "a value")}'
    return '"option" must not be empty'


_JSON_TYPES = {
    bool: "true or false",
    int: "a number",
    float: "a number",
    list: "a list",
    dict: "an object",
}


class _NotText(ValueError):
    """A form value whose bytes are not UTF-8 text."""


def _form_vote(caster: VoteCaster, poll_id: str, back_to: str) -> BaseResponse:
    caster.catalog.require(poll_id)
    try:
        option = _form_field("vote")
    except _NotText:
        return _rejected(400, "form field 'vote' is not valid UTF-8 text (the option id)")
    if not option:
        return _rejected(400, "missing form field 'vote' (the option id)")
    voter_id, is_new = _voter_id()
    failure = _cast(caster, poll_id, option, voter_id)
    if failure is not None:
        return failure
    # 303: the browser follows with a GET, so a reload does not post the vote again. No
    # body: browsers never show one, and without it the server writes the answer in one
    # send instead of two.
    headers = [
        ("Location", back_to),
        ("Set-Cookie", f"voted_{poll_id}={option}{_CHOICE_COOKIE_ATTRIBUTES}"),
    ]
    return _with_voter_cookie(Response(status=303, headers=headers), voter_id, is_new)


def _form_field(name: str) -> str | None:
    """A field of the posted form: a url-encoded body is split here, which costs less than
    werkzeug's general form parser; multipart forms still go through request.form."""
    if request.mimetype != "application/x-www-form-urlencoded":
        # Werkzeug's multipart parser replaces bytes that are not UTF-8 with U+FFFD,
        # which no option id contains.
        value = request.form.get(name)
        if value is not None and "\ufffd" in value:
            raise _NotText(name)
        return value
    # get_data reads through werkzeug's bounded stream, so a body over the limit is 413.
    # Decoded strictly, raw and percent-encoded alike: a replacement character would make
    # a bad byte look like an unknown option.
    try:
        body = request.get_data().decode()
        fields = parse_qsl(body, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as error:
        raise _NotText(name) from error
    for key, value in fields:
        if key == name:
            return value
    return None


def _cast(caster: VoteCaster, poll_id: str, option: str, voter_id: str) -> Response | None:
    try:
        caster.cast(poll_id, option, voter_id, current_trace_id())
    except UnknownOption as error:
        return _rejected(400, str(error), "unknown_option")
    except QueueUnavailable as error:
        VOTES_REJECTED.labels("queue_unavailable").inc()
        log.warning("vote.queue_unavailable", extra={"error": str(error)})
        return error_response(
            503,
            "the vote queue is unavailable; nothing was stored, retry shortly",
            **{"Retry-After": RETRY_AFTER_SECONDS},
        )
    VOTES_ACCEPTED.labels(poll_id).inc()
    return None


def _rejected(status: int, message: str, reason: str = "bad_request") -> Response:
    VOTES_REJECTED.labels(reason).inc()
    return error_response(status, message)


def _voter_id() -> tuple[str, bool]:
    """The voter is the cookie; a missing or forged value gets a fresh random id."""
    current = request.cookies.get(VOTER_COOKIE, "")
    if is_valid_voter_id(current):
        return current, False
    return secrets.token_hex(16), True  # 128 random bits


def _with_voter_cookie(response: R, voter_id: str, is_new: bool) -> R:
    if is_new:
        response.headers.add("Set-Cookie", f"{VOTER_COOKIE}={voter_id}{_VOTER_COOKIE_ATTRIBUTES}")
    return response
