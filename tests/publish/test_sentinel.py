"""`redis.sentinels`: the settings, and a publisher, lease, dispute store and reader that follow a
manual failover (SENTINEL FAILOVER) in which the old primary stays up. The kill -9 failover of the
whole daemon, and the old primary's return as a replica, are tests/e2e/test_sentinel.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis as redis_py

from disputes.store import DisputeStore
from oracle.client import MarkReader, Subscription
from oracle.clock import WallClock
from oracle.leader import LeaderLease
from oracle.settings import ConfigError, RedisSettings, parse_settings
from oracle.testing import SentinelTopology
from tests.publish.helpers import eventually, mark, publisher

PREFIX = "t"
MARKETS = ("BTC-USD", "ETH-USD")
MINIMAL = {
    "markets": {"BTC-USD": {"sources": [{"source": "s", "pair": "BTC-USD"}], "min_sources": 1}},
    "sources": {"s": {"kind": "coinbase"}},
}


@pytest.fixture
def topology() -> Iterator[SentinelTopology]:
    t = SentinelTopology(replicas=1, sentinels=3, down_after_ms=1000, failover_ms=3000).start()
    yield t
    t.stop()


def test_sentinels_take_host_port_entries_or_one_comma_separated_environment_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = parse_settings({**MINIMAL, "redis": {"sentinels": ["10.0.0.1:26379", "s2:26380"]}})
    assert settings.redis.sentinel_addresses == [("10.0.0.1", 26379), ("s2", 26380)]
    assert settings.redis.sentinel_service == "markd"
    monkeypatch.setenv("MARKD_REDIS__SENTINELS", "a:1, b:2")
    assert parse_settings(MINIMAL).redis.sentinel_addresses == [("a", 1), ("b", 2)]


@pytest.mark.parametrize(
    ("redis", "says"),
    [
        ({"sentinels": ["a:1"], "cluster": True}, "exclude each other"),
        ({"sentinels": ["a:1"], "url": "unix:///tmp/r.sock"}, "redis:// or rediss://"),
        ({"sentinels": ["no-port"]}, "redis.sentinels[0]"),
        ({"sentinel_service": ""}, "redis.sentinel_service"),
    ],
)
def test_a_bad_sentinel_setting_is_a_config_error_naming_it(redis: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings({**MINIMAL, "redis": redis})
    assert any(says in p for p in err.value.problems), err.value.problems


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def _past(subscription: Subscription, seq: int) -> int:
    async for m in subscription:
        if m.seq > seq:
            return m.seq
    raise AssertionError("the subscription ended")


def history_seqs(client: redis_py.Redis, market: str) -> list[int]:
    return [int(f["seq"]) for _, f in client.xrange(f"{PREFIX}:{{{market}}}:history")]


@pytest.mark.timeout(60)
async def test_publisher_lease_store_and_reader_follow_a_manual_failover_with_the_old_primary_alive(
    topology: SentinelTopology,
) -> None:
    replica = topology.replicas[0]
    settings = RedisSettings(url=topology.primary.url, prefix=PREFIX, history_maxlen=1000, sentinels=topology.addresses)
    clock = WallClock()
    pub = publisher(settings, timeout_s=0.5)
    lease = LeaderLease(settings, "r1", 2000, clock, timeout_s=0.5)
    disputes = DisputeStore.from_settings(settings, timeout_s=0.5)
    reader = MarkReader(settings, timeout_s=0.5)
    subscription = reader.subscribe(["BTC-USD"], backoff_s=(0.05, 0.2))
    try:
        assert await lease.tick()
        await pub.publish([mark(m) for m in MARKETS], fence=lease.token)
        last = (await reader.get("BTC-USD", 5000)).seq
        assert (await anext(subscription)).seq == last

        topology.sentinels[0].client.execute_command("SENTINEL FAILOVER", topology.service)
        new = redis_py.Redis(port=replica.port, decode_responses=True)
        await eventually(_async(lambda: new.info("replication")["role"] == "master"), within_s=10)
        promoted = time.monotonic()
        base = int(new.hget(f"{PREFIX}:{{BTC-USD}}:mark", "seq") or 0)  # no longer replicated: ours now

        async def written_to_new_primary() -> bool:
            await lease.tick()
            if lease.leading:
                await pub.publish([mark(m) for m in MARKETS], fence=lease.token)
            return int(new.hget(f"{PREFIX}:{{BTC-USD}}:mark", "seq") or 0) > base

        await eventually(written_to_new_primary, within_s=10, step_s=0.05)
        print(f"manual failover: marks on the new primary {time.monotonic() - promoted:.2f} s after promotion")
        assert (await reader.get("BTC-USD", 5000)).seq > base  # the reader asks the Sentinels too
        followed = await asyncio.wait_for(_past(subscription, base), 10)  # and so does a subscriber
        print(f"manual failover: the subscriber has seq {followed} from the new primary")
        assert (await disputes.load_open()) == []  # and the dispute store reads the new primary
        for market in MARKETS:
            seqs = history_seqs(new, market)
            assert all(a < b for a, b in itertools.pairwise(seqs)), (market, seqs)
    finally:
        await subscription.aclose()
        await lease.close()
        await pub.close()
        await disputes.close()
        await reader.close()


async def test_closing_a_subscription_while_its_read_waits_ends_the_iteration_quietly() -> None:
    """Through Sentinel, a quiet second asks whether the primary moved. A close during that wait
    (a consumer's `async with` ending) once made the pending read fail with AttributeError on the
    dropped pubsub ("Task exception was never retrieved"); it must just end the iteration."""
    topology = SentinelTopology(replicas=0, sentinels=1).start()
    try:
        settings = RedisSettings(url=topology.primary.url, prefix=PREFIX, sentinels=topology.addresses)
        reader = MarkReader(settings, timeout_s=0.5)
        subscription = reader.subscribe(["BTC-USD"], backoff_s=(0.05, 0.2))
        waiting = asyncio.create_task(anext(subscription))  # nothing is published: it waits on the channel
        await asyncio.sleep(0.3)
        await subscription.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, timeout=5)  # the pending read ends within its 1 s wait
        await reader.close()
    finally:
        topology.stop()
