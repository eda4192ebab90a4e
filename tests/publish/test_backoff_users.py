"""The publisher's reconnect, the reader's subscription and the webhook retry with the one Backoff
(oracle/backoff.py), not with loops of their own: each consults Backoff.next() between attempts."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from disputes.model import Event, EventKind
from disputes.notify import Notifier
from oracle.backoff import Backoff
from oracle.client import MarkReader
from oracle.settings import NotifySettings, RedisSettings
from tests.publish.helpers import mark, publisher
from tests.servers import free_port


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Every Backoff.next() call as (initial_s, max_s); each waits 10 ms instead of its real delay."""
    calls: list[tuple[float, float]] = []

    def next_delay(self: Backoff, retry_after: float | None = None) -> float:
        calls.append((self.initial_s, self.max_s))
        return 0.01

    monkeypatch.setattr(Backoff, "next", next_delay)
    return calls


async def until(calls: list[tuple[float, float]], n: int) -> None:
    async with asyncio.timeout(10):
        while len(calls) < n:
            await asyncio.sleep(0.01)


async def test_the_publisher_reconnects_with_backoff(delays: list[tuple[float, float]]) -> None:
    pub = publisher(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", prefix="bo"), timeout_s=0.2)
    with contextlib.suppress(Exception):
        await pub.publish([mark(price=1.0)])
    await until(delays, 3)
    await pub.close()
    assert set(delays) == {(0.05, 0.5)}


async def test_the_readers_subscription_reconnects_with_backoff(delays: list[tuple[float, float]]) -> None:
    reader = MarkReader(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", prefix="bo"), timeout_s=0.2)
    updates = reader.subscribe(["BTC-USD"], backoff_s=(0.2, 2.0))
    consume = asyncio.create_task(anext(aiter(updates)))
    try:
        await until(delays, 3)
    finally:
        consume.cancel()
        with contextlib.suppress(BaseException):
            await consume
        await reader.close()
    assert set(delays) == {(0.2, 2.0)}


async def test_the_webhook_retries_with_backoff(delays: list[tuple[float, float]]) -> None:
    settings = NotifySettings(url=f"http://127.0.0.1:{free_port()}/hook", timeout_ms=500, max_retries=3)
    notifier = Notifier(settings, backoff_s=0.3, max_backoff_s=4.0)
    notifier.start()
    notifier.send(Event(EventKind.TIER_CHANGED, "BTC-USD", 1.0, {"from": 1, "to": 2}))
    async with asyncio.timeout(10):
        while notifier.failed == 0:  # four attempts, three waits between them, then it gives up
            await asyncio.sleep(0.01)
    await notifier.close()
    assert delays == [(0.3, 4.0)] * 3
