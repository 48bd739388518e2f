"""The server fixtures themselves: if these lie, every integration test above them lies."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.support.servers import PostgresServer, RedisServer


def test_redis_rejects_clients_without_the_password(redis_server: RedisServer) -> None:
    with (
        redis.Redis.from_url(redis_server.url) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    with redis.Redis.from_url(redis_server.url, password=redis_server.password) as client:
        assert client.ping()


def test_redis_url_carries_no_password(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.password not in redis_server.url


def test_redis_stream_survives_sigkill(redis_server: RedisServer) -> None:
    redis_server.flush()
    with redis_server.client() as client:
        entry_id = client.xadd("votes", {"voter": "v1", "option": "a"})
    old_pid = redis_server.pid

    redis_server.kill()  # appendfsync always: the XADD reply meant it was on disk
    assert not redis_server.running
    redis_server.start()

    assert redis_server.pid != old_pid
    with redis_server.client() as client:
        assert client.xrange("votes") == [(entry_id, {b"voter": b"v1", b"option": b"a"})]
    redis_server.flush()


def test_redis_flush_empties_every_database(redis_server: RedisServer) -> None:
    with redis_server.client(db=3) as client:
        client.set("k", "v")
        redis_server.flush()
        assert client.dbsize() == 0


def test_postgres_requires_the_password(postgres_server: PostgresServer) -> None:
    assert postgres_server.password not in postgres_server.url
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(postgres_server.url, password="wrong").close()
    with psycopg.connect(postgres_server.url, password=postgres_server.password) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("cloudvote", "cloudvote")


@pytest.mark.parametrize("restart", ["stop", "kill"])
def test_postgres_committed_rows_survive_a_restart(
    postgres_server: PostgresServer, restart: str
) -> None:
    url = postgres_server.new_database(f"survives_{restart}")
    with psycopg.connect(url, password=postgres_server.password) as conn:
        conn.execute("CREATE TABLE votes (voter text PRIMARY KEY, option text)")
        conn.execute("INSERT INTO votes VALUES ('v1', 'a')")
    # Left open across the restart, like an app's pool: stop() must not wait for it.
    idle = psycopg.connect(url, password=postgres_server.password)
    try:
        getattr(postgres_server, restart)()
        assert not postgres_server.running
        postgres_server.start()
    finally:
        idle.close()

    with psycopg.connect(url, password=postgres_server.password) as conn:
        assert conn.execute("SELECT voter, option FROM votes").fetchall() == [("v1", "a")]


def test_new_database_is_empty_and_separate(postgres_server: PostgresServer) -> None:
    first = postgres_server.new_database("isolation_first")
    second = postgres_server.new_database("isolation_second")
    assert first == f"postgresql://cloudvote@127.0.0.1:{postgres_server.port}/isolation_first"

    with psycopg.connect(first, password=postgres_server.password) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    with psycopg.connect(second, password=postgres_server.password) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert tables == []

    with pytest.raises(psycopg.errors.DuplicateDatabase):
        postgres_server.new_database("isolation_first")
