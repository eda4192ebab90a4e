from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from disputes.store import DisputeStore
from tests.servers import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[DisputeStore]:
    s = DisputeStore(aioredis.Redis.from_url(redis_server.url, decode_responses=True), prefix="t")
    yield s
    await s.close()
