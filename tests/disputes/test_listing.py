"""Bounded disputes against a real Redis: the listing is paged (status, market, limit, cursor), closed
records are trimmed by age while the audit stream stays, and open disputes are capped per market."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from disputes.api import dispute_app
from disputes.model import Dispute, Event, EventKind, Outcome, Reason
from disputes.service import DisputeService
from disputes.store import DisputeStore
from oracle.clock import VirtualClock
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings

TOKEN = "listing-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = 86_400.0
NOW = 100 * DAY


def dispute(n: int, market: str = MARKET, *, opened: float | None = None, closed: float | None = None) -> Dispute:
    d = Dispute(id=f"{market}.{n:05d}", market=market, reason=Reason.MANUAL, opened_ts=opened or 1000.0 + n)
    return d if closed is None else d.closed(Outcome.UPHELD, closed)


async def store_all(store: DisputeStore, disputes: list[Dispute]) -> None:
    for d in disputes:
        opened = dataclasses.replace(d, closed_ts=None, outcome=None)
        assert await store.save(opened)
        if not d.is_open:
            assert await store.close_dispute(d)


def service_for(store: DisputeStore, **disputes: Any) -> DisputeService:
    settings = make_settings().model_copy(update={"dispute_token": SecretStr(TOKEN)})
    settings = settings.model_copy(update={"disputes": settings.disputes.model_copy(update=disputes)})
    return DisputeService(DisputeStage(settings), store, VirtualClock(NOW))


@pytest.fixture
async def client(store: DisputeStore) -> AsyncIterator[TestClient]:
    c = TestClient(TestServer(dispute_app(service_for(store, max_open_per_market=3))))
    await c.start_server()
    yield c
    await c.close()


async def get(client: TestClient, query: str = "") -> tuple[int, dict[str, Any]]:
    resp = await client.get(f"/v1/disputes{query}")
    return resp.status, await resp.json()


async def every_page(client: TestClient, query: str) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        status, body = await get(client, query + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        records += body["disputes"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return records, pages


async def test_the_plain_get_keeps_its_shape_and_answers_the_first_100(client: TestClient, store: DisputeStore) -> None:
    await store_all(store, [dispute(n) for n in range(250)])
    status, body = await get(client)
    assert status == 200 and set(body) == {"disputes", "next_cursor"}
    assert [d["id"] for d in body["disputes"]] == [f"{MARKET}.{n:05d}" for n in range(100)]  # oldest first
    assert body["next_cursor"]


async def test_cursors_walk_every_record_once_in_order(client: TestClient, store: DisputeStore) -> None:
    stored = [dispute(n, MARKET if n % 3 else "ETH-USD", closed=2000.0 + n if n % 2 else None) for n in range(250)]
    await store_all(store, stored)
    records, pages = await every_page(client, "?limit=40")
    assert pages == 7 and [r["id"] for r in records] == [d.id for d in stored]
    closed_eth, _ = await every_page(client, "?status=closed&market=ETH-USD&limit=7")
    expected = [d.id for d in stored if d.market == "ETH-USD" and not d.is_open]
    assert [r["id"] for r in closed_eth] == expected and len(expected) > 7
    open_btc, _ = await every_page(client, f"?status=open&market={MARKET}&limit=10")
    assert [r["id"] for r in open_btc] == [d.id for d in stored if d.market == MARKET and d.is_open]
    assert all(r["status"] == "open" for r in open_btc)


async def test_equal_open_times_still_page_without_loss(client: TestClient, store: DisputeStore) -> None:
    stored = [dispute(n, opened=5000.0) for n in range(30)]  # one millisecond, thirty disputes
    await store_all(store, stored)
    records, _ = await every_page(client, "?limit=4")
    assert [r["id"] for r in records] == sorted(d.id for d in stored)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=1001", "?limit=ten", "?cursor=nonsense!", "?cursor=W10"])
async def test_a_bad_limit_or_cursor_is_400(client: TestClient, query: str) -> None:
    status, body = await get(client, query)
    assert status == 400 and "error" in body


async def test_records_stored_before_the_index_existed_are_listed(client: TestClient, store: DisputeStore) -> None:
    old = [dispute(n) for n in range(5)]
    for d in old:  # as an older markd wrote them: the records hash only
        await store.client.hset(store.records_key, d.id, d.to_json())
    _, body = await get(client)
    assert [r["id"] for r in body["disputes"]] == [d.id for d in old]


async def test_open_disputes_are_capped_per_market_with_429(client: TestClient) -> None:
    opened = []
    for _ in range(3):
        resp = await client.post("/v1/disputes", json={"market": MARKET, "reason": "manual"}, headers=AUTH)
        assert resp.status == 201
        opened.append((await resp.json())["id"])
    resp = await client.post("/v1/disputes", json={"market": MARKET, "reason": "manual"}, headers=AUTH)
    assert resp.status == 429
    assert "max_open_per_market" in (await resp.json())["error"]
    other = await client.post("/v1/disputes", json={"market": "ETH-USD", "reason": "manual"}, headers=AUTH)
    assert other.status == 201  # the cap is per market
    resolved = await client.post(f"/v1/disputes/{opened[0]}/resolve", json={"action": "reject"}, headers=AUTH)
    assert resolved.status == 200
    again = await client.post("/v1/disputes", json={"market": MARKET, "reason": "manual"}, headers=AUTH)
    assert again.status == 201  # room again once one is resolved
    _, body = await get(client, f"?status=open&market={MARKET}")
    assert len(body["disputes"]) == 3


async def test_closed_records_older_than_keep_closed_days_are_trimmed_and_the_audit_stays(
    store: DisputeStore,
) -> None:
    old_closed = [dispute(n, opened=NOW - 40 * DAY, closed=NOW - 35 * DAY) for n in range(600)]  # > one batch
    old_open = dispute(900, opened=NOW - 40 * DAY)  # open: kept whatever its age
    reopened_late = dispute(901, opened=NOW - 40 * DAY, closed=NOW - 1 * DAY)  # closed recently: kept
    recent = dispute(902, opened=NOW - 2 * DAY, closed=NOW - DAY)
    await store_all(store, [*old_closed, old_open, reopened_late, recent])
    for d in old_closed[:3]:
        await store.append(Event(EventKind.DISPUTE_CLOSED, d.market, d.closed_ts or 0.0, {"id": d.id}, d))
    audit = await store.client.xlen(store.stream_key)

    service = service_for(store, keep_closed_days=30)
    await service.sync()  # the first sync trims

    left, more = await store.page(status=None, market=None, limit=1000, after=None)
    assert not more and sorted(d.id for d in left) == sorted(d.id for d in (old_open, reopened_late, recent))
    assert await store.client.hlen(store.records_key) == 3
    assert await store.client.zcard(store.index_key) == 3
    assert await store.client.xlen(store.stream_key) == audit  # the audit stream is never trimmed
    assert await store.get(old_closed[0].id) is None and await store.get(old_open.id) is not None


async def test_trimming_runs_once_a_minute_not_every_sync(store: DisputeStore) -> None:
    service = service_for(store, keep_closed_days=30)
    await service.sync()
    await store_all(store, [dispute(1, opened=NOW - 40 * DAY, closed=NOW - 35 * DAY)])
    await service.sync()  # within the minute: not yet
    assert await store.client.hlen(store.records_key) == 1
    assert isinstance(service.clock, VirtualClock)
    service.clock.advance(61)
    await service.sync()
    assert await store.client.hlen(store.records_key) == 0
