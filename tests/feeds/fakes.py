"""Fake venues on loopback for the feed tests, serving the real payloads at the venues' real paths.

`FakeVenue` is one aiohttp server that answers REST requests and WebSocket connections from a
`VenueCase`, and misbehaves on demand: `venue.fault = "timeout" | "404" | "429" | "500" | "503" |
"malformed" | "close" | "garbage" | "silent"`, or serves a mutated payload (`venue.mode = "0"`,
"NaN", "crossed", "schema", ...); `venue.heal()` ends either. `FastClock` is the wall clock with
sleeps cut short and recorded, so backoff and Retry-After are visible to assertions without costing
test time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from feeds.chainlink import encode_round
from tests.feeds import perp_payloads as perp

PAYLOADS = Path("fixtures/payloads")
ETH_USD_PROXY = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"  # Chainlink's ETH/USD, as captured
BTC_FEED = "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43"  # Pyth BTC/USD
ETH_FEED = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"  # Pyth ETH/USD
JsonPath = tuple[str | int, ...]


class FastClock:
    """Wall time, but sleep() waits at most `cap` seconds and remembers what was asked."""

    def __init__(self, cap: float = 0.02) -> None:
        self.cap = cap
        self.sleeps: list[float] = []

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(min(max(0.0, seconds), self.cap))


def load(shared: Path, name: str) -> Any:
    return json.loads((shared / PAYLOADS / name).read_text())


def _set(doc: Any, path: JsonPath, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _drop(doc: Any, path: JsonPath) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


@dataclass
class VenueCase:
    """How one venue's fake behaves: its payloads, and where their prices and required fields sit."""

    kind: str
    refs: list[dict[str, Any]]
    docs: list[Any]  # REST: one answer (docs[0]); WS: the messages streamed in turn
    path: str = "/"  # the REST path the adapter must request (or WS path prefix)
    bid: JsonPath | None = None
    ask: JsonPath | None = None
    last: JsonPath | None = None
    required: JsonPath = ()
    transport: str = "rest"
    render: Callable[[Any, Any], Any] = lambda doc, _request_json: doc
    bad_values: Sequence[str] = ("NaN", "0", "-1")
    product: str = "spot"

    @property
    def pairs(self) -> list[str]:
        return [r["pair"] for r in self.refs]

    @property
    def name(self) -> str:
        """The case's (and its source's) name: the kind, `_perp` added for a perpetual product."""
        return self.kind if self.product == "spot" else f"{self.kind}_perp"

    def id(self) -> str:
        return f"{self.name}-{self.transport}"

    def mutated(self, doc: Any, mode: str | None) -> Any:
        doc = copy.deepcopy(doc)
        if mode == "schema":
            _drop(doc, self.required)
        elif mode == "crossed":
            assert self.bid and self.ask
            _set(doc, self.bid, "2")
            _set(doc, self.ask, "1")
        elif mode is not None:  # a bad price value in every price field
            for p in (self.bid, self.ask, self.last):
                if p is not None:
                    _set(doc, p, mode)
        return doc


@dataclass
class FakeVenue:
    case: VenueCase
    port: int = 0
    fault: str | None = None
    mode: str | None = None  # a payload mutation (see VenueCase.mutated)
    retry_after: str = "1"
    interval_s: float = 0.01  # between WebSocket messages
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, query)
    received: list[str] = field(default_factory=list)  # WebSocket text from the client
    connections: int = 0
    closed: int = 0  # WebSocket connections that have ended

    async def start(self) -> FakeVenue:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._wake = asyncio.Event()
        return self

    async def stop(self) -> None:
        self._wake.set()
        await self._runner.cleanup()

    def heal(self) -> None:
        self.fault = self.mode = None
        self._wake.set()

    @property
    def url(self) -> str:
        scheme = "ws" if self.case.transport == "ws" else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.case.path if self.case.kind == 'http_json' else ''}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, request.query_string))
        if self.fault in ("500", "503", "429", "404"):  # refused before any upgrade, as proxies do
            headers = {"Retry-After": self.retry_after} if self.fault == "429" else {}
            return web.Response(status=int(self.fault), headers=headers, text="refused")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws(request)
        return await self._rest(request)

    async def _hang(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), 5)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        if self.fault == "timeout":
            await self._hang()
        if self.fault == "malformed":
            return web.Response(text='{"result": [1, 2', content_type="application/json")
        doc = self.case.render(self.case.mutated(self.case.docs[0], self.mode), body)
        return web.json_response(doc)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._stream(ws)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()
            self.closed += 1
        return ws

    async def _read(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                self.received.append(msg.data)
                if msg.data == "ping":
                    await ws.send_str("pong")

    async def _stream(self, ws: web.WebSocketResponse) -> None:
        sent = 0
        while not ws.closed:
            if self.fault == "silent":
                await self._hang()
                return  # a silent venue's connection is gone for good
            if self.fault == "close" and sent:
                return
            if self.fault == "garbage" and sent % 2:
                await ws.send_str("}{ not json")
            doc = self.case.docs[sent % len(self.case.docs)]
            await ws.send_str(json.dumps(self.case.mutated(doc, self.mode)))
            sent += 1
            await asyncio.sleep(self.interval_s)


# --- the cases: every adapter, fed its real payloads ---


def _messages(shared: Path, name: str, keep: Callable[[Any], bool] = lambda _: True) -> list[Any]:
    return [m["msg"] for m in load(shared, name)["messages"] if keep(m["msg"])]


def _chainlink_answer(doc: dict[str, Any], request_json: Any) -> Any:
    """A JSON-RPC answer to eth_call(latestRoundData), built from the captured round."""
    if "result" not in doc:
        return {"jsonrpc": "2.0", "id": request_json["id"]}  # the schema change: no result
    r = doc["result"]
    words = [int(r[k]) for k in ("roundId", "answer", "startedAt", "updatedAt", "answeredInRound")]
    return {"jsonrpc": "2.0", "id": request_json["id"], "result": encode_round(*words)}


def rest_cases(shared: Path) -> list[VenueCase]:
    kraken = ("result", "XXBTZUSD")
    okx_doc = load(shared, "okx_api_v5_market_ticker.json")
    round_ = load(shared, "chainlink_latestRoundData_eth_usd.json")["latestRoundData"]
    return [
        VenueCase(
            "binance",
            [{"pair": "LTC-BTC"}, {"pair": "ETH-BTC"}],
            [load(shared, "binance_api_v3_ticker_bookTicker.json")["multi_symbol"]],
            "/api/v3/ticker/bookTicker",
            bid=(0, "bidPrice"),
            ask=(0, "askPrice"),
            required=(0, "askPrice"),
        ),
        VenueCase(
            "coinbase",
            [{"pair": "BTC-USD"}],
            [load(shared, "coinbase_exchange_products_ticker.json")],
            "/products/BTC-USD/ticker",
            bid=("bid",),
            ask=("ask",),
            last=("price",),
            required=("ask",),
        ),
        VenueCase(
            "kraken",
            [{"pair": "BTC-USD"}],
            [load(shared, "kraken_0_public_Ticker_XBTUSD.json")],
            "/0/public/Ticker",
            bid=(*kraken, "b", 0),
            ask=(*kraken, "a", 0),
            last=(*kraken, "c", 0),
            required=(*kraken, "a"),
        ),
        VenueCase(
            "okx",
            [{"pair": "ETH-BTC"}],
            [okx_doc],
            "/api/v5/market/ticker",
            bid=("data", 0, "bidPx"),
            ask=("data", 0, "askPx"),
            last=("data", 0, "last"),
            required=("data", 0, "ts"),
        ),
        VenueCase(
            "bybit",
            [{"pair": "BTC-USDT"}],
            [load(shared, "bybit_v5_market_tickers_spot.json")],
            "/v5/market/tickers",
            bid=("result", "list", 0, "bid1Price"),
            ask=("result", "list", 0, "ask1Price"),
            last=("result", "list", 0, "lastPrice"),
            required=("result", "list", 0, "ask1Price"),
        ),
        VenueCase(
            "bitstamp",
            [{"pair": "BTC-USD"}],
            [load(shared, "bitstamp_api_v2_ticker_btcusd.json")],
            "/api/v2/ticker/btcusd/",
            bid=("bid",),
            ask=("ask",),
            last=("last",),
            required=("timestamp",),
        ),
        VenueCase(
            "pyth",
            [{"pair": "BTC-USD", "id": BTC_FEED}],
            [load(shared, "pyth_hermes_v2_updates_price_latest.json")],
            "/v2/updates/price/latest",
            last=("parsed", 0, "price", "price"),
            required=("parsed", 0, "price", "expo"),
            bad_values=("0", "-5190075917635"),  # an integer mantissa cannot be NaN
        ),
        VenueCase(
            "chainlink",
            # The capture is from 2023: a heartbeat this long keeps it fresh for these tests.
            [{"pair": "ETH-USD", "address": ETH_USD_PROXY, "decimals": 8, "heartbeat_s": 1e10}],
            [{"result": round_}],
            "/",
            last=("result", "answer"),
            required=("result",),
            render=_chainlink_answer,
            bad_values=("0", "-1"),
        ),
        *_perp_rest_cases(),
        VenueCase(
            "http_json",
            [{"pair": "ETH-BTC", "path": "data.0.last"}],
            [okx_doc],  # any JSON document will do: OKX's ticker is a real one
            "/any/ticker.json",
            last=("data", 0, "last"),
            required=("data", 0, "last"),
        ),
    ]


def ws_cases(shared: Path) -> list[VenueCase]:
    kraken_pairs = ["WAVES-EUR", "XMR-USD", "KSM-BTC", "GRT-ETH", "SC-EUR", "ETH-CHF", "OCEAN-BTC", "OMG-USD"]
    kraken_pairs += ["BTC-CHF", "ADA-BTC"]
    coinbase = _messages(shared, "coinbase_exchange_ws_ticker.json")
    return [
        VenueCase(
            "binance",
            [{"pair": p} for p in ("NKN-USDT", "LRC-BTC", "BLZ-ETH", "RUNE-EUR")],
            _messages(shared, "binance_ws_bookTicker.json"),
            "/stream",
            bid=("data", "b"),
            ask=("data", "a"),
            required=("data", "a"),
            transport="ws",
        ),
        VenueCase(
            "coinbase",
            [{"pair": p} for p in dict.fromkeys(m["product_id"] for m in coinbase)],
            coinbase,
            bid=("best_bid",),
            ask=("best_ask",),
            last=("price",),
            required=("best_ask",),
            transport="ws",
        ),
        VenueCase(
            "kraken",
            [{"pair": p} for p in kraken_pairs],
            _messages(shared, "kraken_ws_v1_ticker.json"),
            bid=(1, "b", 0),
            ask=(1, "a", 0),
            last=(1, "c", 0),
            required=(1, "a"),
            transport="ws",
        ),
        VenueCase(
            "okx",
            [{"pair": "BTC-USDT"}],
            _messages(shared, "okx_ws_tickers.json", lambda m: m["arg"]["instId"] == "BTC-USDT"),
            bid=("data", 0, "bidPx"),
            ask=("data", 0, "askPx"),
            last=("data", 0, "last"),
            required=("data", 0, "ts"),
            transport="ws",
        ),
        VenueCase(
            "binance",
            [{"pair": "BNB-USDT"}],
            [perp.BINANCE_FSTREAM_BOOK_TICKER],
            "/stream",
            bid=("data", "b"),
            ask=("data", "a"),
            required=("data", "a"),
            transport="ws",
            product="perp",
        ),
        VenueCase(
            "okx",
            [{"pair": "BTC-USDT"}],
            [perp.OKX_WS_TICKERS_SWAP],
            bid=("data", 0, "bidPx"),
            ask=("data", 0, "askPx"),
            last=("data", 0, "last"),
            required=("data", 0, "ts"),
            transport="ws",
            product="perp",
        ),
    ]


def _perp_rest_cases() -> list[VenueCase]:
    """The perpetuals (`product = "perp"`) of the venues that have them, on their real payloads."""
    return [
        VenueCase(
            "binance",
            [{"pair": "BTC-USDT"}],
            [perp.BINANCE_FAPI_BOOK_TICKER],
            "/fapi/v1/ticker/bookTicker",
            bid=("bidPrice",),
            ask=("askPrice",),
            required=("askPrice",),
            product="perp",
        ),
        VenueCase(
            "okx",
            [{"pair": "UNI-USD"}],
            [perp.OKX_REST_TICKER_SWAP],
            "/api/v5/market/ticker",
            bid=("data", 0, "bidPx"),
            ask=("data", 0, "askPx"),
            last=("data", 0, "last"),
            required=("data", 0, "ts"),
            product="perp",
        ),
        VenueCase(
            "bybit",
            [{"pair": "BTC-USD"}],
            [perp.BYBIT_TICKERS_LINEAR_INVERSE],
            "/v5/market/tickers",
            bid=("result", "list", 0, "bid1Price"),
            ask=("result", "list", 0, "ask1Price"),
            last=("result", "list", 0, "lastPrice"),
            required=("result", "list", 0, "ask1Price"),
            product="perp",
        ),
    ]
