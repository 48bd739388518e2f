"""Drive `docker compose` for the compose tests: one project, its containers, its HTTP API.

Everything goes through the real CLI (`docker compose ...`, `docker inspect ...`), exactly
as an operator would type it, so the tests check compose.yaml itself, not a model of it.
Image overrides (`*_IMAGE`, `COMPOSE_FILE`) come from the environment; scripts/compose-e2e
loads them from .airgap.env on a machine without a registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.client import Client
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT_SECONDS = 240
COMMAND_TIMEOUT_SECONDS = 300
# The session's measurements, printed by conftest.py at the end of the run.
TIMINGS: dict[str, float] = {}


class ComposeFailed(AssertionError):
    """A docker or docker compose command failed; the message has its output."""


def run(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT_SECONDS,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command),
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise ComposeFailed(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@dataclass
class Project:
    """One compose project (`-p NAME`) with its published gateway port."""

    name: str = "cloudvote"
    port: int = 5000
    env: dict[str, str] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {"CLOUDVOTE_PORT": str(self.port), **self.env}
        return run(["docker", "compose", "-p", self.name, *args], env, timeout, check)

    def up(self) -> float:
        """`up -d --wait`; returns the seconds until every service was healthy."""
        started = time.monotonic()
        try:
            self.compose(
                "up",
                "-d",
                "--wait",
                "--wait-timeout",
                str(UP_TIMEOUT_SECONDS),
                timeout=UP_TIMEOUT_SECONDS + 30,
            )
        except ComposeFailed as error:
            logs = self.compose("logs", "--no-color", "--tail", "30", check=False).stdout
            raise ComposeFailed(f"{error}\n--- service logs\n{logs[-6000:]}") from None
        return time.monotonic() - started

    def down(self, volumes: bool = False) -> None:
        self.compose("down", "--remove-orphans", *(["--volumes"] if volumes else []))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- containers ----------------------------------------------------------------------

    def container_ids(self, service: str | None = None) -> list[str]:
        args = ["ps", "--all", "--quiet", *([service] if service else [])]
        return self.compose(*args).stdout.split()

    def container(self, service: str) -> str:
        ids = self.container_ids(service)
        assert len(ids) == 1, f"expected one {service} container, found {ids}"
        return ids[0]

    def inspect(self, container: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(run(["docker", "inspect", container]).stdout)
        return data[0]

    def wait_healthy(self, service: str, timeout: float = 90) -> None:
        container = self.container(service)

        def health() -> str:
            state = self.inspect(container)["State"]
            return str(state.get("Health", {}).get("Status", state["Status"]))

        wait_until(
            health,
            lambda s: s == "healthy",
            timeout=timeout,
            interval=0.5,
            what=f"{self.name}/{service} healthy",
        )

    # -- the app through the gateway -----------------------------------------------------

    @property
    def http(self) -> Client:
        """The gateway's published port, a new connection a request."""
        return Client(self.base_url, keep_alive=False)

    def vote(self, option: str, poll: str = "default") -> int:
        return self.http.vote(option, poll).status_code

    def results(self, poll: str = "default") -> dict[str, Any]:
        return self.http.results(poll)

    def total(self, poll: str = "default") -> int:
        return self.http.total(poll)

    def stored_voters(self, poll: str = "default") -> set[str]:
        """The voters PostgreSQL holds a vote from, read with psql inside the container."""
        sql = f"SELECT voter_id FROM votes WHERE poll_id = '{poll}'"
        user = os.environ.get("POSTGRES_USER", "cloudvote")
        database = os.environ.get("POSTGRES_DB", "cloudvote")
        output = self.compose(
            "exec", "-T", "postgres", "psql", "-U", user, "-d", database, "-At", "-c", sql
        ).stdout
        return set(output.split())

    def wait_total(self, expected: int, poll: str = "default", timeout: float = 90) -> int:
        return self.http.wait_total(expected, poll, timeout)
