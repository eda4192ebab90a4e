"""Private servers for tests: a real redis-server on a free loopback port, started and stopped here.

Never the machine's shared Redis on 6379: each test session gets its own process and data.
RedisServer lives in oracle.testing so the benchmarks can start one too.
"""

from __future__ import annotations

from pathlib import Path

from oracle.testing import MissingBinary, RedisClusterServers, RedisServer, free_port

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

__all__ = ["SHARED", "MissingBinary", "RedisClusterServers", "RedisServer", "free_port"]
