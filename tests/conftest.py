"""Session-wide real Redis and PostgreSQL servers (see tests/support/servers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.support.servers import PostgresServer, RedisServer, ServerBinaryMissing

Server = TypeVar("Server", RedisServer, PostgresServer)


def _started(make: Callable[[], Server]) -> Iterator[Server]:
    try:
        server = make()
    except ServerBinaryMissing as exc:
        # Fail, never skip: a skipped integration suite looks green and tests nothing.
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()  # also after a failed start: the cluster's private directory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected redis-server with an fsync-always AOF, for the whole session."""
    yield from _started(lambda: RedisServer(tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster with database and superuser ``cloudvote``."""
    yield from _started(lambda: PostgresServer(tmp_path_factory.mktemp("postgres")))
