from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import SHARED, RedisServer


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"../shared is missing (expected at {SHARED})")
    return SHARED


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """A private redis-server, flushed before each test (it is ours alone, never the shared 6379)."""
    redis_session.flush()
    return redis_session
