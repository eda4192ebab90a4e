"""oracle.serving on a real loopback server: the request timeout, the refusal when every connection
is busy, the idle timeout after a response, and the rate-limited log lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from oracle.serving import HttpLimits, LimitedSite, RateLimitedLog, limits_middleware
from oracle.settings import ServiceSettings

pytestmark = pytest.mark.timeout(30)

Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(**limits: int) -> int:
        settings = ServiceSettings(**limits)
        guard = HttpLimits(settings)
        release = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            await request.read()  # a body the client may never finish
            await release.wait()
            return web.Response(text="late")

        async def fast(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/slow", slow)
        app.router.add_get("/fast", fast)
        app.middlewares.append(limits_middleware(guard))
        runner = web.AppRunner(app, shutdown_timeout=0.1, **guard.handler_args())
        await runner.setup()
        await LimitedSite(runner, "127.0.0.1", 0, guard).start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def send(port: int, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    return reader, writer


async def status_line(reader: asyncio.StreamReader) -> bytes:
    return (await asyncio.wait_for(reader.readline(), 5)).strip()


async def test_a_request_whose_body_never_finishes_gets_408(serve: Serve) -> None:
    port = await serve(http_request_timeout_ms=300)
    reader, writer = await send(port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
    assert await status_line(reader) == b"HTTP/1.1 408 Request Timeout"
    writer.close()


async def test_with_every_connection_busy_a_new_one_is_refused_with_503(serve: Serve) -> None:
    port = await serve(http_max_connections=2, http_request_timeout_ms=10_000)
    busy = [await send(port, b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") for _ in range(2)]
    await asyncio.sleep(0.2)  # both requests are in their handlers now
    reader, writer = await send(port, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await status_line(reader) == b"HTTP/1.1 503 Service Unavailable"
    for _, w in [*busy, (reader, writer)]:
        w.close()


async def test_an_idle_connection_makes_room_for_a_new_one(serve: Serve) -> None:
    port = await serve(http_max_connections=2)
    idle = [await send(port, b"") for _ in range(2)]
    await asyncio.sleep(0.1)
    reader, writer = await send(port, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await status_line(reader) == b"HTTP/1.1 200 OK"
    assert await asyncio.wait_for(idle[0][0].read(), 5) == b""  # the oldest idle one was closed
    for _, w in [*idle, (reader, writer)]:
        w.close()


async def test_a_keep_alive_connection_idle_too_long_is_closed(serve: Serve) -> None:
    port = await serve(http_idle_timeout_ms=300)
    reader, writer = await send(port, b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await status_line(reader) == b"HTTP/1.1 200 OK"
    rest = await asyncio.wait_for(reader.read(), 5)  # the answer's tail, then the server's close
    assert rest.endswith(b"ok")
    writer.close()


def test_a_recurring_condition_is_one_warning_per_period_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    now = [0.0]
    line = RateLimitedLog("thing_happened", every_s=10.0, clock=lambda: now[0])
    for t in range(25):  # 25 occurrences over 25 s: lines at 0 s, 10 s and 20 s
        now[0] = float(t)
        line.hit()
    records = [r for r in caplog.records if r.getMessage() == "thing_happened"]
    assert [getattr(r, "count", None) for r in records] == [1, 10, 10]
    assert line.total == 25
