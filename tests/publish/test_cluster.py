"""The publisher, lease and reader against a real 3-master Redis Cluster on loopback."""

from __future__ import annotations

import asyncio

import pytest

from disputes.model import Outcome
from disputes.store import DisputeStore
from oracle.client import MarkReader
from oracle.clock import WallClock
from oracle.leader import LeaderLease
from oracle.metrics import Metrics
from oracle.settings import RedisSettings
from oracle.validation.stage import DisputeStage, dispute_event
from tests.disputes.helpers import MARKET, make_settings
from tests.publish.helpers import errors, mark, publisher
from tests.servers import RedisClusterServers

MARKETS = [f"C{i}-USD" for i in range(50)]


@pytest.fixture
def cluster_settings(redis_cluster: RedisClusterServers) -> RedisSettings:
    redis_cluster.flush()
    return RedisSettings(url=redis_cluster.url, prefix="t", cluster=True, history_maxlen=100)


async def test_cluster_takes_publishes_and_reads_for_50_markets(
    cluster_settings: RedisSettings, redis_cluster: RedisClusterServers
) -> None:
    pub = publisher(cluster_settings, timeout_s=2.0)
    for tick in range(3):
        written = await pub.publish([mark(m, price=100.0 + i + tick) for i, m in enumerate(MARKETS)])
        assert [w.seq for w in written] == [tick + 1] * 50
    await pub.close()
    async with MarkReader(cluster_settings) as reader:
        marks = [await reader.get(m, max_age_ms=10_000) for m in MARKETS]
        listed = await reader.markets()
    assert [(m.price, m.seq) for m in marks] == [(102.0 + i, 3) for i in range(50)]
    assert listed == sorted(MARKETS)
    per_node = [int(n.command("DBSIZE").split(b":")[1]) for n in redis_cluster.nodes]
    assert all(n > 0 for n in per_node)  # the markets really are spread over the three masters


async def test_cluster_seq_continues_after_a_publisher_restart(cluster_settings: RedisSettings) -> None:
    first = publisher(cluster_settings, timeout_s=2.0)
    await first.publish([mark(m) for m in MARKETS[:10]])
    await first.close()
    second = publisher(cluster_settings, timeout_s=2.0)
    written = await second.publish([mark(m) for m in MARKETS[:10]])
    await second.close()
    assert [w.seq for w in written] == [2] * 10


async def test_cluster_fencing_refuses_the_old_leader_after_takeover(cluster_settings: RedisSettings) -> None:
    a = LeaderLease(cluster_settings, "a", 200, WallClock(), timeout_s=2.0)
    b = LeaderLease(cluster_settings, "b", 200, WallClock(), timeout_s=2.0)
    old_metrics = Metrics()
    old, new = (
        publisher(cluster_settings, old_metrics, timeout_s=2.0),
        publisher(cluster_settings, timeout_s=2.0),
    )
    assert await a.tick() and not await b.tick()
    assert len(await old.publish([mark(m) for m in MARKETS], fence=a.token)) == 50
    await asyncio.sleep(0.3)  # a is paused past its TTL
    assert await b.tick()
    assert len(await new.publish([mark(m, price=2.0) for m in MARKETS], fence=b.token)) == 50
    assert await old.publish([mark(m, price=3.0) for m in MARKETS], fence=a.token) == []
    assert errors(old_metrics) == 50
    async with MarkReader(cluster_settings) as reader:
        stored = await reader.read_many(MARKETS)
    await asyncio.gather(a.close(), b.close(), old.close(), new.close())
    assert {(m.price, m.seq) for m in stored.values() if m} == {(2.0, 2)}


async def test_cluster_subscribe_receives_updates(cluster_settings: RedisSettings) -> None:
    pub = publisher(cluster_settings, timeout_s=2.0)
    await pub.publish([mark(m) for m in MARKETS[:5]])
    reader = MarkReader(cluster_settings)
    async with reader.subscribe(MARKETS[:5]) as marks:
        snapshot = [await asyncio.wait_for(anext(marks), 2) for _ in range(5)]
        await pub.publish([mark(m, price=7.0) for m in MARKETS[:5]])
        updates = [await asyncio.wait_for(anext(marks), 2) for _ in range(5)]
    await asyncio.gather(pub.close(), reader.close())
    assert sorted(m.market for m in snapshot) == MARKETS[:5]
    assert {(m.price, m.seq) for m in updates} == {(7.0, 2)}


async def test_the_dispute_store_from_settings_works_on_a_cluster(cluster_settings: RedisSettings) -> None:
    store = DisputeStore.from_settings(cluster_settings)
    stage = DisputeStage(make_settings())
    d = stage.open_dispute(MARKET, "manual", 1.0)
    try:
        assert await store.save(d)
        await store.append(dispute_event(d))
        assert await store.close_dispute(d.closed(Outcome.UPHELD, 2.0))
        assert await store.load_open() == []
        assert [x.outcome for x in await store.load()] == [Outcome.UPHELD]
        assert [e["kind"] for e in await store.events()] == ["dispute_opened"]
    finally:
        await store.close()
