from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from oracle.clock import WallClock
from oracle.metrics import Metrics
from oracle.models import Mark, Status
from oracle.publish import RedisPublisher
from oracle.settings import RedisSettings
from oracle.signing import Signer

SOURCES = ("coinbase", "kraken", "okx")


def mark(
    market: str = "BTC-USD",
    price: float = 65000.5,
    ts: float | None = None,
    *,
    status: Status = Status.OK,
    tier: int = 1,
    confidence: float = 1.25,
    sources: tuple[str, ...] = SOURCES,
    candidate: float | None = None,
) -> Mark:
    """A mark as the dispute stage hands it to the sink: seq 0, the sink assigns it."""
    ts = time.time() if ts is None else ts
    cand = price if candidate is None else candidate
    return Mark(market, price, confidence, ts, 0, status, tier, sources, candidate=cand)


def publisher(
    settings: RedisSettings, metrics: Metrics | None = None, timeout_s: float = 2.0, signer: Signer | None = None
) -> RedisPublisher:
    # 2 s, not the daemon's one tick: a test that expects its write must not lose it to a loaded
    # machine (a first publish also connects and loads the script). Budget tests pass their own.
    return RedisPublisher(settings, metrics or Metrics(), WallClock(), timeout_s=timeout_s, signer=signer)


def errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("markd_publish_errors_total") or 0.0


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float, step_s: float = 0.02) -> float:
    """Seconds until `check` holds, failing after `within_s`."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within_s:
            raise AssertionError(f"not within {within_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - start
