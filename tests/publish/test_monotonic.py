"""`seq` rises strictly per market, across publishers and restarts; lower or equal writes are refused."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from oracle.metrics import Metrics
from oracle.publish import RedisPublisher
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.helpers import errors, mark, publisher

K = Keys("t").market("BTC-USD")


async def test_racing_publishers_never_leave_a_lower_seq(settings: RedisSettings) -> None:
    a, b = publisher(settings), publisher(settings)
    raw = Redis.from_url(settings.url, decode_responses=True)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seq = await raw.hget(K.mark, "seq")
            seen.append(int(seq or 0))
            await asyncio.sleep(0)

    async def run(pub: RedisPublisher, price: float) -> list[int]:
        out = []
        for _ in range(150):
            out += [m.seq for m in await pub.publish([mark(price=price)])]
            await asyncio.sleep(0)
        return out

    watcher = asyncio.create_task(watch())
    wrote_a, wrote_b = await asyncio.gather(run(a, 1.0), run(b, 2.0))
    done.set()
    await watcher
    final = int(await raw.hget(K.mark, "seq") or 0)
    await asyncio.gather(a.close(), b.close(), raw.aclose())
    assert seen == sorted(seen), "the stored seq went down"
    assert final == max(wrote_a + wrote_b)
    assert len(set(wrote_a) & set(wrote_b)) == 0, "two accepted writes share a seq"
    assert wrote_a == sorted(wrote_a) and wrote_b == sorted(wrote_b)


async def test_a_lower_seq_is_refused_and_counted_not_raised(settings: RedisSettings) -> None:
    ahead, behind_metrics = publisher(settings), Metrics()
    behind = publisher(settings, behind_metrics)
    await behind.publish([mark(price=1.0)])  # seq 1: behind now knows the market
    for _ in range(5):
        await ahead.publish([mark(price=2.0)])  # it reads 1 back, then writes 2..6
    assert await behind.publish([mark(price=3.0)]) == []  # its seq 2 is refused
    assert errors(behind_metrics) == 1
    [retry] = await behind.publish([mark(price=4.0)])  # and it continues above the stored one
    await asyncio.gather(ahead.close(), behind.close())
    assert retry.seq == 7


async def test_seq_continues_across_a_restart_of_the_publisher(settings: RedisSettings) -> None:
    first = publisher(settings)
    for _ in range(5):
        await first.publish([mark()])
    await first.close()
    second = publisher(settings)
    [m] = await second.publish([mark()])
    await second.close()
    assert m.seq == 6


async def test_seq_never_goes_below_its_own_when_redis_loses_data(settings: RedisSettings) -> None:
    pub = publisher(settings)
    for _ in range(5):
        await pub.publish([mark()])
    raw = Redis.from_url(settings.url)
    await raw.flushall()
    await raw.aclose()
    [m] = await pub.publish([mark()])
    await pub.close()
    assert m.seq == 6
