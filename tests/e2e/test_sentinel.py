"""Redis behind Sentinel end to end: `markd run` and a MarkReader follow a failover without restart.

The topology is real: a primary, a replica and three Sentinels (`redis-server FILE --sentinel`) on
loopback, tuned to fail over in about two seconds. The replica's link is cut just before the primary
is killed (-9), so the replica that Sentinel promotes has missed the last writes: the daemon must
still continue every market's seq above the last one it wrote.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from oracle.client import MarkReader
from oracle.models import Mark
from oracle.settings import RedisSettings
from oracle.sim.demo import DEMO_MARKETS
from oracle.testing import RedisServer, SentinelTopology
from tests.e2e.stack import PREFIX, TOKEN, Daemon, VenueThread, request, write_config

FAILOVER_S = 10.0  # DESIGN.md: marks reach the new primary within 10 s


@pytest.fixture
def topology() -> Iterator[SentinelTopology]:
    t = SentinelTopology(replicas=1, sentinels=3, down_after_ms=1000, failover_ms=3000).start()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def daemon(tmp_path: Path, venues: VenueThread, topology: SentinelTopology) -> Iterator[Daemon]:
    # The URL names a node only for its settings (db, credentials): the Sentinels say which is primary.
    config = write_config(tmp_path, venues.urls, topology.primary.url, http_port=0)
    d = Daemon(config, MARKD_REDIS__SENTINELS=",".join(topology.addresses), MARKD_DISPUTE_TOKEN=TOKEN).start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()


def store(port: int) -> redis_py.Redis:
    return redis_py.Redis(port=port, decode_responses=True, socket_timeout=2)


def stored_seq(client: redis_py.Redis, market: str) -> int:
    return int(client.hget(f"{PREFIX}:{{{market}}}:mark", "seq") or 0)


def history_and_stored_seq(client: redis_py.Redis, market: str) -> tuple[list[int], int]:
    pipe = client.pipeline(transaction=True)
    pipe.xrange(f"{PREFIX}:{{{market}}}:history")
    pipe.hget(f"{PREFIX}:{{{market}}}:mark", "seq")
    entries, stored = pipe.execute()
    return [int(fields["seq"]) for _, fields in entries], int(stored or 0)


async def until(what: str, check: object, within_s: float) -> float:
    """Seconds until the sync `check()` is truthy (polled every 20 ms off the event loop)."""
    started = time.monotonic()
    while True:
        try:
            if await asyncio.to_thread(check):  # type: ignore[arg-type]
                return time.monotonic() - started
        except redis_py.RedisError:
            pass
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.02)


async def cut_off_and_kill(primary: RedisServer, replica: RedisServer) -> dict[str, int]:
    """Pause the replica (SIGSTOP, so it cannot reconnect), drop its link, wait for the daemon's next
    write, kill -9 the primary and resume the replica: it never gets that write. Returns each
    market's last seq on the primary."""
    assert replica.proc is not None
    client = store(primary.port)
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        before = stored_seq(client, "BTC-USD")
        client.execute_command("CLIENT", "KILL", "TYPE", "replica")
        await until("a write after the cut", lambda: stored_seq(client, "BTC-USD") > before, 5)
        last = {m: stored_seq(client, m) for m in DEMO_MARKETS}
        primary.kill()
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    return last


@pytest.mark.timeout(150)
async def test_daemon_and_reader_follow_a_kill_9_failover_and_the_old_primary_returns_as_a_replica(
    daemon: Daemon, topology: SentinelTopology
) -> None:
    old, replica = topology.primary, topology.replicas[0]
    settings = RedisSettings(url=old.url, prefix=PREFIX, sentinels=topology.addresses)
    reader = MarkReader(settings, timeout_s=1.0)
    seen: list[Mark] = []

    async def follow() -> None:
        async with reader.subscribe(["BTC-USD"], backoff_s=(0.05, 0.2)) as marks:
            async for mark in marks:
                seen.append(mark)

    follower = asyncio.create_task(follow())
    try:
        await until("the reader's first mark", lambda: seen, 10)
        last = await cut_off_and_kill(old, replica)
        killed = time.monotonic()
        assert stored_seq(store(replica.port), "BTC-USD") < last["BTC-USD"]  # the replica missed writes

        await until("Sentinel to promote the replica", lambda: topology.primary_port() == replica.port, FAILOVER_S)
        new = store(replica.port)
        await until("marks on the new primary", lambda: stored_seq(new, "BTC-USD") > last["BTC-USD"], FAILOVER_S)
        gap = time.monotonic() - killed
        print(f"failover gap (kill -9 to the first mark on the new primary): {gap:.2f} s")
        assert gap <= FAILOVER_S

        # The old primary comes back empty; Sentinel turns it into a replica of the new one.
        old.start()
        for market in DEMO_MARKETS:
            await until(f"{market} past the failover", lambda m=market: stored_seq(new, m) > last[m], FAILOVER_S)
        await until("the reader following", lambda: seen[-1].seq > last["BTC-USD"], FAILOVER_S)
        assert (await reader.get("BTC-USD", max_age_ms=5000)).seq > last["BTC-USD"]
        # The lease followed too. A renewal that met the promoted replica (which may have missed the
        # lease write) can drop the gauge to 0 for one retake, so wait for it rather than sample once.
        await until("the lease on the new primary", lambda: daemon.sample("markd_leader") == 1.0, FAILOVER_S)

        # The dispute store writes to the new primary.
        body = json.dumps({"market": "ETH-USD", "reason": "failover drill"}).encode()
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        status, answer = request("POST", f"{daemon.url}/v1/disputes", body, auth)
        assert status == 201, answer
        assert new.hexists(f"{{{PREFIX}:disputes}}:records", json.loads(answer)["id"])

        def replicates_new_primary() -> bool:
            info = store(old.port).info("replication")
            return (
                info["role"] == "slave" and info["master_port"] == replica.port and info["master_link_status"] == "up"
            )

        # Sentinel's own pace, not markd's: ~15 s here, but a Sentinel whose timer ran late on a
        # loaded machine enters TILT mode and does nothing for 30 s (seen: 1 run in 8 at load 10).
        took = await until("the old primary to return as a replica", replicates_new_primary, 80)
        print(f"old primary a replica again {took:.1f} s after its restart")
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await reader.close()

    for market in DEMO_MARKETS:
        # The daemon is still publishing: read the stream and the hash in one MULTI so both are one instant.
        seqs, stored = history_and_stored_seq(new, market)
        assert all(a < b for a, b in itertools.pairwise(seqs)), (market, seqs)  # never down, never repeated
        assert seqs[-1] == stored
    seen_seqs = [m.seq for m in seen]
    assert all(a < b for a, b in itertools.pairwise(seen_seqs)), seen_seqs
