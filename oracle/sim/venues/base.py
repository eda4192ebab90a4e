"""What every simulated venue shares: its aiohttp server, latency, outages and WebSocket plumbing.

A venue subclass only declares its wire format: REST routes that turn a `Ticker` into the venue's
JSON, and for WebSocket venues what to say on connect, how to answer a client's text message and
what to push per subscribed pair. Reconnect-worthy behaviour lives here, once:

- latency: a REST answer, and every push, leaves `spec.latency_ms` after its quote was taken;
- outages (`set_outage`): `refuse` stops listening (clients get connection refused) and drops open
  connections, `503` answers every request and handshake with 503 and closes sockets, `silent`
  accepts everything and answers nothing (REST hangs, pushes stop) until it ends;
- random outages at `spec.outage_per_hour`, seeded.

Prices and timestamps follow the SimMarket's clock; pacing (push interval, latency) is real time,
because the sockets are real. Outages end by the market's clock, so a VirtualClock ends them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from oracle.sim import walk
from oracle.sim.market import Ticker, VenueQuoter

Json = dict[str, Any] | list[Any]
WATCH_S = 0.02  # how often the watcher checks outage expiry and draws random outages (real time)


class OutageKind(StrEnum):
    REFUSE = "refuse"
    UNAVAILABLE = "503"
    SILENT = "silent"


@dataclass(frozen=True, slots=True)
class Outage:
    kind: OutageKind
    until: float  # by the market's clock


@dataclass(eq=False)
class Conn:
    """One client WebSocket and what it subscribed to (venue-specific ids live in `ids`)."""

    ws: web.WebSocketResponse
    pairs: list[str] = field(default_factory=list)
    ids: dict[str, Any] = field(default_factory=dict)

    def subscribe(self, pair: str, on: bool = True) -> None:
        """Add the pair (or remove it, with on=False); idempotent either way."""
        if on and pair not in self.pairs:
            self.pairs.append(pair)
        elif not on and pair in self.pairs:
            self.pairs.remove(pair)


class VenueServer:
    """One simulated venue on its own loopback port. Subclasses declare the wire format."""

    name: ClassVar[str]
    ws_path: ClassVar[str | None] = None  # where its WebSocket endpoint is served; None: REST only
    ws_endpoint: ClassVar[str] = ""  # the path in the WS URL handed to clients (they may append more)

    def __init__(self, quoter: VenueQuoter, pairs: Sequence[str], host: str = "127.0.0.1", port: int = 0):
        self.quoter = quoter
        self.spec = quoter.spec
        self.clock = quoter.market.clock
        self.pairs = [p for p in pairs if quoter.market.can_price(p)]
        self.host, self.port = host, port
        self.outage: Outage | None = None
        self._conns: set[Conn] = set()
        self._rng = walk.rng_for(quoter.market.seed, "outage", self.name)
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- what a venue declares -------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        """Called when a client connects (to send a greeting, or read URL subscriptions)."""

    async def on_text(self, conn: Conn, text: str) -> None:
        """A client's text message (subscribe, ping...)."""

    def push(self, conn: Conn, ticker: Ticker) -> Json | None:
        """The frame pushed for one subscribed pair."""
        raise NotImplementedError

    def idle_frame(self) -> Json | None:
        """What to send on a push tick with nothing subscribed (Kraken's heartbeat), if anything."""
        return None

    # --- life ------------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"{self.host}:{self.port}"

    def urls(self) -> dict[str, str]:
        out = {"rest": f"http://{self.base}"}
        if self.ws_path is not None:
            out["ws"] = f"ws://{self.base}{self.ws_endpoint}"
        return out

    async def start(self) -> dict[str, str]:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self.routes())
        if self.ws_path is not None:
            app.router.add_get(self.ws_path, self._ws_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen()
        self._watcher = asyncio.create_task(self._watch(), name=f"sim-{self.name}-watch")
        return self.urls()

    async def stop(self) -> None:
        """Close every connection and the server; safe to call twice, or after a failed start."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _listen(self) -> None:
        """Listen on our port; the OS picks it the first time, then a refused venue reuses it."""
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def _unlisten(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    # --- outages ---------------------------------------------------------------------------------

    def active_outage(self) -> OutageKind | None:
        if self.outage is not None and self.clock.now() < self.outage.until:
            return self.outage.kind
        return None

    async def set_outage(self, kind: OutageKind | str, seconds: float) -> None:
        """Start an outage now, for `seconds` of the market's clock (0 ends one early)."""
        kind = OutageKind(kind)
        self.outage = Outage(kind, self.clock.now() + seconds) if seconds > 0 else None
        await self._apply_outage()

    async def _apply_outage(self) -> None:
        kind = self.active_outage()
        if kind in (OutageKind.REFUSE, OutageKind.UNAVAILABLE):
            await self._close_all()
        if kind is OutageKind.REFUSE and self._site is not None:
            await self._unlisten()
        elif kind is not OutageKind.REFUSE and self._site is None and self._runner is not None:
            with contextlib.suppress(OSError):  # port briefly taken by someone else: the watcher retries
                await self._listen()

    async def _watch(self) -> None:
        last = self.clock.now()
        while True:
            await asyncio.sleep(WATCH_S)
            now = self.clock.now()
            if self.outage is not None and self.active_outage() is None:
                self.outage = None
            if self.outage is None and self._site is None:
                await self._apply_outage()
            if self.outage is None and self._random_outage_due(now - last):
                kind = self._rng.choice(list(OutageKind))
                await self.set_outage(kind, self.spec.outage_s)
            last = now

    def _random_outage_due(self, dt: float) -> bool:
        rate = self.spec.outage_per_hour / 3600.0
        return rate > 0 and dt > 0 and self._rng.random() < -math.expm1(-rate * dt)

    async def _wait_out_silence(self) -> None:
        while self.active_outage() is OutageKind.SILENT and not self._stopping.is_set():
            await asyncio.sleep(WATCH_S)

    # --- HTTP ------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        kind = self.active_outage()
        if kind is OutageKind.REFUSE:  # a keep-alive connection that predates the outage
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPServiceUnavailable()
        if kind is OutageKind.UNAVAILABLE:
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        if kind is OutageKind.SILENT:
            await self._wait_out_silence()
        response = await handler(request)
        if not isinstance(response, web.WebSocketResponse):
            await asyncio.sleep(self.spec.latency_ms / 1000.0)  # the quote ages on its way out
        return response

    def ticker(self, pair: str) -> Ticker:
        return self.quoter.quote(pair)

    # --- WebSocket -------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Conn(ws)
        self._conns.add(conn)
        try:
            await self.on_open(conn, request)  # before any push: it may set what the pushes need
            async with _background(self._push_loop(conn), f"sim-{self.name}-push"):
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT and self.active_outage() is not OutageKind.SILENT:
                        await self.on_text(conn, msg.data)
        finally:
            self._conns.discard(conn)
        return ws

    async def send(self, conn: Conn, frame: Json | str) -> None:
        """Send one frame (JSON, or raw text such as OKX's "pong"), unless the venue is silent."""
        if self.active_outage() is OutageKind.SILENT or conn.ws.closed:
            return
        text = frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))
        with contextlib.suppress(ConnectionResetError):
            await conn.ws.send_str(text)

    async def _push_loop(self, conn: Conn) -> None:
        latency = self.spec.latency_ms / 1000.0
        while not conn.ws.closed:
            await asyncio.sleep(max(0.0, self.spec.push_ms / 1000.0 - latency))
            if self.active_outage() is OutageKind.SILENT:
                continue
            frames = [self.push(conn, self.ticker(p)) for p in list(conn.pairs)] or [self.idle_frame()]
            await asyncio.sleep(latency)
            for frame in frames:
                if frame is not None:
                    await self.send(conn, frame)

    async def _close_all(self) -> None:
        for conn in list(self._conns):
            await conn.ws.close(code=1001, message=b"going away")


@contextlib.asynccontextmanager
async def _background(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run `coro` as a task for the duration of the block, then cancel it."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def joined(pair: str) -> str:
    """`BTC-USDT` → `BTCUSDT`, the symbol of Binance, Bybit and (lowercase) Bitstamp."""
    return pair.replace("-", "")


def parse_json(text: str) -> Any:
    """A client's JSON message, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def fixed(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def trimmed(x: float, decimals: int) -> str:
    """Fixed decimals without trailing zeros, as OKX, Bybit and Bitstamp print numbers ("30236")."""
    s = fixed(x, decimals)
    return s.rstrip("0").rstrip(".") if "." in s else s


def price_decimals(x: float) -> int:
    """Decimals that give a price about seven significant digits (30000.12, 1.00031)."""
    digits = max(1, math.floor(math.log10(abs(x))) + 1) if x else 1
    return max(2, 7 - digits)
