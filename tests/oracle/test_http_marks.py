"""GET /v1/marks never shows a mark nobody published as usable.

A replica that does not lead (a standby, or any replica while Redis is down) still computes marks;
they carry seq 0 and were never written to Redis, so /v1/marks labels them `unpublished`.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from feeds.adapter import QuoteBatch
from oracle.clock import VirtualClock
from oracle.http import build_app
from oracle.models import Quote
from oracle.publish import MemorySink
from oracle.service import Service
from oracle.settings import Settings
from tests.servers import free_port

SOURCES = ("coinbase", "kraken", "okx")


def _settings(redis_url: str) -> Settings:
    return Settings.model_validate(
        {
            "redis": {"url": redis_url},
            "sources": {s: {"kind": s} for s in SOURCES},
            "markets": {"BTC-USD": {"sources": [{"source": s, "pair": "BTC-USD"} for s in SOURCES]}},
        }
    )


class _Leader:
    token = 1

    async def tick(self) -> bool:
        return True


async def _ticked(service: Service, clock: VirtualClock) -> dict[str, Any]:
    quotes = [Quote(source, "BTC-USD", 30_000.0 + i, clock.now() - 0.1) for i, source in enumerate(SOURCES)]
    for batch in QuoteBatch.of(quotes):
        service._on_batch(batch)
    await service._tick_once()
    client = TestClient(TestServer(build_app(service)))
    await client.start_server()
    try:
        resp = await client.get("/v1/marks")
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body
    finally:
        await client.close()


async def test_with_redis_down_a_replica_that_does_not_lead_shows_its_marks_as_unpublished() -> None:
    clock = VirtualClock(1_700_000_000.0)
    service = Service(_settings(f"redis://127.0.0.1:{free_port()}/0"), clock=clock, replica_id="standby")
    try:
        marks = await _ticked(service, clock)
    finally:
        await service.publisher.close()
        await service.lease.close()
        await service.disputes.store.close()
    assert not service.leading
    btc = marks["BTC-USD"]
    assert btc["status"] == "unpublished" and btc["computed_status"] == "ok"
    assert btc["seq"] == 0 and btc["price"] == 30_001.0


async def test_the_leader_shows_what_it_wrote_with_its_seq() -> None:
    clock = VirtualClock(1_700_000_000.0)
    service = Service(_settings("redis://127.0.0.1:1/0"), clock=clock, replica_id="leader")
    sink = MemorySink()
    service.publisher, service.lease = sink, _Leader()  # type: ignore[assignment]
    try:
        marks = await _ticked(service, clock)
    finally:
        await service.disputes.store.close()
    assert marks["BTC-USD"] == {
        "price": 30_001.0,
        "confidence": marks["BTC-USD"]["confidence"],
        "ts_ms": 1_700_000_000_000,
        "seq": sink.history[-1].seq,
        "status": "ok",
        "tier": 1,
        "sources": list(SOURCES),
    }
    assert sink.history[-1].seq >= 1


async def test_a_perp_market_shows_its_perp_mark_beside_the_index() -> None:
    clock = VirtualClock(1_700_000_000.0)
    conf = _settings("redis://127.0.0.1:1/0").model_dump()
    conf["sources"]["venue"] = {"kind": "http_json", "base_url": "http://127.0.0.1:1/book.json"}
    conf["markets"]["BTC-USD"]["perp"] = {"book": {"source": "venue", "pair": "BTC-PERP", "path": "last"}}
    service = Service(Settings.model_validate(conf), clock=clock, replica_id="leader")
    sink = MemorySink()
    service.publisher, service.lease = sink, _Leader()  # type: ignore[assignment]
    service.perp_publisher = MemorySink()  # type: ignore[assignment]
    book = Quote("venue", "BTC-PERP", 30_031.0, clock.now() - 0.1, last=30_031.0)
    for batch in QuoteBatch.of([book]):
        service._on_batch(batch)
    try:
        marks = await _ticked(service, clock)
    finally:
        await service.disputes.store.close()
    # index 30,001; no mid yet: c1 = I; c2 = the last trade; no externals: c3 = I; the median: I
    assert marks["BTC-USD"]["perp"] == {
        "price": 30_001.0, "index": 30_001.0, "c1": 30_001.0, "c2": 30_031.0, "c3": 30_001.0,
        "ts_ms": 1_700_000_000_000, "status": "ok",
    }  # fmt: skip
