"""High availability: one leader among replicas, takeover after the TTL, and fencing of the old one."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from redis.asyncio import Redis

from oracle.clock import WallClock
from oracle.leader import LeaderLease, LeaseKeeper
from oracle.metrics import Metrics
from oracle.schema import Keys
from oracle.settings import RedisSettings
from tests.publish.helpers import errors, eventually, mark, publisher
from tests.servers import RedisServer

K = Keys("t").market("BTC-USD")
TTL_MS = 300


def lease(settings: RedisSettings, replica: str, metrics: Metrics | None = None) -> LeaderLease:
    return LeaderLease(settings, replica, TTL_MS, WallClock(), metrics=metrics)


async def test_exactly_one_replica_leads(settings: RedisSettings) -> None:
    leases = [lease(settings, f"r{i}") for i in range(5)]
    for _ in range(3):
        leading = await asyncio.gather(*(x.tick() for x in leases))
        assert sum(leading) == 1
    tokens = {x.token for x in leases} - {None}
    await asyncio.gather(*(x.close() for x in leases))
    assert tokens == {1}


async def test_standby_takes_over_after_the_ttl_when_the_holder_stops_renewing(
    settings: RedisSettings,
) -> None:
    a, b = lease(settings, "a"), lease(settings, "b")
    assert await a.tick() and not await b.tick()
    stopped = time.monotonic()
    took = await eventually(b.tick, within_s=TTL_MS / 1000 * 3)  # a is paused: no more renewals
    assert time.monotonic() - stopped >= TTL_MS / 1000 * 0.9
    assert b.token is not None and a.token is not None and b.token > a.token
    assert not await a.tick() and a.token is None  # a wakes up and finds the lease gone
    await asyncio.gather(a.close(), b.close())
    assert took < TTL_MS / 1000 * 3


async def test_a_renewing_holder_keeps_the_lease(settings: RedisSettings) -> None:
    a, b = lease(settings, "a"), lease(settings, "b")
    for _ in range(8):  # 8 x 100 ms: well past the TTL, renewed every tick
        assert await a.tick() and not await b.tick()
        await asyncio.sleep(TTL_MS / 3000)
    await asyncio.gather(a.close(), b.close())


async def test_late_write_with_the_old_token_is_refused(settings: RedisSettings) -> None:
    a, b = lease(settings, "a"), lease(settings, "b")
    old_metrics = Metrics()
    old, new = publisher(settings, old_metrics), publisher(settings)
    await a.tick()
    old_token = a.token
    assert len(await old.publish([mark(price=1.0)], fence=old_token)) == 1
    await eventually(b.tick, within_s=2.0)  # a paused past its TTL; b leads now
    # before b's first write: the epoch has moved on, so a's write is refused already
    assert await old.publish([mark(price=2.0)], fence=old_token) == []
    [first] = await new.publish([mark(price=3.0)], fence=b.token)
    assert first.seq == 2  # the new leader read the stored seq back before its first write
    assert await old.publish([mark(price=4.0)], fence=old_token) == []
    raw = Redis.from_url(settings.url, decode_responses=True)
    stored = await raw.hgetall(K.mark)
    await asyncio.gather(a.close(), b.close(), old.close(), new.close(), raw.aclose())
    assert (stored["price"], stored["seq"]) == ("3.0", "2")
    assert errors(old_metrics) == 2


async def test_release_hands_over_without_waiting_for_the_ttl(settings: RedisSettings) -> None:
    metrics = Metrics()
    a, b = lease(settings, "a", metrics), lease(settings, "b")
    assert await a.tick()
    assert metrics.registry.get_sample_value("markd_leader") == 1
    await a.release()
    assert metrics.registry.get_sample_value("markd_leader") == 0
    assert await b.tick()
    await asyncio.gather(a.close(), b.close())


async def test_holder_cut_off_from_redis_steps_down_after_the_ttl(own_server: RedisServer) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    a = LeaderLease(settings, "a", TTL_MS, WallClock(), timeout_s=0.05)
    assert await a.tick()
    own_server.stop()
    assert await a.tick()  # within its TTL it still leads: nobody else can have taken over yet
    await asyncio.sleep(TTL_MS / 1000)
    assert not await a.tick()
    await a.close()


async def test_standby_publishes_within_3_seconds_continuing_seq(settings: RedisSettings) -> None:
    """DESIGN.md High availability: two replicas tick; the leader dies; the standby takes over."""
    tick_s, ttl_ms = 0.05, 1000
    raw = Redis.from_url(settings.url, decode_responses=True)

    async def replica(name: str, ticks: int) -> None:
        lease = LeaderLease(settings, name, ttl_ms, WallClock())
        pub = publisher(settings)
        try:
            for _ in range(ticks):
                if await lease.tick():
                    await pub.publish([mark(price=1.0 if name == "a" else 2.0)], fence=lease.token)
                await asyncio.sleep(tick_s)
        finally:
            await pub.close()
            if name == "a":  # a dies: its connection goes, the lease is left to expire
                await lease._redis.aclose()
            else:
                await lease.close()

    a = asyncio.create_task(replica("a", 10))  # leads, then dies after 10 ticks
    await asyncio.sleep(tick_s / 2)
    b = asyncio.create_task(replica("b", 80))
    await a
    died_at = time.monotonic()
    seq_at_death = int(await raw.hget(K.mark, "seq") or 0)

    async def b_publishes() -> bool:
        return await raw.hget(K.mark, "price") == "2.0"

    await eventually(b_publishes, within_s=3.0)
    took = time.monotonic() - died_at
    stored = await raw.hgetall(K.mark)
    await b
    await raw.aclose()
    assert seq_at_death >= 5 and int(stored["seq"]) == seq_at_death + 1
    assert took < 3.0  # about the TTL (1 s) here


async def test_an_outage_is_one_warning_not_one_per_tick(own_server: RedisServer, caplog) -> None:
    settings = RedisSettings(url=own_server.url, prefix="t")
    standby = LeaderLease(settings, "b", TTL_MS, WallClock(), timeout_s=0.05)
    own_server.stop()
    with caplog.at_level(logging.DEBUG, logger="oracle.leader"):
        for _ in range(5):
            assert not await standby.tick()
        own_server.start()
        assert await standby.tick()
        own_server.stop()
        assert await standby.tick()  # within its TTL
    failures = [r.levelno for r in caplog.records if "failed" in r.getMessage()]
    assert failures == [logging.WARNING, *[logging.DEBUG] * 4, logging.WARNING]
    await standby.close()


async def test_a_lapsed_lease_nobody_took_is_retaken_with_the_same_token(settings: RedisSettings, caplog) -> None:
    a = lease(settings, "a")
    assert await a.tick()
    token = a.token
    await asyncio.sleep(TTL_MS / 1000 * 1.5)  # a was slow: the lease lapsed, and no one took it
    caplog.set_level(logging.INFO, logger="oracle.leader")
    assert await a.tick() and a.token == token
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "lapsed" in line and "nobody took it" in line and "another replica" not in line
    b = lease(settings, "b")
    assert not await b.tick()  # retaken for real: b finds it held
    await asyncio.gather(a.close(), b.close())


async def test_a_lapsed_lease_another_replica_took_is_not_retaken(settings: RedisSettings, caplog) -> None:
    a, b = lease(settings, "a"), lease(settings, "b")
    assert await a.tick()
    await asyncio.sleep(TTL_MS / 1000 * 1.5)
    assert await b.tick()
    caplog.set_level(logging.INFO, logger="oracle.leader")
    assert not await a.tick()
    assert any("another replica holds the lease" in r.getMessage() for r in caplog.records)
    await asyncio.gather(a.close(), b.close())


def keeper(settings: RedisSettings, replica: str, stall_s: float = 5.0) -> LeaseKeeper:
    clock = WallClock()
    return LeaseKeeper(LeaderLease(settings, replica, TTL_MS, clock), clock, every_s=TTL_MS / 4000, stall_s=stall_s)


async def test_the_keeper_renews_while_the_daemons_loop_is_blocked(settings: RedisSettings) -> None:
    """What a 1-2 s /metrics render or a 50 MB JSON parse did to the lease: the loop holding the GIL
    and never yielding for several TTLs. The keeper's thread renews meanwhile."""
    a, b = keeper(settings, "a"), lease(settings, "b")
    assert await a.tick()
    token = a.token
    time.sleep(TTL_MS / 1000 * 4)  # blocking the loop is the point
    assert not await b.tick()
    assert await a.tick() and a.token == token
    await asyncio.gather(a.close(), b.close())


async def test_the_keeper_gives_the_lease_up_when_the_loop_is_stuck_for_good(settings: RedisSettings) -> None:
    a, b = keeper(settings, "a", stall_s=TTL_MS / 1000), lease(settings, "b")
    assert await a.tick()
    time.sleep(TTL_MS / 1000 * 4)  # no tick for longer than stall_s
    assert await b.tick()  # released by a's keeper, so b needs no TTL to pass
    assert not await a.tick() and a.token is None
    await asyncio.gather(a.close(), b.close())


async def test_closing_the_keeper_releases_the_lease_and_ends_its_thread(settings: RedisSettings) -> None:
    a, b = keeper(settings, "a"), lease(settings, "b")
    assert await a.tick()
    await a.close()
    assert await b.tick()
    assert not any(t.name == "markd-lease" for t in threading.enumerate())
    await b.close()
