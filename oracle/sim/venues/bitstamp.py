"""Bitstamp v2: REST `/api/v2/ticker/{pair}/` with lowercase pairs (`btcusd`).

Every value is a string, `timestamp` in whole seconds; `open` is today's open and `open_24` the
price 24 hours ago (the simulation keeps one opening price for both).
"""

from __future__ import annotations

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import VenueServer, joined, price_decimals, trimmed


class Bitstamp(VenueServer):
    name = "bitstamp"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v2/ticker/{pair}/", self._ticker),
            web.get("/api/v2/ticker/{pair}", self._append_slash),
        ]

    async def _append_slash(self, request: web.Request) -> web.Response:
        """Bitstamp's framework redirects a path without its trailing slash to the one with it."""
        raise web.HTTPMovedPermanently(request.path + "/")

    async def _ticker(self, request: web.Request) -> web.Response:
        pair = {joined(p).lower(): p for p in self.pairs}.get(request.match_info["pair"])
        if pair is None:
            return web.json_response({"status": "error", "reason": "Not Found"}, status=404)
        return web.json_response(_fields(self.ticker(pair)))


def _fields(t: Ticker) -> dict[str, str]:
    d = price_decimals(t.last)
    return {
        "timestamp": str(int(t.ts)),
        "open": trimmed(t.open, d),
        "high": trimmed(t.high, d),
        "low": trimmed(t.low, d),
        "last": trimmed(t.last, d),
        "volume": trimmed(t.volume, 8),
        "vwap": trimmed(t.vwap, d),
        "bid": trimmed(t.bid, d),
        "ask": trimmed(t.ask, d),
        "open_24": trimmed(t.open, d),
        "percent_change_24": f"{100.0 * (t.last / t.open - 1.0):.2f}",
    }
