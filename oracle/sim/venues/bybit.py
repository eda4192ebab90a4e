"""Bybit v5: REST `/v5/market/tickers?category=spot[&symbol=BTCUSDT]` (without a symbol: all).

Symbols are BASE+QUOTE. Numbers are strings except `retCode` and the top-level `time` (integer
milliseconds); errors are HTTP 200 with a non-zero `retCode`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import VenueServer, joined, price_decimals, trimmed


class Bybit(VenueServer):
    name = "bybit"
    category = "spot"  # the one `category` this server answers (`linear`: the USDT perpetuals)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v5/market/tickers", self._tickers)]

    async def _tickers(self, request: web.Request) -> web.Response:
        by_symbol = {joined(p): p for p in self.pairs}
        if request.query.get("category") != self.category:
            return self._reply(10001, "Illegal category", {})
        asked = request.query.get("symbol")
        if asked is not None and asked.upper() not in by_symbol:
            return self._reply(10001, "Not supported symbols", {})
        pairs = [by_symbol[asked.upper()]] if asked else self.pairs
        return self._reply(0, "OK", {"category": self.category, "list": [_fields(self.ticker(p)) for p in pairs]})

    def _reply(self, code: int, msg: str, result: dict[str, Any]) -> web.Response:
        body = {
            "retCode": code,
            "retMsg": msg,
            "result": result,
            "retExtInfo": {},
            "time": round(self.clock.now() * 1000),
        }
        return web.json_response(body)


def _fields(t: Ticker) -> dict[str, str]:
    d = price_decimals(t.last)
    return {
        "symbol": joined(t.pair),
        "bid1Price": trimmed(t.bid, d),
        "bid1Size": trimmed(t.bid_size, 6),
        "ask1Price": trimmed(t.ask, d),
        "ask1Size": trimmed(t.ask_size, 6),
        "lastPrice": trimmed(t.last, d),
        "prevPrice24h": trimmed(t.open, d),
        "price24hPcnt": trimmed(t.last / t.open - 1.0, 4),
        "highPrice24h": trimmed(t.high, d),
        "lowPrice24h": trimmed(t.low, d),
        "turnover24h": trimmed(t.volume * t.vwap, 8),
        "volume24h": trimmed(t.volume, 6),
    }
