"""Session-wide real Redis and PostgreSQL servers (see tests/support/servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import PostgresServer, RedisServer, ServerBinaryMissing


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected redis-server with an fsync-always AOF, for the whole session."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except ServerBinaryMissing as exc:
        # Fail, never skip: a skipped integration suite looks green and tests nothing.
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster with database and superuser ``cloudvote``."""
    try:
        server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    except ServerBinaryMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()
