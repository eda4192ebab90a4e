"""The Redis schema of DESIGN.md, written by RedisPublisher and read back raw (not via our reader)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from redis.asyncio import Redis

from disputes.store import DisputeStore
from oracle.clock import WallClock
from oracle.metrics import Metrics
from oracle.models import Status
from oracle.publish import MemorySink, RedisPublisher
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.helpers import mark, publisher

K = Keys("t").market("BTC-USD")


@pytest.fixture
async def raw(settings: RedisSettings):
    client = Redis.from_url(settings.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_mark_hash_holds_every_contract_field(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    m = mark(price=0.1 + 0.2, confidence=1 / 3, ts=1_700_000_000.123, status=Status.DEGRADED, tier=2)
    [written] = await pub.publish([m])
    await pub.close()
    stored = await raw.hgetall(K.mark)
    assert stored == {
        "price": "0.30000000000000004",
        "confidence": "0.3333333333333333",
        "ts_ms": "1700000000123",
        "seq": "1",
        "status": "degraded",
        "tier": "2",
        "sources": "coinbase,kraken,okx",
    }
    assert float(stored["price"]) == m.price  # the decimal string round-trips the float exactly
    assert written.seq == 1 and written.price == m.price


async def test_history_appends_every_write_and_is_capped(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    for i in range(400):  # history_maxlen is 50 in these tests; MAXLEN ~ trims by whole nodes
        await pub.publish([mark(price=100.0 + i)])
    await pub.close()
    length = await raw.xlen(K.history)
    assert 50 <= length < 400
    [(_, last)] = await raw.xrevrange(K.history, count=1)
    assert last == await raw.hgetall(K.mark)
    assert last["seq"] == "400" and last["price"] == "499.0"


async def test_updates_channel_carries_the_same_fields_as_json(settings: RedisSettings, raw: Redis) -> None:
    pubsub = raw.pubsub()
    await pubsub.subscribe(K.updates)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    pub = publisher(settings)
    await pub.publish([mark(price=65000.25, ts=1_700_000_000.5, sources=('a"b', "c"))])
    await pub.close()
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    await pubsub.aclose()
    assert message is not None
    assert json.loads(message["data"]) == {
        "price": "65000.25",
        "confidence": "1.25",
        "ts_ms": 1700000000500,
        "seq": 1,
        "status": "ok",
        "tier": 1,
        "sources": 'a"b,c',
    }


async def test_provisional_holds_the_latest_candidate(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    await pub.publish([mark(price=100.0, status=Status.HELD, candidate=130.5)])
    await pub.publish([mark(price=100.0, status=Status.STALE, candidate=math.nan)])
    await pub.close()
    prov = await raw.hgetall(K.provisional)
    assert prov["price"] == "nan" and prov["seq"] == "2" and int(prov["ts_ms"]) > 0
    assert (await raw.hgetall(K.mark))["price"] == "100.0"


async def test_one_tick_is_a_few_script_calls(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    markets = [f"M{i}-USD" for i in range(250)]
    await pub.publish([mark(m) for m in markets])  # the first tick also reads the stored seqs back
    before = await _script_calls(raw)
    written = await pub.publish([mark(m) for m in markets])
    after = await _script_calls(raw)
    await pub.close()
    assert [w.seq for w in written] == [2] * 250
    assert after - before == 3  # 250 marks in script calls of up to 100, sent as one pipeline


async def _script_calls(raw: Redis) -> int:
    stats = await raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


async def test_status_change_alone_gets_a_new_seq(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    await pub.publish([mark(price=10.0, ts=1_700_000_000.0)])
    await pub.publish([mark(price=10.0, ts=1_700_000_000.0, status=Status.HELD)])
    await pub.close()
    stored = await raw.hgetall(K.mark)
    assert (stored["status"], stored["seq"], stored["price"], stored["ts_ms"]) == (
        "held",
        "2",
        "10.0",
        "1700000000000",
    )


async def test_memory_sink_assigns_seq_like_redis() -> None:
    sink = MemorySink()
    first = await sink.publish([mark("A-USD"), mark("B-USD"), mark("A-USD")])
    second = await sink.publish([mark("A-USD")])
    await sink.close()
    assert [(m.market, m.seq) for m in first + second] == [
        ("A-USD", 1),
        ("B-USD", 1),
        ("A-USD", 2),
        ("A-USD", 3),
    ]
    assert sink.latest["A-USD"].seq == 3 and len(sink.history) == 4


async def test_publish_updates_metrics(settings: RedisSettings) -> None:
    metrics = Metrics()
    pub = publisher(settings, metrics)
    await pub.publish([mark(price=42.0)])
    await pub.close()
    assert metrics.registry.get_sample_value("markd_mark_price", {"market": "BTC-USD"}) == 42.0
    assert metrics.registry.get_sample_value("markd_mark_seq", {"market": "BTC-USD"}) == 1
    assert metrics.registry.get_sample_value("markd_mark_status", {"market": "BTC-USD", "status": "ok"}) == 1
    assert metrics.registry.get_sample_value("markd_publish_seconds_count") == 1


async def test_publish_leaves_the_mark_gauges_to_the_caller_when_asked(settings: RedisSettings) -> None:
    metrics = Metrics()
    pub = RedisPublisher(settings, metrics, WallClock(), mark_gauges=False)  # the daemon sets them at scrape
    written = await pub.publish([mark(price=42.0)])
    await pub.close()
    assert [m.seq for m in written] == [1]
    assert metrics.registry.get_sample_value("markd_mark_price", {"market": "BTC-USD"}) is None
    assert metrics.registry.get_sample_value("markd_publish_seconds_count") == 1


async def test_concurrent_publishes_of_one_publisher_never_collide(settings: RedisSettings, raw: Redis) -> None:
    pub = publisher(settings)
    results = await asyncio.gather(*(pub.publish([mark(price=float(i))]) for i in range(20)))
    await pub.close()
    seqs = sorted(m.seq for r in results for m in r)
    assert seqs == list(range(1, 21))
    assert (await raw.hget(K.mark, "seq")) == "20"


def test_dispute_keys_are_the_contract_names_in_one_slot() -> None:
    keys = Keys("t")
    assert (keys.disputes, keys.dispute_records, keys.open_disputes) == (
        "t:disputes",
        "{t:disputes}:records",
        "{t:disputes}:open",
    )
    store = DisputeStore(Redis(), prefix="t")
    assert (store.stream_key, store.records_key, store.open_key) == (
        keys.disputes,
        keys.dispute_records,
        keys.open_disputes,
    )


def test_public_surface() -> None:
    import oracle.client
    import oracle.leader
    import oracle.publish

    assert sorted(oracle.publish.__all__) == ["MarkSink", "MemorySink", "RedisPerpPublisher", "RedisPublisher"]
    assert oracle.leader.__all__ == ["LeaderLease", "LeaseKeeper"]
    errors = [
        oracle.client.MarkMissing,
        oracle.client.MarkTooOld,
        oracle.client.MarkHeld,
        oracle.client.MarkStale,
    ]
    assert all(issubclass(e, oracle.client.MarkError) for e in [*errors, oracle.client.MarkUnavailable])
    assert {"MarkReader", "print_marks", "MarkError"} <= set(oracle.client.__all__)
