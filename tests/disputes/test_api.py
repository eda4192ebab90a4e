"""The dispute HTTP API against a real store: auth, validation, limits, and racing resolves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from disputes.api import MAX_BODY, dispute_app
from disputes.model import Event, EventKind
from disputes.service import DisputeService
from disputes.store import DisputeStore
from oracle.clock import VirtualClock
from oracle.metrics import Metrics
from oracle.models import Status
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run
from tests.servers import free_port

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def serve(service: DisputeService) -> TestClient:
    client = TestClient(TestServer(dispute_app(service)))
    await client.start_server()
    return client


@pytest.fixture
def service(store: DisputeStore) -> DisputeService:
    settings = make_settings().model_copy(update={"dispute_token": SecretStr(TOKEN)})
    return DisputeService(DisputeStage(settings), store, VirtualClock(1000.0), metrics=Metrics())


@pytest.fixture
async def client(service: DisputeService) -> AsyncIterator[TestClient]:
    c = await serve(service)
    yield c
    await c.close()


async def open_one(client: TestClient, **body: str) -> dict:
    payload = {"market": MARKET, "reason": "manual", **body}
    resp = await client.post("/v1/disputes", json=payload, headers=AUTH)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_open_answers_201_with_the_contract_fields_and_holds_the_market(client, service):
    run(service.stage, 100.0, None, 999.0)
    record = await open_one(client, note="coinbase looks off")
    assert record == {
        "id": record["id"],
        "market": MARKET,
        "reason": "manual",
        "status": "open",
        "opened_ts": 1000.0,
        "note": "coinbase looks off",
    }
    assert run(service.stage, 100.0, None, 1001.0).mark.status is Status.HELD


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
)
async def test_writes_without_the_right_bearer_token_are_401(client, headers):
    resp = await client.post("/v1/disputes", json={"market": MARKET, "reason": "manual"}, headers=headers)
    assert resp.status == 401
    resp = await client.post("/v1/disputes/x/resolve", json={"action": "uphold"}, headers=headers)
    assert resp.status == 401


async def test_with_no_token_configured_every_write_is_401(store):
    service = DisputeService(DisputeStage(make_settings()), store, VirtualClock(0.0))
    client = await serve(service)
    try:
        for headers in ({}, {"Authorization": "Bearer "}, AUTH):
            payload = {"market": MARKET, "reason": "manual"}
            resp = await client.post("/v1/disputes", json=payload, headers=headers)
            assert resp.status == 401
        assert (await client.get("/v1/disputes")).status == 200
    finally:
        await client.close()


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"market": "DOGE-USD", "reason": "manual"}).encode(),
        json.dumps({"market": 7, "reason": "manual"}).encode(),
        json.dumps({"market": MARKET, "reason": ""}).encode(),
        json.dumps({"market": MARKET, "reason": 5}).encode(),
        json.dumps({"market": MARKET}).encode(),
        json.dumps({"market": MARKET, "reason": "manual", "note": 5}).encode(),
    ],
)
async def test_bad_open_bodies_are_400(client, body):
    resp = await client.post("/v1/disputes", data=body, headers=AUTH)
    assert resp.status == 400
    assert "error" in await resp.json()


async def test_free_text_reason_opens_a_manual_dispute_and_never_becomes_a_label(client, service):
    body = {"market": MARKET, "reason": "the price looks wrong"}
    resp = await client.post("/v1/disputes", json=body, headers=AUTH)
    assert resp.status == 201
    body = await resp.json()
    listed = (await (await client.get("/v1/disputes")).json())["disputes"]
    record = next(d for d in listed if d["id"] == body["id"])
    assert record["reason"] == "manual"
    assert "the price looks wrong" in record["note"]
    assert (body["reason"], body["note"]) == (record["reason"], record["note"])  # the answer is what is stored
    metrics = service.metrics.render().decode()
    assert f'markd_disputes_total{{market="{MARKET}",reason="manual"}} 1.0' in metrics
    assert "the price looks wrong" not in metrics


async def test_unknown_action_is_400_unknown_dispute_404_and_a_second_resolve_409(client):
    d = await open_one(client)
    url = f"/v1/disputes/{d['id']}/resolve"
    assert (await client.post(url, json={"action": "maybe"}, headers=AUTH)).status == 400
    unknown = await client.post("/v1/disputes/nope/resolve", json={"action": "reject"}, headers=AUTH)
    assert unknown.status == 404
    first = await client.post(url, json={"action": "reject"}, headers=AUTH)
    assert first.status == 200
    assert (await first.json())["outcome"] == "rejected"
    assert (await client.post(url, json={"action": "uphold"}, headers=AUTH)).status == 409


async def test_bodies_over_16_kib_are_413_with_or_without_a_length(client):
    big = json.dumps({"market": MARKET, "reason": "manual", "note": "x" * MAX_BODY}).encode()
    assert (await client.post("/v1/disputes", data=big, headers=AUTH)).status == 413

    async def chunked():
        for _ in range(64):
            yield b" " * 1024

    assert (await client.post("/v1/disputes", data=chunked(), headers=AUTH)).status == 413


async def test_concurrent_resolves_of_one_dispute_exactly_one_wins(client):
    d = await open_one(client)
    url = f"/v1/disputes/{d['id']}/resolve"
    actions = ["uphold", "reject"] * 5
    responses = await asyncio.gather(*(client.post(url, json={"action": a}, headers=AUTH) for a in actions))
    assert sorted(r.status for r in responses) == [200] + [409] * 9


async def test_the_gets_need_no_token(client):
    d = await open_one(client)
    listing = await client.get("/v1/disputes")
    assert listing.status == 200
    assert [x["id"] for x in (await listing.json())["disputes"]] == [d["id"]]
    one = await client.get(f"/v1/disputes/{d['id']}")
    assert (await one.json())["status"] == "open"
    assert (await client.get("/v1/disputes?status=closed")).status == 200
    assert (await client.get("/v1/disputes/nope")).status == 404


async def test_the_metric_label_is_the_code_never_the_operator_text(client, service):
    await open_one(client, note="Binance wick, ask @desk")
    text = service.metrics.render().decode()
    assert f'markd_disputes_total{{market="{MARKET}",reason="manual"}} 1.0' in text
    assert f'markd_disputes_open{{market="{MARKET}"}} 1.0' in text
    assert "Binance wick" not in text


async def test_with_redis_down_reads_fall_back_to_memory_and_resolve_is_503():
    settings = make_settings().model_copy(update={"dispute_token": SecretStr(TOKEN)})
    dead = DisputeStore(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True))
    service = DisputeService(DisputeStage(settings), dead, VirtualClock(5.0))
    client = await serve(service)
    try:
        d = await open_one(client)  # the stage holds the market even if Redis missed the record
        assert run(service.stage, 100.0, None, 6.0).mark.status is Status.HELD
        listing = await (await client.get("/v1/disputes")).json()
        assert [x["id"] for x in listing["disputes"]] == [d["id"]]
        one = await client.get(f"/v1/disputes/{d['id']}")
        assert (one.status, (await one.json())["id"]) == (200, d["id"])
        assert (await client.get("/v1/disputes/nope")).status == 404
        url = f"/v1/disputes/{d['id']}/resolve"
        resolve = await client.post(url, json={"action": "reject"}, headers=AUTH)
        assert resolve.status == 503  # no arbiter, no resolve: two replicas could both win
    finally:
        await client.close()
        await dead.close()


async def test_every_stage_event_is_counted_by_kind(service):
    await service.record([Event(EventKind.TIER_CHANGED, MARKET, 1000.0, {"from": 1, "to": 2})])
    text = service.metrics.render().decode()
    assert f'markd_events_total{{kind="tier_changed",market="{MARKET}"}} 1.0' in text


async def test_the_listing_filters_by_status(client):
    kept, ruled = await open_one(client), await open_one(client)
    resolve = await client.post(f"/v1/disputes/{ruled['id']}/resolve", json={"action": "uphold"}, headers=AUTH)
    assert resolve.status == 200
    for status, ids in (("open", [kept["id"]]), ("closed", [ruled["id"]])):
        listing = await (await client.get(f"/v1/disputes?status={status}")).json()
        assert [(x["id"], x["status"]) for x in listing["disputes"]] == [(i, status) for i in ids]
    assert (await client.get("/v1/disputes?status=resolved")).status == 400
