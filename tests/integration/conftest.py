"""Fixtures the integration tests share (the servers themselves: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.servers import RedisServer


@pytest.fixture
def clients(redis_server: RedisServer) -> Iterator[list[redis.Redis]]:
    """Redis clients a test opens, closed after it (while the session's server still runs)."""
    opened: list[redis.Redis] = []
    yield opened
    for client in opened:
        client.close()
