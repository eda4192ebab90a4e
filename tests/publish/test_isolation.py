"""One market's fault is that market's alone: a key of the wrong type, or Redis refusing writes (OOM),
never stops the other markets, never leaves a half-written mark, and never lowers or skips a seq."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from oracle.metrics import Metrics
from oracle.publish import RedisPublisher
from oracle.schema import Keys, MarketKeys
from oracle.settings import RedisSettings
from tests.publish.conftest import PREFIX
from tests.publish.helpers import errors, eventually, mark, publisher
from tests.servers import RedisServer, needs_redis_7

MARKETS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD")
BAD = "ETH-USD"
KEYS = Keys(PREFIX)

Corrupt = Callable[[Redis, MarketKeys], Awaitable[object]]


async def _mark_is_a_string(r: Redis, k: MarketKeys) -> object:
    return await r.set(k.mark, "not a hash")


async def _mark_seq_is_not_a_number(r: Redis, k: MarketKeys) -> object:
    return await r.hset(k.mark, "seq", "many")


async def _history_is_a_string(r: Redis, k: MarketKeys) -> object:
    return await r.set(k.history, "not a stream")


async def _provisional_is_a_list(r: Redis, k: MarketKeys) -> object:
    await r.delete(k.provisional)
    return await r.rpush(k.provisional, "x")


async def _fence_is_a_plain_string(r: Redis, k: MarketKeys) -> object:
    return await r.set(k.fence, "not a number")


async def _fence_is_a_hash(r: Redis, k: MarketKeys) -> object:
    await r.delete(k.fence)
    return await r.hset(k.fence, "token", "1")


CORRUPTIONS = {  # the key at fault (a MarketKeys field) and what is done to it
    "mark": ("mark", _mark_is_a_string),
    "mark-seq": ("mark", _mark_seq_is_not_a_number),
    "history": ("history", _history_is_a_string),
    "provisional": ("provisional", _provisional_is_a_list),
    "fence": ("fence", _fence_is_a_plain_string),
    "fence-hash": ("fence", _fence_is_a_hash),
}


@pytest.fixture
async def raw(settings: RedisSettings):
    client = Redis.from_url(settings.url, decode_responses=True)
    yield client
    await client.aclose()


def market_errors(metrics: Metrics, market: str, code: str) -> float:
    value = metrics.registry.get_sample_value("markd_publish_market_errors_total", {"market": market, "code": code})
    return value or 0.0


async def stored_seq(r: Redis, market: str) -> int:
    return int(await r.hget(KEYS.market(market).mark, "seq") or 0)


async def publish_all(pub: RedisPublisher, price: float, fence: int | None = 1) -> set[str]:
    written = await pub.publish([mark(m, price) for m in MARKETS], fence=fence)
    return {m.market for m in written}


@pytest.mark.parametrize(("field", "corrupt"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_wrong_typed_key_stops_its_market_only(
    settings: RedisSettings, raw: Redis, field: str, corrupt: Corrupt, caplog: pytest.LogCaptureFixture
) -> None:
    await raw.set(KEYS.epoch, "1")  # fence token 1 is the current leader's
    metrics = Metrics()
    pub = publisher(settings, metrics)
    assert await publish_all(pub, 100.0) == set(MARKETS)
    bad_keys = KEYS.market(BAD)
    await corrupt(raw, bad_keys)
    before = {m: await stored_seq(raw, m) for m in MARKETS if m != BAD}
    caplog.set_level(logging.INFO, logger="oracle.publish")

    for i in range(3):
        assert await publish_all(pub, 101.0 + i) == set(MARKETS) - {BAD}
    assert pub.connected  # not taken for an outage: no reconnect loop
    assert {m: await stored_seq(raw, m) for m in before} == {m: s + 3 for m, s in before.items()}
    assert market_errors(metrics, BAD, "wrong_type") == 3
    assert all(market_errors(metrics, m, "wrong_type") == 0 for m in before)
    assert set(pub.market_errors) == {BAD}
    if await raw.type(bad_keys.mark) == "hash":  # nothing of a refused mark was written
        assert await raw.hget(bad_keys.mark, "price") == "100.0"
        assert await raw.xlen(bad_keys.history) == 1 if field != "history" else True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per fault, not once per tick
    assert getattr(bad_keys, field) in warnings[0]  # naming the key

    # Repaired: the market's newest mark goes out with the next publish even when that brings no
    # mark of it, continuing its seq with no gap (the refused marks gave theirs back).
    await raw.delete(getattr(bad_keys, field))
    written = await pub.publish([mark("BTC-USD", 200.0)], fence=1)
    assert {m.market: m.seq for m in written} == {"BTC-USD": before["BTC-USD"] + 4, BAD: 2}
    assert await raw.hget(bad_keys.mark, "price") == "103.0"  # the newest of the refused marks
    assert pub.market_errors == {}
    assert any(f"{BAD} publishes again" in r.getMessage() for r in caplog.records)
    await pub.close()


async def test_a_new_publisher_claims_every_market_but_the_broken_one(settings: RedisSettings, raw: Redis) -> None:
    """The read-back of stored seqs (before a publisher's first write) is isolated the same way."""
    first = publisher(settings)
    await publish_all(first, 100.0, fence=None)
    await first.close()
    await raw.set(KEYS.market(BAD).mark, "not a hash")
    metrics = Metrics()
    pub = publisher(settings, metrics)
    written = await pub.publish([mark(m, 101.0) for m in MARKETS])
    assert {m.market: m.seq for m in written} == {m: 2 for m in MARKETS if m != BAD}
    assert market_errors(metrics, BAD, "wrong_type") == 1 and pub.connected
    await raw.delete(KEYS.market(BAD).mark)
    assert [(m.market, m.seq) for m in await pub.publish([])] == [(BAD, 1)]  # Redis lost it: seq restarts
    await pub.close()


@needs_redis_7("an OOM inside a script reported as OOM")
async def test_redis_out_of_memory_fails_the_writes_not_the_connection(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix=PREFIX, history_maxlen=50)
    raw = Redis.from_url(settings.url, decode_responses=True)
    metrics = Metrics()
    pub = publisher(settings, metrics)
    assert await publish_all(pub, 100.0, fence=None) == set(MARKETS)
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")  # every write now answers OOM; reads and PING still work
    for i in range(3):
        assert await publish_all(pub, 101.0 + i, fence=None) == set()
    assert pub.refused is not None and "OutOfMemoryError" in pub.refused
    assert pub.connected and await pub.ping()
    assert pub.market_errors == {}  # not the markets' fault: `refused` says it once
    assert all(market_errors(metrics, m, "redis_error") == 3 for m in MARKETS)

    await raw.config_set("maxmemory", "0")
    written = await pub.publish([])  # the newest refused marks go out, seqs continuing with no gap
    assert {(m.market, m.seq, m.price) for m in written} == {(m, 2, 103.0) for m in MARKETS}
    assert pub.refused is None and pub.market_errors == {}
    await pub.close()
    await raw.aclose()


async def test_a_publish_may_take_longer_the_more_marks_it_carries(own_server: RedisServer) -> None:
    """A tick's publish at 5,000 markets outlasts a tick while Redis is healthy, so its timeout is
    the tick's plus 0.2 ms a mark (bench/scale.py: no publish error at 5,000 markets, tick 250 ms).
    What that budget still bounds: 2 marks wait 0.1 s for a Redis that holds every write for 300 ms
    (CLIENT PAUSE), then fail, are counted and kept for the next publish."""
    settings = RedisSettings(url=own_server.url, prefix=PREFIX, history_maxlen=50)
    raw = Redis.from_url(settings.url, decode_responses=True)
    metrics = Metrics()
    pub = publisher(settings, metrics, timeout_s=0.1)
    assert pub.budget_s(5000) == pytest.approx(1.1) and pub.budget_s(2) == pytest.approx(0.1004)
    assert len(await pub.publish([mark(f"S{i}", 1.0) for i in range(2)])) == 2
    await raw.execute_command("CLIENT", "PAUSE", "300", "WRITE")
    assert await pub.publish([mark(f"S{i}", 2.0) for i in range(2)]) == [] and errors(metrics) == 2
    assert not pub.connected  # taken for an outage: the background reconnect writes them
    await raw.execute_command("CLIENT", "UNPAUSE")
    assert await eventually(lambda: _connected(pub), within_s=5.0) >= 0
    assert await raw.hget(KEYS.market("S0").mark, "price") == "2.0"
    await asyncio.gather(pub.close(), raw.aclose())


async def _connected(pub: RedisPublisher) -> bool:
    return pub.connected
