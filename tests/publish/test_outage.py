"""Redis down or slow: publish never raises, never blocks past its budget, counts the failures, and on
reconnect writes only the newest mark per market, in the background."""

from __future__ import annotations

import asyncio
import signal
import time

from redis.asyncio import Redis

from oracle.metrics import Metrics
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.helpers import errors, eventually, mark, publisher
from tests.servers import RedisServer

K = Keys("t").market("BTC-USD")


async def test_restart_delivers_only_the_newest_mark_within_a_second(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    metrics = Metrics()
    pub = publisher(settings, metrics, timeout_s=0.1)
    for i in range(5):
        assert len(await pub.publish([mark(price=100.0 + i)])) == 1
    own_server.stop()
    for i in range(5, 20):  # Redis is down: every tick still returns, within budget
        started = time.monotonic()
        assert await pub.publish([mark(price=100.0 + i), mark("ETH-USD", price=i)]) == []
        assert time.monotonic() - started < 0.3
    assert errors(metrics) == 30
    assert not pub.connected
    own_server.start()  # an empty Redis: it lost everything
    raw = Redis.from_url(settings.url, decode_responses=True)

    async def newest_arrived() -> bool:
        return await raw.hget(K.mark, "price") == "119.0"

    waited = await eventually(newest_arrived, within_s=1.0)
    history = await raw.xrange(K.history)
    eth = await raw.hgetall(Keys("t").market("ETH-USD").mark)
    reconnected = pub.connected
    await asyncio.gather(pub.close(), raw.aclose())
    assert waited < 1.0
    assert [fields["price"] for _, fields in history] == ["119.0"]  # no backlog of older marks
    assert int(history[0][1]["seq"]) > 5  # and seq went on from the publisher's own
    assert eth["price"] == "19.0"  # an int price is still written as a float's repr
    assert reconnected


async def test_no_older_mark_overwrites_the_newest_after_a_restart(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    pub = publisher(settings, timeout_s=0.1)
    await pub.publish([mark(price=1.0)])
    own_server.stop()
    await pub.publish([mark(price=2.0)])
    own_server.start()
    raw = Redis.from_url(settings.url, decode_responses=True)
    seqs: list[int] = []
    prices: list[str] = []
    for i in range(3, 40):  # keep ticking through the reconnect, as the daemon does
        await pub.publish([mark(price=float(i))])
        stored = await raw.hgetall(K.mark)
        if stored:
            seqs.append(int(stored["seq"]))
            prices.append(stored["price"])
        await asyncio.sleep(0.02)
    await asyncio.gather(pub.close(), raw.aclose())
    assert seqs == sorted(seqs)
    assert [float(p) for p in prices] == sorted(float(p) for p in prices)
    assert prices[-1] == "39.0"


async def test_a_paused_redis_costs_at_most_the_budget(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    metrics = Metrics()
    pub = publisher(settings, metrics, timeout_s=0.1)
    await pub.publish([mark(price=1.0)])
    assert own_server.proc is not None
    own_server.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        assert await pub.publish([mark(price=2.0)]) == []
        slow = time.monotonic() - started
        for i in range(3, 6):
            assert await pub.publish([mark(price=float(i))]) == []  # no waiting while it is known down
    finally:
        own_server.proc.send_signal(signal.SIGCONT)
    raw = Redis.from_url(settings.url, decode_responses=True)

    async def caught_up() -> bool:
        return await raw.hget(K.mark, "price") == "5.0"

    await eventually(caught_up, within_s=2.0)
    await asyncio.gather(pub.close(), raw.aclose())
    assert slow < 0.25
    assert errors(metrics) == 4


async def test_publish_after_close_is_counted_not_raised(settings: RedisSettings) -> None:
    metrics = Metrics()
    pub = publisher(settings, metrics)
    await pub.close()
    assert await pub.publish([mark()]) == []
    assert errors(metrics) == 1
