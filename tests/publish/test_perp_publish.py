"""The perp mark in Redis (DESIGN.md "Perpetual mark price"): P:{M}:perp, perp_history and
perp_updates, seq strictly rising per market across publishers, signed like marks."""

from __future__ import annotations

import hashlib
import hmac
import json
import math

from redis.asyncio import Redis

from oracle.models import PerpMark, Status
from oracle.publish import RedisPerpPublisher
from oracle.schema import Keys
from oracle.settings import RedisSettings
from oracle.signing import Signer
from tests.publish.helpers import publisher

PERP, HISTORY, UPDATES = Keys("t").perp("BTC-USD")
NOW = 1_700_000_000.0


def perp(price: float = 30_100.0, status: Status = Status.OK, c: float = 30_090.0) -> PerpMark:
    return PerpMark("BTC-USD", price, 30_000.0, c, 30_105.5, c if math.isnan(c) else 30_120.0, NOW, 0, status)


async def test_a_perp_mark_lands_in_its_hash_stream_and_channel(settings: RedisSettings) -> None:
    raw = Redis.from_url(settings.url, decode_responses=True)
    sub = raw.pubsub()
    await sub.subscribe(UPDATES)
    await sub.get_message(timeout=1)  # the subscribe confirmation
    pub = publisher(settings)
    (written,) = await RedisPerpPublisher(pub).publish([perp()])
    assert written.seq == 1
    want = {"price": "30100.0", "index": "30000.0", "c1": "30090.0", "c2": "30105.5", "c3": "30120.0"}
    want |= {"ts_ms": "1700000000000", "seq": "1", "status": "ok"}
    assert await raw.hgetall(PERP) == want
    ((_, entry),) = await raw.xrange(HISTORY)
    assert entry == want
    msg = await sub.get_message(timeout=2)
    assert msg is not None and json.loads(msg["data"]) == {**want, "ts_ms": 1700000000000, "seq": 1}
    await sub.aclose()
    await pub.close()
    await raw.aclose()


async def test_an_unusable_index_leaves_the_components_empty(settings: RedisSettings) -> None:
    raw = Redis.from_url(settings.url, decode_responses=True)
    pub = publisher(settings)
    await RedisPerpPublisher(pub).publish([perp(status=Status.STALE, c=math.nan)])
    stored = await raw.hgetall(PERP)
    assert (stored["c1"], stored["c3"], stored["status"]) == ("", "", "stale")
    await pub.close()
    await raw.aclose()


async def test_seq_rises_strictly_across_publishers_and_restarts(settings: RedisSettings) -> None:
    raw = Redis.from_url(settings.url, decode_responses=True)
    a, b = publisher(settings), publisher(settings)
    pa, pb = RedisPerpPublisher(a), RedisPerpPublisher(b)
    seqs = []
    for i in range(5):
        seqs += [p.seq for p in await pa.publish([perp(30_100.0 + i)])]
    # A second publisher (a restart, a new leader) reads the stored seq back before writing.
    seqs += [p.seq for p in await pb.publish([perp(30_200.0)])]
    # The first one, behind now, is refused once and then continues above the stored seq.
    assert await pa.publish([perp(30_300.0)]) == []
    seqs += [p.seq for p in await pa.publish([perp(30_301.0)])]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert await raw.hget(PERP, "seq") == "7"
    for p in (a, b):
        await p.close()
    await raw.aclose()


async def test_signed_over_the_stored_strings(settings: RedisSettings) -> None:
    key = bytes(range(32))
    raw = Redis.from_url(settings.url, decode_responses=True)
    pub = publisher(settings, signer=Signer("hmac-sha256", key))
    await RedisPerpPublisher(pub).publish([perp()])
    stored = await raw.hgetall(PERP)
    fields = ("price", "index", "c1", "c2", "c3", "ts_ms", "seq", "status")
    payload = "\n".join(("BTC-USD", *(stored[f] for f in fields))).encode()
    assert stored["sig"] == hmac.new(key, payload, hashlib.sha256).hexdigest()
    assert stored["kid"] == hashlib.sha256(key).hexdigest()[:16]
    await pub.close()
    await raw.aclose()


async def test_redis_down_is_counted_not_raised(settings: RedisSettings) -> None:
    pub = publisher(RedisSettings(url="redis://127.0.0.1:1/0", prefix="t"), timeout_s=0.2)
    assert await RedisPerpPublisher(pub).publish([perp()]) == []
    await pub.close()


async def test_markd_marks_shows_a_perp_column_where_a_market_has_a_perp_mark(settings: RedisSettings) -> None:
    from oracle.client import print_marks
    from tests.publish.helpers import mark

    pub = publisher(settings)
    await pub.publish([mark("BTC-USD", 30_000.5), mark("ETH-USD", 2_000.25)])
    await RedisPerpPublisher(pub).publish([perp(30_100.5)])
    table = await print_marks(settings.url, prefix="t")
    header, btc, eth = table.splitlines()
    assert header.split()[:3] == ["market", "price", "perp"]
    assert btc.split()[:3] == ["BTC-USD", "30000.50", "30100.50"]
    assert eth.split()[:3] == ["ETH-USD", "2000.250", "-"]
    await RedisPerpPublisher(pub).publish([perp(30_100.5, status=Status.STALE, c=math.nan)])
    btc = (await print_marks(settings.url, prefix="t", markets=["BTC-USD"])).splitlines()[1]
    assert "30100.50 (stale)" in btc  # a perp status that is not the index's is shown
    await pub.close()


async def test_the_reader_returns_a_verified_perp_mark_and_names_every_bad_one(settings: RedisSettings) -> None:
    from oracle.client import MarkForged, MarkMissing, MarkReader

    key = bytes(range(32))
    raw = Redis.from_url(settings.url, decode_responses=True)
    pub = publisher(settings, signer=Signer("hmac-sha256", key))
    await RedisPerpPublisher(pub).publish([perp(status=Status.STALE, c=math.nan)])
    async with MarkReader(settings, verify_key=key) as reader:
        (got,) = (await reader.read_perps(["BTC-USD"])).values()
        assert isinstance(got, PerpMark) and (got.price, got.seq, got.status) == (30_100.0, 1, Status.STALE)
        assert math.isnan(got.c1) and got.c2 == 30_105.5 and math.isnan(got.c3)  # empty: not computed
        assert (await reader.read_perps(["ETH-USD"])) == {"ETH-USD": None}
        await raw.hset(PERP, "price", "1.0")  # a writer without the key
        forged = (await reader.read_perps(["BTC-USD"]))["BTC-USD"]
        assert isinstance(forged, MarkForged) and "does not match" in str(forged)
        await raw.hdel(PERP, "sig")
        assert "unsigned" in str((await reader.read_perps(["BTC-USD"]))["BTC-USD"])
        await raw.hset(PERP, "seq", "x")
        assert isinstance((await reader.read_perps(["BTC-USD"]))["BTC-USD"], MarkMissing)
    await pub.close()
    await raw.aclose()
