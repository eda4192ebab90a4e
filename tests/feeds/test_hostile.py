"""A hostile venue on loopback: 50 MB answers (with and without a Content-Length), a 10 MB WebSocket
message, big but valid documents, and a WebSocket that flaps after one good quote. The daemon must
read no more than `max_body_bytes`, say `too_large` clearly, keep big parses off the event loop,
and keep backing off from a venue that drops it after every quote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import feeds.adapter
from feeds.parsing import INLINE_BYTES, FrameParser
from feeds.runner import build_adapters
from feeds.transport import Frame
from oracle.backoff import Backoff
from oracle.settings import Settings
from tests.feeds.conftest import RUNNER_OPTIONS, Feed, settings_for, until

pytestmark = pytest.mark.timeout(60)

MB = 1024 * 1024
CAP = 1 * MB  # the tests' max_body_bytes


@dataclass
class Hostile:
    """One aiohttp server whose routes misbehave, counting what it managed to send."""

    ws_message: dict[str, Any]  # a good WebSocket message (Coinbase's ticker)
    sent: dict[str, int] = field(default_factory=dict)  # route -> body bytes written
    connections: int = 0
    url: str = ""

    async def start(self) -> Hostile:
        app = web.Application()
        app.router.add_get("/fat", self.fat)
        app.router.add_get("/fat-chunked", self.fat_chunked)
        app.router.add_get("/big-valid.json", self.big_valid)
        app.router.add_get("/small.json", self.small)
        app.router.add_get("/ws-fat", self.ws_fat)
        app.router.add_get("/ws-flap", self.ws_flap)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _stream(self, request: web.Request, name: str, total: int, length: bool) -> web.StreamResponse:
        """`total` bytes of one 50 MB JSON string, written in 64 KiB pieces until the client hangs up."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        if length:
            resp.content_length = total
        else:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        piece = b" " * 65536
        self.sent[name] = 0
        try:
            while self.sent[name] < total:
                await resp.write(piece)
                self.sent[name] += len(piece)
        except (ConnectionError, RuntimeError):  # the client hung up, as it should
            pass
        return resp

    async def fat(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "fat", 50 * MB, length=True)

    async def fat_chunked(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, "fat-chunked", 50 * MB, length=False)

    async def big_valid(self, request: web.Request) -> web.Response:
        # Valid, under the cap, but far over INLINE_BYTES: padding the venue might well send.
        doc = {"padding": ["x" * 100] * 5000, "price": "123.5"}
        return web.json_response(doc)

    async def small(self, request: web.Request) -> web.Response:
        return web.json_response({"price": "99.25"})

    async def ws_fat(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(json.dumps(self.ws_message))  # one good quote first: the stream is real
        await ws.send_str(json.dumps({**self.ws_message, "padding": "x" * (10 * MB)}))
        await ws.receive()  # until the client drops us
        return ws

    async def ws_flap(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(json.dumps(self.ws_message))  # one good quote, then gone
        await asyncio.sleep(0.01)
        await ws.close()
        return ws


@pytest.fixture
async def hostile(ws_case: Any) -> AsyncIterator[Hostile]:
    server = await Hostile(ws_case("coinbase").docs[0]).start()
    try:
        yield server
    finally:
        await server.stop()


def json_source(url: str, **source: Any) -> Settings:
    return Settings.model_validate(
        {
            "sources": {"doc": {"kind": "http_json", "base_url": url, "poll_ms": 20, "timeout_ms": 2000, **source}},
            "markets": {
                "ETH-BTC": {"sources": [{"source": "doc", "pair": "ETH-BTC", "path": "price"}], "min_sources": 1}
            },
        }
    )


@pytest.mark.parametrize("route", ["fat", "fat-chunked"])
async def test_a_50_mb_answer_is_too_large_and_never_read_whole(hostile: Hostile, route: str) -> None:
    async with Feed(json_source(f"http://{hostile.url}/{route}", max_body_bytes=CAP)) as feed:
        await until(lambda: feed.errors("too_large") >= 2)
        assert feed.counted().keys() == {"too_large"}, feed.counted()  # not `connect`, not `decode`
        assert feed.up() == 0
    # The client hung up after about the cap; socket buffers take a few MB more, never the 50.
    assert 0 < hostile.sent[route] < 20 * MB, hostile.sent


async def test_too_large_says_which_limit_and_how_big(hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)  # whatever an earlier test left the root logger at
    async with Feed(json_source(f"http://{hostile.url}/fat", max_body_bytes=CAP)) as feed:
        await until(lambda: feed.errors("too_large") >= 1)
    message = next(r.getMessage() for r in caplog.records if "too_large" in r.getMessage())
    assert f"an answer of {50 * MB} bytes is over max_body_bytes ({CAP} bytes)" in message, message


async def test_a_10_mb_websocket_message_is_too_large_not_a_connect_error_with_no_message(
    hostile: Hostile, ws_case: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    case = ws_case("coinbase")
    settings = settings_for(case, f"ws://{hostile.url}/ws-fat", timeout_ms=5000)  # the default cap: 4 MiB
    async with Feed(settings) as feed:
        await until(lambda: feed.errors("too_large") >= 2, timeout=20)
        assert feed.errors("connect") == 0, feed.counted()
        assert any(q.pair == case.pairs[0] for q in feed.quotes)  # the good message before it counted
    messages = [r.getMessage() for r in caplog.records if "too_large" in r.getMessage()]
    assert messages and all(f"a message is over max_body_bytes ({4 * MB} bytes)" in m for m in messages)
    assert not any(m.endswith("None)") for m in messages)


async def test_big_documents_are_parsed_off_the_event_loop(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every decode that happens in this process (on the loop) is recorded; the worker process has
    # its own, unpatched module, so a big document parsed there leaves no record here.
    decoded: list[int] = []
    real = feeds.adapter.decode

    def spy(body: str | bytes) -> Any:
        decoded.append(len(body))
        return real(body)

    monkeypatch.setattr(feeds.adapter, "decode", spy)
    async with Feed(json_source(f"http://{hostile.url}/big-valid.json", max_body_bytes=CAP)) as feed:
        quote = await feed.next_quote("ETH-BTC", timeout=30)  # the worker's first start imports markd
        assert quote.price == 123.5
    assert decoded == [], "a document over INLINE_BYTES was decoded on the event loop"
    async with Feed(json_source(f"http://{hostile.url}/small.json")) as feed:
        assert (await feed.next_quote("ETH-BTC")).price == 99.25
    assert decoded and max(decoded) <= INLINE_BYTES  # the spy does see what runs on the loop


async def test_a_websocket_that_drops_us_after_each_quote_keeps_backing_off(hostile: Hostile, ws_case: Any) -> None:
    case = ws_case("coinbase")
    # A generous connect timeout: on a loaded machine a timed-out connect would be one more failure.
    async with Feed(settings_for(case, f"ws://{hostile.url}/ws-flap", timeout_ms=5000)) as feed:
        await until(lambda: len(feed.quotes) >= 8, timeout=30)  # eight connections, one good quote each
        delays = list(feed.clock.sleeps)
    initial, cap = RUNNER_OPTIONS["backoff_initial_s"], RUNNER_OPTIONS["backoff_max_s"]
    # Doubling from `initial`: by the 5th failure the step is the cap, and a delay is at least half
    # its step. Had each quote reset the backoff, every delay would stay within [initial/2, initial].
    assert delays[0] <= initial
    assert all(d >= cap / 2 for d in delays[4:7]), delays


def test_only_a_healthy_spell_forgets_the_failures() -> None:
    b = Backoff(1.0, 64.0, random.Random(1), healthy_s=10.0)
    for _ in range(4):
        b.next()
    b.healthy(100.0)  # one good quote: not yet proof of recovery
    b.healthy(105.0)
    assert b.failures == 4 and b.next() >= 8.0  # the 5th step is 16 s, half of it fixed
    b.healthy(200.0)
    b.healthy(210.0)  # good quotes for 10 s with no failure in between
    assert b.failures == 0 and b.next() <= 1.0


def test_a_failure_restarts_the_healthy_clock() -> None:
    b = Backoff(1.0, 64.0, random.Random(1), healthy_s=10.0)
    b.next()
    b.healthy(0.0)
    b.next()  # dropped at 5 s: the spell from 0 s does not count any more
    b.healthy(9.0)
    b.healthy(12.0)
    assert b.failures == 2


def worker_pids() -> list[int]:
    """This process's children that are spawned multiprocessing workers (not its resource tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == os.getpid() and b"spawn_main" in cmdline:
                pids.append(int(stat.parent.name))
    return pids


async def test_a_dead_parse_worker_costs_at_most_one_frame() -> None:
    adapter = build_adapters(json_source("http://127.0.0.1:9/doc.json"))["doc"]
    parser = FrameParser(inline_bytes=16)  # every frame below goes to the worker
    frame = Frame(b'{"price": "5.5", "padding": "over sixteen bytes"}', 1.0)
    before = set(worker_pids())  # an earlier test's worker may still be on its way out
    try:
        assert [q.price for q in (await parser.parse(adapter, frame)).quotes] == [5.5]
        pids = [p for p in worker_pids() if p not in before]
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        lost = await parser.parse(adapter, frame)  # the pool learns of the death now, or already did
        assert lost.quotes or [e.code for e in lost.errors] == ["decode"]
        assert [q.price for q in (await parser.parse(adapter, frame)).quotes] == [5.5]  # a new worker
    finally:
        parser.close()
