"""The webhook gets every dispute and tier event, and a dead receiver never slows the ticks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from disputes.model import NOTIFIED, Event, EventKind
from disputes.notify import Notifier
from disputes.service import DisputeService
from oracle.clock import VirtualClock
from oracle.settings import NotifySettings
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run
from tests.servers import free_port


class Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.received: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver(fail_first=2)  # the first deliveries fail: retries must get them through
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    server = TestServer(app)
    await server.start_server()
    yield r, str(server.make_url("/hook"))
    await server.close()


async def test_the_receiver_gets_every_dispute_and_tier_event(receiver, store):
    r, url = receiver
    notifier = Notifier(NotifySettings(url=url, max_retries=3), backoff_s=0.01)
    notifier.start()
    stage = DisputeStage(make_settings(anchor_deviation_bps=0))
    service = DisputeService(stage, store, VirtualClock(10.0), notifier=notifier)
    expected = []
    for t, (t1, t2) in enumerate([(100.0, 100.0), (None, 100.0), (100.0, 103.0), (100.0, 100.0)]):
        events = run(stage, t1, t2, float(t)).events
        expected += [e.to_dict() for e in events if e.kind in NOTIFIED]
        await service.record(events)
    d = await service.open(MARKET, "manual", note="check")
    await service.resolve(d.id, "uphold")
    await notifier.flush()
    await notifier.close()
    assert [e["kind"] for e in r.received[: len(expected)]] == [e["kind"] for e in expected]
    assert r.received[: len(expected)] == expected
    assert [(e["kind"], e["dispute"]["outcome"]) for e in r.received[len(expected) :]] == [
        ("dispute_opened", None),
        ("dispute_closed", "upheld"),
    ]
    assert (notifier.sent, notifier.failed, notifier.dropped) == (len(expected) + 2, 0, 0)


async def test_a_dead_receiver_never_stalls_the_tick_loop():
    dead = f"http://127.0.0.1:{free_port()}/hook"
    notifier = Notifier(NotifySettings(url=dead, max_retries=5), queue_size=8, backoff_s=0.5)
    notifier.start()
    stage = DisputeStage(make_settings(recover_ticks=1))
    started = time.perf_counter()
    for t in range(2000):  # tier 1 flaps every tick: a tier event each time
        for e in run(stage, 100.0 if t % 2 else None, 100.0, float(t)).events:
            notifier.send(e)
    elapsed = time.perf_counter() - started
    await notifier.close()
    assert elapsed < 2.0
    assert notifier.dropped >= 2000 - 8 - 1
    assert notifier.sent == 0


async def test_an_unset_url_turns_notification_off():
    notifier = Notifier(NotifySettings())
    notifier.start()
    stage = DisputeStage(make_settings())
    for e in run(stage, 100.0, None, 0.0).events:
        assert e.kind is EventKind.TIER_CHANGED
        notifier.send(e)
    await notifier.flush()
    await notifier.close()
    assert (notifier.sent, notifier.dropped) == (0, 0)


async def test_a_full_queue_drops_the_oldest_event(receiver):
    r, url = receiver
    r.fail_first = 0
    notifier = Notifier(NotifySettings(url=url), queue_size=2)
    events = [Event(EventKind.TIER_CHANGED, MARKET, float(t), {"to": t}) for t in range(3)]
    for e in events:  # queued before the delivery task runs: the third pushes the first out
        notifier.send(e)
    notifier.start()
    await notifier.flush()
    await notifier.close()
    assert [x["ts"] for x in r.received] == [1.0, 2.0]
    assert (notifier.sent, notifier.dropped) == (2, 1)
