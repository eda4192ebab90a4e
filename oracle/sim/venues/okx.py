"""OKX v5: REST `/api/v5/market/ticker?instId=BTC-USDT` (and `/tickers?instType=SPOT`), WS public
channel `tickers` at `/ws/v5/public`.

Instrument ids are the canonical pairs. Every value is a string, `ts` in milliseconds; REST wraps
the data as `{"code": "0", "msg": "", "data": [...]}` and reports errors in `code` with HTTP 200. On
WS a client subscribes with `{"op": "subscribe", "args": [{"channel": "tickers", "instId": ...}]}`,
gets one `{"event": "subscribe", "arg": ..}` ack per arg, then `{"arg": .., "data": [..]}` pushes;
it keeps the socket alive by sending the text `ping`, answered `pong`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import Conn, Json, VenueServer, parse_json, price_decimals, trimmed

CHANNEL = "tickers"
CONN_ID = "a4d3ae55"


class Okx(VenueServer):
    name = "okx"
    ws_path = ws_endpoint = "/ws/v5/public"
    inst_type = "SPOT"  # what `/tickers?instType=` lists and each ticker's `instType`
    inst_suffix = ""  # a pair's instId is the pair plus this (`-SWAP` for the perpetuals)

    def inst(self, pair: str) -> str:
        return pair + self.inst_suffix

    def pair_of(self, inst: Any) -> str | None:
        """The pair an instId names, if this server quotes it."""
        if not isinstance(inst, str) or not inst.endswith(self.inst_suffix):
            return None
        pair = inst.removesuffix(self.inst_suffix) if self.inst_suffix else inst
        return pair if pair in self.pairs else None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/market/ticker", self._ticker),
            web.get("/api/v5/market/tickers", self._tickers),
        ]

    async def _ticker(self, request: web.Request) -> web.Response:
        pair = self.pair_of(request.query.get("instId", ""))
        if pair is None:
            return web.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        return web.json_response({"code": "0", "msg": "", "data": [self._fields(self.ticker(pair))]})

    async def _tickers(self, request: web.Request) -> web.Response:
        if request.query.get("instType") != self.inst_type:
            return web.json_response({"code": "51000", "msg": "Parameter instType error", "data": []})
        data = [self._fields(self.ticker(p)) for p in self.pairs]
        return web.json_response({"code": "0", "msg": "", "data": data})

    async def on_text(self, conn: Conn, text: str) -> None:
        if text == "ping":
            await self.send(conn, "pong")
            return
        msg = parse_json(text)
        op = msg.get("op") if isinstance(msg, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(msg, dict):
            await self.send(conn, _error("60012", f"Invalid request: {text}"))
            return
        for arg in msg.get("args") or []:
            await self._subscription(conn, op, arg)

    async def _subscription(self, conn: Conn, op: str, arg: Any) -> None:
        inst = arg.get("instId") if isinstance(arg, dict) else None
        pair = self.pair_of(inst)
        if not isinstance(arg, dict) or arg.get("channel") != CHANNEL or pair is None:
            await self.send(conn, _error("60018", f"Wrong URL or channel:{CHANNEL},instId:{inst} doesn't exist."))
            return
        conn.subscribe(pair, on=op == "subscribe")
        await self.send(conn, {"event": op, "arg": {"channel": CHANNEL, "instId": inst}, "connId": CONN_ID})

    def push(self, conn: Conn, ticker: Ticker) -> Json:
        return {"arg": {"channel": CHANNEL, "instId": self.inst(ticker.pair)}, "data": [self._fields(ticker)]}

    def _fields(self, t: Ticker) -> dict[str, str]:
        return {**_fields(t), "instType": self.inst_type, "instId": self.inst(t.pair)}


def _fields(t: Ticker) -> dict[str, str]:
    d = price_decimals(t.last)
    return {
        "instType": "SPOT",
        "instId": t.pair,
        "last": trimmed(t.last, d),
        "lastSz": trimmed(t.last_size, 8),
        "askPx": trimmed(t.ask, d),
        "askSz": trimmed(t.ask_size, 8),
        "bidPx": trimmed(t.bid, d),
        "bidSz": trimmed(t.bid_size, 8),
        "open24h": trimmed(t.open, d),
        "high24h": trimmed(t.high, d),
        "low24h": trimmed(t.low, d),
        "volCcy24h": trimmed(t.volume * t.vwap, 8),
        "vol24h": trimmed(t.volume, 8),
        "ts": str(round(t.ts * 1000)),
        "sodUtc0": trimmed(t.open, d),
        "sodUtc8": trimmed(t.open, d),
    }


def _error(code: str, msg: str) -> dict[str, str]:
    return {"event": "error", "code": code, "msg": msg, "connId": CONN_ID}
