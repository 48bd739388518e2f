"""cloudvote's HTTP API as every tier's tests speak it: e2e processes, Compose, a cluster.

One client on requests, bound to a base URL (a process, a published gateway port, a
NodePort). ``at()`` points the same session, and so the same cookies, at another process.
The load generator (tests/support/load.py) is the one caller that keeps http.client: it
books what became of each vote by connection, which requests does not expose.
"""

from __future__ import annotations

import secrets
from typing import Any, Self

import requests

from tests.support.waiting import wait_until

TIMEOUT_SECONDS = 10.0


class Client:
    """GET and POST against one base URL, with a timeout on every request.

    ``keep_alive=False`` sends every request on a connection of its own, as a reload in a
    new tab does, and makes the client safe to share between threads; it keeps no cookies.
    Redirects are never followed: the tests check the 303 itself.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float = TIMEOUT_SECONDS,
        keep_alive: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.session = session if session is not None else requests.Session()

    def at(self, base_url: str) -> Client:
        """The same session (cookies, connections) against another base URL."""
        return Client(
            base_url, timeout=self.timeout, keep_alive=self.keep_alive, session=self.session
        )

    @property
    def cookies(self) -> requests.cookies.RequestsCookieJar:
        return self.session.cookies

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``path`` below the base URL (or a whole URL when the base is empty)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", False)
        url = self.base_url + path
        if self.keep_alive:
            return self.session.request(method, url, **kwargs)
        with requests.Session() as session:
            return session.request(method, url, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def vote(
        self, option: str, poll: str = "default", voter: str | None = None, **headers: str
    ) -> requests.Response:
        """Vote through the JSON API as ``voter``, a new voter by default."""
        return self.post(
            f"/api/polls/{poll}/votes",
            json={"option": option},
            headers={"Cookie": f"voter_id={voter or secrets.token_hex(16)}", **headers},
        )

    def form_vote(
        self, option: str, path: str = "/", voter: str | None = None
    ) -> requests.Response:
        """Vote as the ballot page's form does: as the session's voter, or ``voter``."""
        cookies = {"voter_id": voter} if voter else None
        return self.post(path, data={"vote": option}, cookies=cookies)

    def results(self, poll: str = "default") -> dict[str, Any]:
        response = self.get(f"/api/polls/{poll}/results")
        status = response.status_code
        assert status == 200, f"results answered {status}: {response.text[:200]}"
        body: dict[str, Any] = response.json()
        return body

    def total(self, poll: str = "default") -> int:
        results = self.results(poll)
        assert not results.get("stale"), "results are stale (the store is down)"
        return int(results["total"])

    def wait_for_counts(
        self, poll: str, expected: dict[str, int], timeout: float = 20
    ) -> dict[str, Any]:
        """The poll's fresh results once they count ``expected``."""
        return wait_until(
            lambda: self.results(poll),
            lambda body: body["counts"] == expected and not body.get("stale"),
            timeout=timeout,
            what=f"results of {poll} == {expected}",
        )

    def wait_total(self, expected: int, poll: str = "default", timeout: float = 90) -> int:
        return wait_until(
            lambda: self.total(poll),
            lambda total: total == expected,
            timeout=timeout,
            interval=0.5,
            what=f"{poll} total == {expected}",
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
