"""Disputes in Redis: they survive a restart, and every event lands in the audit stream."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from disputes.model import Outcome
from disputes.service import DisputeService
from disputes.store import DisputeStore
from oracle.clock import VirtualClock
from oracle.models import Status
from oracle.settings import RedisSettings
from oracle.validation.stage import DisputeStage, dispute_event
from tests.disputes.helpers import MARKET, make_settings, run
from tests.servers import RedisServer


async def test_disputes_survive_a_new_store_and_a_restarted_stage(redis_server, store):
    stage = DisputeStage(make_settings())
    service = DisputeService(stage, store, VirtualClock(100.0))
    last = run(stage, 100.0, None, 99.0).mark
    opened = await service.open(MARKET, "manual", note="venue outage")
    other = await service.open("ETH-USD", "jump")
    await service.resolve(other.id, "reject")

    fresh = DisputeStore(aioredis.Redis.from_url(redis_server.url, decode_responses=True), prefix="t")
    try:
        restarted = DisputeService(DisputeStage(make_settings()), fresh, VirtualClock(200.0))
        assert await restarted.restore(marks=[last]) == [opened]
        d = run(restarted.stage, 100.1, None, 200.0)
        assert (d.mark.status, d.mark.price) == (Status.HELD, 100.0)
        assert {x.id: x.outcome for x in await fresh.load()} == {opened.id: None, other.id: Outcome.REJECTED}
    finally:
        await fresh.close()


async def test_every_event_is_in_the_disputes_stream(store):
    stage = DisputeStage(make_settings(anchor_deviation_bps=0))
    service = DisputeService(stage, store, VirtualClock(0.0))
    for t, (t1, t2) in enumerate([(100.0, 100.0), (None, 100.0), (100.0, 103.0), (100.0, 100.0)]):
        await service.record(run(stage, t1, t2, float(t)).events)
    kinds = [(e["kind"], e.get("dispute", {}).get("outcome")) for e in await store.events()]
    assert kinds == [
        ("tier_changed", None),
        ("tier_changed", None),
        ("dispute_opened", None),
        ("dispute_closed", "reverted"),
    ]
    raw = await store.client.xrange("t:disputes")
    assert raw[2][1]["reason"] == "divergence"
    [reverted] = await store.load()
    assert reverted.outcome is Outcome.REVERTED


async def test_of_two_concurrent_closes_exactly_one_wins(store):
    stage = DisputeStage(make_settings())
    d = stage.open_dispute(MARKET, "manual", 1.0)
    await store.save(d)
    results = await asyncio.gather(
        *(store.close_dispute(d.closed(o, 2.0)) for o in (Outcome.UPHELD, Outcome.REJECTED) * 5)
    )
    assert sorted(results) == [False] * 9 + [True]
    assert (await store.get(d.id)).outcome is Outcome.UPHELD  # the first one in
    assert not await store.save(d)  # an id is never overwritten
    assert dispute_event(d).dispute == d


async def test_a_replica_learns_disputes_opened_and_resolved_elsewhere(store):
    leader = DisputeService(DisputeStage(make_settings()), store, VirtualClock(10.0))
    other = DisputeService(DisputeStage(make_settings()), store, VirtualClock(10.0))
    run(leader.stage, 100.0, None, 9.0)
    d = await other.open(MARKET, "manual")
    await leader.sync()
    assert run(leader.stage, 100.0, None, 10.0).mark.status is Status.HELD
    await other.resolve(d.id, "reject")
    await leader.sync()
    assert leader.stage.dispute(d.id).outcome is Outcome.REJECTED
    assert run(leader.stage, 100.0, None, 11.0).mark.status is Status.OK
    assert await store.load_open() == []


async def test_a_store_from_settings_gives_up_on_a_redis_that_never_answers():
    # The tick loop records events through the store: a hung Redis must cost a timeout, not the loop.
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read, never answer
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = DisputeStore.from_settings(RedisSettings(url=f"redis://127.0.0.1:{port}/0"), timeout_s=0.2)
    d = DisputeStage(make_settings()).open_dispute(MARKET, "manual", 1.0)
    try:
        started = time.monotonic()
        with pytest.raises(RedisError):
            await asyncio.wait_for(store.save(d), 5.0)
        assert time.monotonic() - started < 2.0
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


async def test_sync_logs_a_redis_outage_once_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer().start()
    store = DisputeStore(aioredis.Redis.from_url(server.url, decode_responses=True), prefix="t")
    service = DisputeService(DisputeStage(make_settings()), store, VirtualClock(10.0))
    caplog.set_level(logging.INFO, logger="disputes.service")
    try:
        await service.sync()
        server.stop()
        for _ in range(5):  # the daemon calls it about every second of the outage
            await service.sync()
        server.start()
        await service.sync()
        server.stop()
        await service.sync()  # a second outage is news again
    finally:
        await store.close()
        server.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "disputes_not_synced", "disputes_synced", "disputes_not_synced",
    ]  # fmt: skip
