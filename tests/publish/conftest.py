from __future__ import annotations

from collections.abc import Iterator

import pytest

from oracle.settings import RedisSettings
from tests.servers import RedisClusterServers, RedisServer

PREFIX = "t"


@pytest.fixture
def settings(redis_server: RedisServer) -> RedisSettings:
    return RedisSettings(url=redis_server.url, prefix=PREFIX, history_maxlen=50)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, for tests that stop, pause or restart it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(3).start()
    yield cluster
    cluster.stop()
