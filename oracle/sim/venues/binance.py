"""Binance spot: REST `/api/v3/ticker/bookTicker` and `/api/v3/ticker/price`, WS `<symbol>@bookTicker`.

Symbols are BASE+QUOTE (`BTCUSDT`); streams are lowercase (`btcusdt@bookTicker`), served combined
(`/stream?streams=a/b`, frames wrapped in `{"stream", "data"}`) or raw (`/ws/<stream>`), and a client
may add streams later with `{"method": "SUBSCRIBE", "params": [...], "id": n}`. Every number is a
string with 8 decimals. The spot bookTicker payload carries no event time.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import Conn, Json, VenueServer, fixed, joined, parse_json

STREAM = "@bookTicker"
# The pattern Binance itself states in its -1100 error for `symbols`.
SYMBOLS_SYNTAX = re.compile(r'\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}")*)?\]')
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Binance(VenueServer):
    name = "binance"
    ws_path = "/stream"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v3/ticker/bookTicker", self._rest(self._book)),
            web.get("/api/v3/ticker/price", self._rest(self._price)),
            web.get("/ws", self._ws_handler),  # raw streams, added later with SUBSCRIBE
            web.get("/ws/{stream}", self._ws_handler),
        ]

    @functools.cached_property
    def _by_symbol(self) -> dict[str, str]:
        """Symbol → pair, built once: every REST symbol and every stream name is looked up in it."""
        return {joined(p): p for p in self.pairs}

    def _book(self, t: Ticker) -> dict[str, Any]:
        return {
            "symbol": joined(t.pair),
            "bidPrice": fixed(t.bid, 8),
            "bidQty": fixed(t.bid_size, 8),
            "askPrice": fixed(t.ask, 8),
            "askQty": fixed(t.ask_size, 8),
        }

    def _price(self, t: Ticker) -> dict[str, Any]:
        return {"symbol": joined(t.pair), "price": fixed(t.last, 8)}

    def _rest(self, render: Callable[[Ticker], dict[str, Any]]) -> Handler:
        """One handler shape for both tickers: `?symbol=X` → object, `?symbols=[..]` or none → array."""

        async def handler(request: web.Request) -> web.Response:
            one, many = request.query.get("symbol"), request.query.get("symbols")
            if one is not None and many is not None:
                return _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            wanted = _symbols(many) if many is not None else [one] if one is not None else list(self._by_symbol)
            if wanted is None:
                return _error(
                    -1100,
                    f"Illegal characters found in parameter 'symbols'; legal range is '^{SYMBOLS_SYNTAX.pattern}$'.",
                )
            if any(s not in self._by_symbol for s in wanted):
                return web.json_response(INVALID_SYMBOL, status=400)
            rows = [render(self.ticker(self._by_symbol[s])) for s in wanted]
            return web.json_response(rows[0] if one is not None else rows)

        return handler

    # --- WebSocket -------------------------------------------------------------------------------

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        combined = conn.ids["combined"] = request.path == self.ws_path
        streams = request.query.get("streams", "").split("/") if combined else [request.match_info.get("stream")]
        for stream in filter(None, streams):
            self._subscribe(conn, stream)

    def _subscribe(self, conn: Conn, stream: str) -> bool:
        pair = self._by_symbol.get(stream.removesuffix(STREAM).upper())
        if pair is None or not stream.endswith(STREAM):
            return False
        conn.subscribe(pair)
        return True

    async def on_text(self, conn: Conn, text: str) -> None:
        msg = parse_json(text)
        if not isinstance(msg, dict) or msg.get("method") not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await self.send(conn, {"error": {"code": 2, "msg": "Invalid request"}, "id": None})
            return
        params = msg.get("params") or []
        if msg["method"] == "UNSUBSCRIBE":
            for stream in params:
                conn.subscribe(self._by_symbol.get(str(stream).removesuffix(STREAM).upper(), ""), on=False)
        elif not all(self._subscribe(conn, str(stream)) for stream in params):
            await self.send(conn, {"error": {"code": 2, "msg": "Invalid request"}, "id": msg.get("id")})
            return
        await self.send(conn, {"result": None, "id": msg.get("id")})

    def push(self, conn: Conn, ticker: Ticker) -> Json:
        data = {
            "u": ticker.seq,
            "s": joined(ticker.pair),
            "b": fixed(ticker.bid, 8),
            "B": fixed(ticker.bid_size, 8),
            "a": fixed(ticker.ask, 8),
            "A": fixed(ticker.ask_size, 8),
        }
        if not conn.ids["combined"]:
            return data
        return {"stream": f"{joined(ticker.pair).lower()}{STREAM}", "data": data}


def _symbols(text: str) -> list[str] | None:
    """Binance's `symbols=["BTCUSDT","ETHUSDT"]`: a JSON array written exactly so, without spaces
    (Binance rejects `["BTCUSDT", "ETHUSDT"]`, so the simulation does too)."""
    return json.loads(text) if SYMBOLS_SYNTAX.fullmatch(text) else None


def _error(code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=400)
