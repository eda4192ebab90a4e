"""/readyz says what the margin engine sees in Redis, not only what the daemon computed: the daemon's
own tick path (Service._tick_once) against a real redis-server, asked through real HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from feeds.adapter import QuoteBatch
from oracle.clock import VirtualClock
from oracle.http import build_app
from oracle.models import Quote
from oracle.schema import Keys
from oracle.service import Service
from oracle.settings import Settings
from tests.servers import RedisServer, needs_redis_7

MARKETS = ("BTC-USD", "ETH-USD", "SOL-USD")
SOURCES = ("a", "b", "c")
PREFIX = "ready"
START = 1_700_000_000.0


def settings(url: str) -> Settings:
    return Settings.model_validate(
        {
            "service": {"tick_ms": 100},
            "redis": {"url": url, "prefix": PREFIX},
            "policy": {"max_age_ms": 500, "heartbeat_ms": 100, "min_sources": 3},
            "sources": {s: {"kind": "coinbase"} for s in SOURCES},
            "markets": {m: {"sources": [{"source": s, "pair": m} for s in SOURCES]} for m in MARKETS},
        }
    )


class Replica:
    """One replica's Service, ticked by hand on a VirtualClock, its HTTP app served on loopback."""

    def __init__(self, url: str, clock: VirtualClock, name: str) -> None:
        self.clock = clock
        self.service = Service(settings(url), clock=clock, replica_id=name)
        self.client = TestClient(TestServer(build_app(self.service)))

    async def tick(self, price: float = 100.0, *, overlap: bool = False) -> None:
        quotes = [Quote(source, market, price, self.clock.now()) for market in MARKETS for source in SOURCES]
        for batch in QuoteBatch.of(quotes):
            self.service._on_batch(batch)
        await self.service._tick_once(overlap=overlap)

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        response = await self.client.get("/readyz")
        return response.status, await response.json()

    async def close(self) -> None:
        await self.client.close()
        for close in (self.service.lease.close, self.service.publisher.close, self.service.disputes.store.close):
            await close()


@pytest.fixture
async def leader(redis_server: RedisServer) -> AsyncIterator[Replica]:
    replica = Replica(redis_server.url, VirtualClock(START), "leader")
    await replica.client.start_server()
    await replica.tick()
    assert replica.service.leading
    yield replica
    await replica.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_ready_when_every_market_reached_redis(leader: Replica) -> None:
    assert await leader.readyz() == (200, {"ready": True, "reasons": [], "leader": True})


async def test_a_wrong_typed_key_is_its_markets_reason_and_the_others_publish(leader: Replica, raw: Redis) -> None:
    keys = Keys(PREFIX)
    await raw.set(keys.market("ETH-USD").mark, "a plain string")
    seqs = {m: int(await raw.hget(keys.market(m).mark, "seq") or 0) for m in ("BTC-USD", "SOL-USD")}
    for _ in range(3):
        leader.clock.advance(0.1)
        await leader.tick(100.0 + leader.clock.now() - START)
    status, body = await leader.readyz()
    assert status == 503
    why = f"key {PREFIX}:{{ETH-USD}}:mark holds the wrong type or a non-number"
    assert body["reasons"] == [f"ETH-USD: not published: {why}"]
    for market, seq in seqs.items():
        assert int(await raw.hget(keys.market(market).mark, "seq") or 0) == seq + 3
    sample = leader.service.metrics.registry.get_sample_value
    assert sample("markd_publish_market_errors_total", {"market": "ETH-USD", "code": "wrong_type"}) == 3


@needs_redis_7("an OOM inside a script reported as OOM")
async def test_marks_that_do_not_reach_redis_make_the_leader_unready_and_not_the_standby(
    own_server: RedisServer,
) -> None:
    """Redis full (maxmemory, noeviction): PING answers and the marks are computed fresh, yet none is
    stored. The leader says so at once (Redis' refusal) and, past max_age_ms, market by market. A
    standby, which writes nothing, answers for itself: ready to take over."""
    clock = VirtualClock(START)
    leader, standby = Replica(own_server.url, clock, "leader"), Replica(own_server.url, clock, "standby")
    for replica in (leader, standby):
        await replica.client.start_server()
        await replica.tick()
    assert leader.service.leading and not standby.service.leading
    assert (await leader.readyz())[0] == 200

    raw = Redis.from_url(own_server.url, decode_responses=True)
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")
    for _ in range(6):  # 0.6 s: past max_age_ms (0.5 s); fresh quotes, so every mark is fresh
        clock.advance(0.1)
        for replica in (leader, standby):
            await replica.tick(100.0 + clock.now() - START)
    status, body = await leader.readyz()
    assert status == 503 and body["leader"] is True
    assert body["reasons"][0].startswith("redis: Redis refused the write: OutOfMemoryError")
    assert body["reasons"][1:] == [f"{m}: mark in Redis is 0.6s old" for m in MARKETS]
    assert await standby.readyz() == (200, {"ready": True, "reasons": [], "leader": False})

    await raw.config_set("maxmemory", "0")
    clock.advance(0.1)
    await leader.tick(200.0)
    assert await leader.readyz() == (200, {"ready": True, "reasons": [], "leader": True})
    await raw.aclose()
    for replica in (leader, standby):
        await replica.close()


async def test_the_tick_never_waits_for_the_dispute_events_writes(redis_server: RedisServer) -> None:
    """Every market's first mark is a tier change: 5,000 events on the first tick at 5,000 markets.
    Their writes (audit stream, webhook, logs) go through a recorder task, in tick order, so a slow
    or hung audit never holds the tick, the first marks or the lease."""
    replica = Replica(redis_server.url, VirtualClock(START), "leader")
    service = replica.service
    release = asyncio.Event()
    recorded: list[str] = []

    async def hung_record(events: Any) -> None:
        await release.wait()
        recorded.extend(f"{e.kind.value}:{e.market}" for e in events)

    service.disputes.record = hung_record  # type: ignore[method-assign]
    recorder = asyncio.create_task(service._record_events())
    await asyncio.wait_for(replica.tick(), 5.0)  # with the audit hung, the tick still completes
    assert service.leading and len(service._published) == len(MARKETS)
    release.set()
    service._recording = False
    service._events_queued.set()
    await asyncio.wait_for(recorder, 5.0)
    assert recorded == [f"tier_changed:{m}" for m in MARKETS]
    await replica.close()


async def test_a_metrics_scrape_renders_off_the_loop_while_the_tick_goes_on(leader: Replica) -> None:
    """At 5,000 markets the text takes seconds to render: it is made on a worker thread, so ticks go
    on meanwhile, and scrapes that come during one render share it. Here the render is held until
    the test has ticked: with the render on the loop, the tick could only run after it."""
    order: list[str] = []
    held = threading.Event()
    render = leader.service.metrics.render
    calls = 0

    def slow_render() -> bytes:
        nonlocal calls
        calls += 1
        held.wait(5.0)
        order.append("rendered")
        return render()

    leader.service.metrics.render = slow_render  # type: ignore[method-assign]
    scrapes = [asyncio.create_task(leader.client.get("/metrics")) for _ in range(2)]
    await asyncio.sleep(0.05)  # both requests are in, the render has begun
    leader.clock.advance(0.1)
    await leader.tick(101.0)
    order.append("ticked")
    held.set()
    responses = await asyncio.gather(*scrapes)
    assert order == ["ticked", "rendered"] and calls == 1
    texts = [await r.text() for r in responses]
    assert texts[0] == texts[1]
    assert 'markd_mark_price{market="BTC-USD"} 100.0' in texts[0]  # the marks as of the scrape's start
    assert 'markd_quote_age_seconds{pair="ETH-USD",source="b"}' in texts[0]
    leader.clock.advance(0.1)
    text = await (await leader.client.get("/metrics")).text()  # a later scrape renders anew
    assert 'markd_mark_price{market="BTC-USD"} 101.0' in text and calls == 2


async def test_the_next_tick_computes_while_redis_writes_the_last_ones_marks(leader: Replica) -> None:
    """The tick loop leaves its publish running: the next tick's pipeline runs meanwhile, and only
    then does it wait for that publish, so two publishes never overlap and seqs stay in order."""
    service = leader.service
    publish = service.publisher.publish_columns
    held = asyncio.Event()
    order: list[str] = []

    async def slow_publish(marks: Any, *, fence: int | None = None) -> Any:
        order.append(f"publish {marks.price[0]} begins")
        await held.wait()
        written = await publish(marks, fence=fence)
        order.append(f"publish {marks.price[0]} ends")
        return written

    service.publisher.publish_columns = slow_publish  # type: ignore[method-assign]
    leader.clock.advance(0.1)
    await asyncio.wait_for(leader.tick(101.0, overlap=True), 5.0)  # returns with its publish held
    leader.clock.advance(0.1)
    second = asyncio.create_task(leader.tick(102.0, overlap=True))
    while service._marks["BTC-USD"].price != 102.0:  # the second tick computed; the first publish waits
        await asyncio.sleep(0.01)
    assert order == ["publish 101.0 begins"] and not second.done()
    held.set()
    await asyncio.wait_for(second, 5.0)
    await service._publish_done()
    assert order == ["publish 101.0 begins", "publish 101.0 ends", "publish 102.0 begins", "publish 102.0 ends"]
    assert service._published["BTC-USD"].price == 102.0


async def test_a_failing_batch_of_events_does_not_end_the_recorder(redis_server: RedisServer) -> None:
    replica = Replica(redis_server.url, VirtualClock(START), "leader")
    service = replica.service
    batches: list[list[Any]] = []

    async def record(events: Any) -> None:
        batches.append(list(events))
        if len(batches) == 1:
            raise RuntimeError("a bug in the audit path")

    service.disputes.record = record  # type: ignore[method-assign]
    recorder = asyncio.create_task(service._record_events())
    await replica.tick()  # every market's first mark: a tier change each
    while not batches:
        await asyncio.sleep(0.01)
    service._events.append(batches[0][0])  # one more event, after the failed batch
    service._recording = False
    service._events_queued.set()
    await asyncio.wait_for(recorder, 5.0)
    assert [len(b) for b in batches] == [len(MARKETS), 1]
    await replica.close()
