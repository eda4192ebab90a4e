"""`markd run` with a perp market whose book is a redis_hash source: the operator's matching engine
writes its book into a Redis of its own, and the perp mark markd publishes follows that hash.

Real processes throughout: the simulated venues carry BTC-USD's index, one private redis-server is
markd's (marks and perp marks), another is the engine's, and the daemon is `python -m oracle run`.
With a short basis EMA (ema_s 0.5) and no external perps, c2 is the hash's own median, c1 catches up
with the book within a second or two, and the perp price (the median of c1, c2 and the index) sits
at the hash's price: moved up, then down, it follows. Then the engine's Redis goes away: the source
is down, the book goes stale after max_age_ms (2 s here), and c2 falls back to the index.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from oracle.sim.demo import demo_config, to_toml
from oracle.testing import RedisServer
from tests.e2e.stack import PREFIX, Daemon, VenueThread, wait_for

pytestmark = pytest.mark.timeout(120)

MARKET = "BTC-USD"
PERP_KEY = f"{PREFIX}:{{{MARKET}}}:perp"
MARK_KEY = f"{PREFIX}:{{{MARKET}}}:mark"
BOOK_KEY = "engine:book:BTC-PERP"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[VenueThread, RedisServer, RedisServer]]:
    venues = VenueThread(seed=11).start()
    markd_redis, engine_redis = RedisServer().start(), RedisServer().start()
    try:
        yield venues, markd_redis, engine_redis
    finally:
        engine_redis.stop()
        markd_redis.stop()
        venues.stop()


def config(tmp: Path, venues: VenueThread, markd_url: str, engine_url: str) -> Path:
    conf = demo_config(venues.urls, markd_url, http_port=0)
    conf["sources"]["engine"] = {"kind": "redis_hash", "base_url": engine_url, "poll_ms": 100, "timeout_ms": 500}
    book = {"source": "engine", "pair": "BTC-PERP", "key": BOOK_KEY, "heartbeat_s": 30}
    conf["markets"][MARKET]["perp"] = {"book": book, "ema_s": 0.5}
    conf["markets"][MARKET]["max_age_ms"] = 2000  # the book goes stale 2 s after the engine's Redis does
    path = tmp / "markd.toml"
    path.write_text(to_toml(conf), encoding="utf-8")
    return path


def set_book(engine: redis.Redis, price: float) -> None:
    """What the matching engine does: its best bid and ask one apart around `price`, a last trade there."""
    fields = {"bid": price - 0.5, "ask": price + 0.5, "last": price, "ts_ms": int(time.time() * 1000)}
    engine.hset(BOOK_KEY, mapping={k: repr(v) for k, v in fields.items()})


def follows(markd: redis.Redis, price: float) -> dict[str, str] | None:
    """The perp hash once its c2 is the book's median and its price within 5 bps of it (the index walks)."""
    perp = markd.hgetall(PERP_KEY)
    if perp.get("status") == "ok" and perp.get("c2") == repr(price) and abs(float(perp["price"]) / price - 1) < 5e-4:
        return perp
    return None


def test_the_perp_mark_follows_the_engine_hash(
    tmp_path: Path, servers: tuple[VenueThread, RedisServer, RedisServer]
) -> None:
    venues, markd_redis, engine_redis = servers
    markd = redis.Redis.from_url(markd_redis.url, decode_responses=True)
    engine = redis.Redis.from_url(engine_redis.url, decode_responses=True)
    daemon = Daemon(config(tmp_path, venues, markd_redis.url, engine_redis.url)).start()
    try:
        daemon.wait_ready()
        for premium in (1.002, 0.998):  # 20 bps over the index, then 20 under it
            index = float(markd.hget(MARK_KEY, "price") or "nan")
            price = round(index * premium, 2)
            set_book(engine, price)
            perp = wait_for(f"the perp mark at {price}", lambda p=price: follows(markd, p), 15)
            assert float(perp["index"]) != price  # the book moved the mark, not the index
        assert daemon.sample("markd_source_up", source="engine") == 1.0

        engine_redis.stop()  # the engine's Redis goes away; markd's stays
        wait_for("the engine source down", lambda: daemon.sample("markd_source_up", source="engine") == 0.0, 10)
        stale = wait_for("c2 back at the index", lambda: (p := markd.hgetall(PERP_KEY))["c2"] == p["index"] and p, 15)
        assert stale["status"] == "ok"  # the index carries on; only the book's part is gone
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert "Traceback" not in daemon.stderr()
    finally:
        daemon.stop()
        engine_redis.start()
        markd.close()
        engine.close()
