"""The peer's Flask app: a ballot page and one RPUSH per vote (see the package docstring)."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path

import redis
from flask import Flask, Response, make_response, render_template, request

VOTES_LIST = "votes"


def create_app(settings: Mapping[str, str] | None = None) -> Flask:
    """Build the app from `settings` (the environment by default).

    REDIS_URL is required; REDIS_PASSWORD_FILE, OPTION_A and OPTION_B are optional. The Redis
    client connects on its first command, in the gunicorn worker, not here.
    """
    env = os.environ if settings is None else settings
    if "REDIS_URL" not in env:
        raise RuntimeError("bench.peer needs REDIS_URL")
    password_file = env.get("REDIS_PASSWORD_FILE")
    password = Path(password_file).read_text().strip() if password_file else None
    url = env["REDIS_URL"]
    options = {"a": env.get("OPTION_A", "Cats"), "b": env.get("OPTION_B", "Dogs")}
    hostname = socket.gethostname()

    app = Flask(__name__)

    @app.route("/", methods=["GET", "POST"])
    def ballot() -> Response:
        voter_id = request.cookies.get("voter_id") or secrets.token_hex(8)
        vote = None
        if request.method == "POST":
            vote = request.form["vote"]
            # A client per request, as example-voting-app keeps its Redis client on
            # Flask's per-request `g`: every vote opens (and AUTHs) a new connection.
            store = redis.Redis.from_url(url, password=password, socket_timeout=5)
            try:
                store.rpush(VOTES_LIST, json.dumps({"voter_id": voter_id, "vote": vote}))
            finally:
                store.close()
        page = render_template("ballot.html", options=options, vote=vote, hostname=hostname)
        response = make_response(page)
        response.set_cookie("voter_id", voter_id)
        return response

    return app
