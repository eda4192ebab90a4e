"""The perp publisher keeps the mark publisher's failure model (oracle.publish.RedisPerpPublisher):
through an outage the newest perp mark per market is kept and goes out once Redis is back, with seq
never going down; one market's broken key, or a call Redis refuses, stops only what it must, on a
single server and on a Cluster, and its newest perp goes out once repaired, its seq gapless."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from oracle.connection import connect
from oracle.metrics import Metrics
from oracle.models import PerpMark, Status
from oracle.publish import RedisPerpPublisher, RedisPublisher
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.conftest import PREFIX
from tests.publish.helpers import errors, eventually, mark, publisher
from tests.servers import RedisClusterServers, RedisServer, needs_redis_7

MARKETS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "ADA-USD", "DOGE-USD")
BAD = "ETH-USD"
KEYS = Keys(PREFIX)
NOW = 1_700_000_000.0


def perp(market: str = "BTC-USD", price: float = 100.0, ts: float = NOW) -> PerpMark:
    """A perp mark as the pipeline hands it over: seq 0, the publisher assigns it."""
    return PerpMark(market, price, 99.9, price - 0.1, price + 0.1, price, ts, 0, Status.OK)


def market_errors(metrics: Metrics, market: str, code: str) -> float:
    value = metrics.registry.get_sample_value("markd_publish_market_errors_total", {"market": market, "code": code})
    return value or 0.0


async def stored(r: Any, market: str) -> dict[str, str]:
    return dict(await r.hgetall(KEYS.perp(market)[0]))


def prices_and_seqs(written: list[PerpMark]) -> dict[str, tuple[float, int]]:
    return {p.market: (p.price, p.seq) for p in written}


@pytest.fixture
async def raw(settings: RedisSettings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.url, decode_responses=True)
    yield client
    await client.aclose()


# --- outages ----------------------------------------------------------------------------------------


async def test_after_an_outage_the_newest_perp_of_every_market_goes_out(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix=PREFIX)
    metrics = Metrics()
    marks = publisher(settings, metrics, timeout_s=0.1)
    perps = RedisPerpPublisher(marks)
    await marks.publish([mark("BTC-USD"), mark("ETH-USD")])
    assert len(await perps.publish([perp("BTC-USD", 1.0), perp("ETH-USD", 1.0)])) == 2
    own_server.stop()
    for i in range(2, 6):  # the daemon's ticks: the marks fail first (and reconnect), then the perps
        assert await marks.publish([mark("BTC-USD")]) == []
        assert await perps.publish([perp("BTC-USD", float(i))] + ([perp("ETH-USD", 2.0)] if i == 2 else [])) == []
    assert perps.pending == ["BTC-USD", "ETH-USD"] and errors(metrics) >= 5
    own_server.start()  # an empty Redis: it lost everything
    await eventually(lambda: _connected(marks), within_s=5.0)

    written = await perps.publish([])  # a tick that brings no perp mark of its own
    raw = Redis.from_url(settings.url, decode_responses=True)
    history = await raw.xrange(KEYS.perp("BTC-USD")[1])
    await asyncio.gather(marks.close(), raw.aclose())
    # The newest of each market, its seq going on from the publisher's own (1), not from Redis' (none)
    assert prices_and_seqs(written) == {"BTC-USD": (5.0, 2), "ETH-USD": (2.0, 2)}
    assert [f["price"] for _, f in history] == ["5.0"]  # no backlog of the older ones
    assert perps.pending == []


async def test_a_perp_publish_over_its_budget_is_kept_for_the_next(own_server: RedisServer) -> None:
    """Redis stops answering between the marks' write and the perps': the perps fail on their own
    budget and go out with the next publish once it answers again."""
    settings = RedisSettings(url=own_server.url, prefix=PREFIX)
    metrics = Metrics()
    marks = publisher(settings, metrics, timeout_s=0.1)
    perps = RedisPerpPublisher(marks)
    assert len(await perps.publish([perp(price=1.0)])) == 1
    assert own_server.proc is not None
    own_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        assert await perps.publish([perp(price=2.0)]) == []
    finally:
        own_server.proc.send_signal(signal.SIGCONT)
    assert perps.pending == ["BTC-USD"] and errors(metrics) == 1
    written = await perps.publish([])
    # Seq 2 went out with the write that timed out (Redis may yet have run it): never used again.
    assert [(p.price, p.seq) for p in written] == [(2.0, 3)]
    await marks.close()


# --- one market's fault -----------------------------------------------------------------------------

Corrupt = Callable[[Any, str], Awaitable[object]]


async def _perp_is_a_string(r: Any, market: str) -> object:
    return await r.set(KEYS.perp(market)[0], "not a hash")


async def _perp_seq_is_not_a_number(r: Any, market: str) -> object:
    return await r.hset(KEYS.perp(market)[0], "seq", "many")


async def _history_is_a_string(r: Any, market: str) -> object:
    return await r.set(KEYS.perp(market)[1], "not a stream")


async def _fence_is_a_hash(r: Any, market: str) -> object:
    return await r.hset(KEYS.market(market).fence, "token", "1")


CORRUPTIONS: dict[str, tuple[Corrupt, Callable[[str], str]]] = {  # what is done, and the key named
    "perp": (_perp_is_a_string, lambda m: KEYS.perp(m)[0]),
    "perp-seq": (_perp_seq_is_not_a_number, lambda m: KEYS.perp(m)[0]),
    "perp_history": (_history_is_a_string, lambda m: KEYS.perp(m)[1]),
    "fence": (_fence_is_a_hash, lambda m: KEYS.market(m).fence),
}


@pytest.mark.parametrize(("corrupt", "key_of"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_wrong_typed_key_stops_its_market_only(
    settings: RedisSettings,
    raw: Redis,
    corrupt: Corrupt,
    key_of: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    marks = publisher(settings, metrics)
    perps = RedisPerpPublisher(marks)
    assert len(await perps.publish([perp(m, 100.0) for m in MARKETS], fence=None)) == len(MARKETS)
    await corrupt(raw, BAD)
    caplog.set_level(logging.INFO, logger="oracle.publish")

    for i in range(3):
        written = await perps.publish([perp(m, 101.0 + i) for m in MARKETS])
        assert prices_and_seqs(written) == {m: (101.0 + i, 2 + i) for m in MARKETS if m != BAD}
    assert marks.connected  # not taken for an outage
    assert market_errors(metrics, BAD, "wrong_type") == 3 and set(perps.market_errors) == {BAD}
    bad = await raw.type(KEYS.perp(BAD)[0])
    if bad == "hash":  # nothing of a refused perp was written
        assert (await raw.hget(KEYS.perp(BAD)[0], "price")) == "100.0"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and key_of(BAD) in warnings[0], warnings  # once per fault, naming the key

    # Repaired: its newest perp goes out with the next publish, even one without a perp of it.
    await raw.delete(key_of(BAD))  # its seq goes on from ours (1: the refused ones gave theirs back)
    written = await perps.publish([perp("BTC-USD", 200.0)])
    assert prices_and_seqs(written) == {"BTC-USD": (200.0, 5), BAD: (103.0, 2)}
    assert (await stored(raw, BAD))["price"] == "103.0"
    assert perps.market_errors == {} and perps.pending == []
    assert any(f"{BAD} perp mark publishes again" in r.getMessage() for r in caplog.records)
    await marks.close()


async def test_a_new_publisher_reads_back_every_perp_seq_but_the_broken_one(
    settings: RedisSettings, raw: Redis
) -> None:
    first = RedisPerpPublisher(publisher(settings))
    await first.publish([perp(m) for m in MARKETS])
    await first._marks.close()
    await _perp_is_a_string(raw, BAD)
    metrics = Metrics()
    marks = publisher(settings, metrics)
    perps = RedisPerpPublisher(marks)
    written = await perps.publish([perp(m, 101.0) for m in MARKETS])
    assert prices_and_seqs(written) == {m: (101.0, 2) for m in MARKETS if m != BAD}
    assert market_errors(metrics, BAD, "wrong_type") == 1 and perps.pending == [BAD]
    await raw.delete(KEYS.perp(BAD)[0])
    assert prices_and_seqs(await perps.publish([])) == {BAD: (101.0, 1)}  # Redis lost it: seq restarts
    await marks.close()


@needs_redis_7("an OOM inside a script reported as OOM")
async def test_redis_out_of_memory_fails_the_perp_writes_not_the_connection(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix=PREFIX, history_maxlen=50)
    raw = Redis.from_url(settings.url, decode_responses=True)
    metrics = Metrics()
    marks = publisher(settings, metrics)
    perps = RedisPerpPublisher(marks)
    assert len(await perps.publish([perp(m) for m in MARKETS])) == len(MARKETS)
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")  # every write now answers OOM; reads and PING still work
    for i in range(3):
        assert await perps.publish([perp(m, 101.0 + i) for m in MARKETS]) == []
    assert marks.connected and all(market_errors(metrics, m, "redis_error") == 3 for m in MARKETS)
    await raw.config_set("maxmemory", "0")
    written = await perps.publish([])  # the newest refused perps go out, seqs continuing with no gap
    assert prices_and_seqs(written) == {m: (103.0, 2) for m in MARKETS}
    assert perps.market_errors == {}
    await asyncio.gather(marks.close(), raw.aclose())


# --- a Cluster --------------------------------------------------------------------------------------


@pytest.fixture
def cluster_settings(redis_cluster: RedisClusterServers) -> RedisSettings:
    redis_cluster.flush()
    return RedisSettings(url=redis_cluster.url, prefix=PREFIX, cluster=True, history_maxlen=100)


async def test_on_a_cluster_one_broken_market_does_not_fail_the_others(cluster_settings: RedisSettings) -> None:
    markets = [f"C{i}-USD" for i in range(12)]
    broken = markets[5]
    metrics = Metrics()
    marks = publisher(cluster_settings, metrics, timeout_s=2.0)
    perps = RedisPerpPublisher(marks)
    assert len(await perps.publish([perp(m) for m in markets])) == 12
    raw = connect(cluster_settings, timeout_s=2.0)
    await _perp_is_a_string(raw, broken)
    written = await perps.publish([perp(m, 101.0) for m in markets])
    assert prices_and_seqs(written) == {m: (101.0, 2) for m in markets if m != broken}
    assert market_errors(metrics, broken, "wrong_type") == 1 and marks.connected
    # A new publisher (a restart) reads every seq back but the broken one, on the nodes that hold them.
    fresh = RedisPerpPublisher(publisher(cluster_settings, timeout_s=2.0))
    written = await fresh.publish([perp(m, 102.0) for m in markets])
    assert prices_and_seqs(written) == {m: (102.0, 3) for m in markets if m != broken}
    await raw.delete(KEYS.perp(broken)[0])
    assert prices_and_seqs(await perps.publish([])) == {broken: (101.0, 2)}  # gapless: 1 was its last
    await asyncio.gather(marks.close(), fresh._marks.close(), raw.aclose())


async def _connected(pub: RedisPublisher) -> bool:
    return pub.connected
