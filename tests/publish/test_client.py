"""MarkReader: a usable mark or a typed error; subscribe never silently loses an update."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from oracle.client import (
    MarkError,
    MarkHeld,
    MarkMissing,
    MarkReader,
    MarkStale,
    MarkTooOld,
    MarkUnavailable,
    print_marks,
)
from oracle.clock import VirtualClock
from oracle.models import Mark, Status
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.helpers import mark, publisher
from tests.servers import RedisServer

NOW = 1_700_000_000.0


@pytest.fixture
async def reader(settings: RedisSettings):
    r = MarkReader(settings, VirtualClock(NOW))
    yield r
    await r.close()


async def put(settings: RedisSettings, *marks: Mark) -> None:
    pub = publisher(settings)
    await pub.publish(marks)
    await pub.close()


async def test_get_returns_an_ok_or_degraded_mark_within_the_age(settings: RedisSettings, reader: MarkReader) -> None:
    await put(settings, mark("A-USD", 10.5, NOW - 0.5), mark("B-USD", 20.0, NOW - 1, status=Status.DEGRADED, tier=2))
    a = await reader.get("A-USD", max_age_ms=1000)
    b = await reader.get("B-USD", max_age_ms=1000)
    assert (a.price, a.status, a.seq, a.sources) == (10.5, Status.OK, 1, ("coinbase", "kraken", "okx"))
    assert (b.status, b.tier) == (Status.DEGRADED, 2)


@pytest.mark.parametrize(
    ("status", "age_s", "error"),
    [
        (Status.HELD, 0.0, MarkHeld),
        (Status.STALE, 0.0, MarkStale),
        (Status.OK, 1.5, MarkTooOld),
        (Status.DEGRADED, 1.5, MarkTooOld),
    ],
)
async def test_get_raises_on_each_bad_state(
    settings: RedisSettings, reader: MarkReader, status: Status, age_s: float, error: type[MarkError]
) -> None:
    await put(settings, mark("A-USD", 10.0, NOW - age_s, status=status))
    with pytest.raises(error) as caught:
        await reader.get("A-USD", max_age_ms=1000)
    assert isinstance(caught.value, MarkError)
    assert caught.value.market == "A-USD" and caught.value.mark is not None


async def test_get_raises_missing_for_an_absent_or_malformed_mark(settings: RedisSettings, reader: MarkReader) -> None:
    with pytest.raises(MarkMissing):
        await reader.get("NOPE-USD", max_age_ms=1000)
    raw = Redis.from_url(settings.url)
    await raw.hset(Keys("t").market("BAD-USD").mark, mapping={"price": "x", "seq": "1"})
    await raw.aclose()
    with pytest.raises(MarkMissing, match="malformed"):
        await reader.get("BAD-USD", max_age_ms=1000)


async def test_get_raises_unavailable_when_redis_is_down(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    own_server.stop()
    async with MarkReader(settings, timeout_s=0.2) as reader:
        with pytest.raises(MarkUnavailable):
            await reader.get("A-USD", max_age_ms=1000)
    own_server.start()


async def test_subscribe_yields_the_stored_mark_then_updates(settings: RedisSettings) -> None:
    await put(settings, mark("A-USD", 1.0))
    pub = publisher(settings)
    async with MarkReader(settings) as reader, reader.subscribe(["A-USD", "B-USD"]) as marks:
        first = await asyncio.wait_for(anext(marks), 2)
        await pub.publish([mark("B-USD", 2.0), mark("A-USD", 3.0)])
        second = await asyncio.wait_for(anext(marks), 2)
        third = await asyncio.wait_for(anext(marks), 2)
    await pub.close()
    assert (first.market, first.price, first.seq) == ("A-USD", 1.0, 1)
    assert [(m.market, m.price, m.seq) for m in (second, third)] == [("B-USD", 2.0, 1), ("A-USD", 3.0, 2)]


async def test_subscribe_survives_a_restart_and_resyncs_from_the_hash(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    pub = publisher(settings, timeout_s=0.2)
    await pub.publish([mark("A-USD", 1.0)])
    async with MarkReader(settings) as reader, reader.subscribe(["A-USD"], backoff_s=(0.5, 0.5)) as marks:
        assert (await asyncio.wait_for(anext(marks), 2)).price == 1.0
        waiting = asyncio.ensure_future(anext(marks))
        await asyncio.sleep(0.05)
        own_server.stop()
        await asyncio.sleep(0.1)  # the subscriber notices and backs off for 0.5 s
        own_server.start()
        await pub.publish([mark("A-USD", 2.0)])  # missed by pub/sub: nobody is subscribed now
        await asyncio.sleep(0.05)
        await pub.publish([mark("A-USD", 3.0)])
        got = await asyncio.wait_for(waiting, 3)
        assert got.price in (2.0, 3.0)  # 2.0 if it was back in time, else the resync's 3.0
        if got.price == 2.0:
            got = await asyncio.wait_for(anext(marks), 3)
        assert got.price == 3.0 and got.seq >= 2
    await pub.close()


async def test_subscribe_skips_a_malformed_hash_but_serves_the_rest(settings: RedisSettings) -> None:
    raw = Redis.from_url(settings.url)
    await raw.hset(Keys("t").market("BAD-USD").mark, mapping={"price": "x", "seq": "1"})
    await raw.aclose()
    await put(settings, mark("A-USD", 1.0))
    async with MarkReader(settings) as reader, reader.subscribe(["BAD-USD", "A-USD"]) as marks:
        got = await asyncio.wait_for(anext(marks), 2)
    assert (got.market, got.price) == ("A-USD", 1.0)


async def test_print_marks_renders_the_table(settings: RedisSettings) -> None:
    await put(settings, mark("A-USD", 10.5, NOW - 2.0), mark("B-USD", 7.0, NOW, status=Status.HELD))
    out = await print_marks(settings.url, "t", clock=VirtualClock(NOW))
    lines = out.splitlines()
    assert lines[0].split() == ["market", "price", "confidence", "status", "tier", "sources", "age", "seq"]
    assert lines[1].split() == ["A-USD", "10.50000", "1.25000", "ok", "1", "coinbase,kraken,okx", "2.0s", "1"]
    assert lines[2].split()[:4] == ["B-USD", "7.000000", "1.250000", "held"]
    missing = await print_marks(settings.url, "t", ["C-USD"], clock=VirtualClock(NOW))
    assert "missing" in missing.splitlines()[1]


async def test_print_marks_shows_a_price_at_its_markets_precision(settings: RedisSettings) -> None:
    await put(settings, mark("BTC-USD", 29976.127500000002, NOW, confidence=3.0000000000000004))
    out = await print_marks(settings.url, "t", ["BTC-USD"], clock=VirtualClock(NOW))
    assert out.splitlines()[1].split()[:3] == ["BTC-USD", "29976.13", "3.00"]
