"""Binance USD-M futures: REST `/fapi/v1/ticker/bookTicker`, WS `<symbol>@bookTicker` (fstream).

The spot simulation's symbols and streams, with what the futures forms add: the REST ticker's
`time` and the stream's `e`, `E` and `T` (milliseconds). The futures ticker takes one `symbol`
(or none: every symbol); it has no batched `symbols` form.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import Conn, Json
from oracle.sim.venues.binance import Binance


class BinancePerp(Binance):
    name = "binance_perp"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/fapi/v1/ticker/bookTicker", self._futures_rest),
            web.get("/ws", self._ws_handler),
            web.get("/ws/{stream}", self._ws_handler),
        ]

    async def _futures_rest(self, request: web.Request) -> web.Response:
        if "symbols" in request.query:  # not a futures parameter
            return web.json_response({"code": -1101, "msg": "Too many parameters."}, status=400)
        return await self._rest(self._book)(request)

    def _book(self, t: Ticker) -> dict[str, Any]:
        return {**super()._book(t), "time": round(t.ts * 1000)}

    def push(self, conn: Conn, ticker: Ticker) -> Json:
        out = super().push(conn, ticker)
        assert isinstance(out, dict)
        data = out["data"] if conn.ids["combined"] else out
        ms = round(ticker.ts * 1000)
        data.update({"e": "bookTicker", "E": ms, "T": ms})
        return out
