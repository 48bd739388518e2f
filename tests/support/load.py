"""A steady, bounded vote load that books every voter's outcome (compose and cluster tiers).

The no-loss checks compare these books with what PostgreSQL stored afterwards.
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import time


class SteadyVotes:
    """Vote at a steady pace from a few threads, recording each voter's outcome.

    Each request names a new voter in its cookie, so the test knows exactly which voter
    every outcome belongs to and can look each one up in PostgreSQL afterwards:

    - accepted: 202. It must be counted, once.
    - ambiguous: a 5xx, or no answer at all (a broken or reset connection, a timeout). The
      vote may have reached Redis before the failure (say, Redis persisted it and was
      stopped before it could answer), so it may or may not be counted; either is correct.
      A send that raised is ambiguous too: the kernel may have delivered the bytes first.
    - refused: any other answer (4xx), or no connection at all. It must not be counted.

    Bounded: it stops when asked, or after `max_seconds` in any case.

    On http.client, not tests/support/client.py: the books need to know, per request,
    whether it went out on a kept-alive connection and whether any byte may have left.
    requests (urllib3) hides both: it reconnects a stale pooled connection on its own, and
    its retries cannot tell "closed before any answer on a reused connection" (resend
    once, as browsers do) from "broken after sending" (ambiguous, never resent).
    """

    def __init__(
        self,
        host: str,
        port: int,
        per_second: float = 150,
        threads: int = 3,
        max_seconds: float = 120,
        poll: str = "default",
    ) -> None:
        self.host = host
        self.port = port
        self.poll = poll
        self.interval = threads / per_second
        self.threads = threads
        self.max_seconds = max_seconds
        self.accepted: set[str] = set()
        self.ambiguous: set[str] = set()
        self.refused: set[str] = set()
        self.statuses: dict[str, int] = {}
        self.outcomes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    @property
    def voters(self) -> set[str]:
        return self.accepted | self.ambiguous | self.refused

    def __enter__(self) -> SteadyVotes:
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self._workers), "vote threads did not stop"

    def summary(self) -> str:
        return (
            f"accepted={len(self.accepted)} ambiguous={len(self.ambiguous)} "
            f"refused={len(self.refused)} statuses={self.statuses}"
        )

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=15)

    def _run(self, number: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        connection = self._connect()
        body = json.dumps({"option": "ab"[number % 2]})
        next_at = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                voter = secrets.token_hex(16)
                headers = {"Content-Type": "application/json", "Cookie": f"voter_id={voter}"}
                sent = False
                for attempt in range(2):
                    reused = connection.sock is not None
                    try:
                        if not reused:
                            connection.connect()
                        # From here on bytes may leave: a failure is no proof it was unsent.
                        sent = True
                        connection.request("POST", f"/api/polls/{self.poll}/votes", body, headers)
                        response = connection.getresponse()
                        response.read()
                        outcome = str(response.status)
                        break
                    except (OSError, http.client.HTTPException) as error:
                        connection.close()
                        connection = self._connect()
                        outcome = f"{'broken' if sent else 'unconnected'}:{type(error).__name__}"
                        # A kept-alive connection the server closed as it shut down (a
                        # drained or rolled gateway) fails before any answer; browsers
                        # resend on a new connection then, and so do we, once. A vote is
                        # safe to resend: the same voter's same choice is counted once.
                        if not (reused and attempt == 0 and _closed_before_answer(error)):
                            break
                with self._lock:
                    self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
                    self.outcomes[voter] = outcome
                    if outcome == "202":
                        self.accepted.add(voter)
                    elif outcome.startswith(("5", "broken")):
                        self.ambiguous.add(voter)
                    else:
                        self.refused.add(voter)
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            connection.close()


def _closed_before_answer(error: Exception) -> bool:
    """The peer had closed the kept-alive connection: no byte of an answer came back."""
    return isinstance(
        error, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)
    )
