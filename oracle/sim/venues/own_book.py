"""The perp venue's own matching engine: one JSON document at `/book` with every perp's top of book.

    GET /book  ->  {"time": 1700000000123,
                    "markets": {"BTC-PERP": {"bid": "30010.5", "ask": "30011.5", "last": "30011.5"}, ...}}

This is the operator's side of a perp mark (DESIGN.md "Perpetual mark price"): markd reads it as an
`http_json` source whose refs name `bid_path`, `ask_path` and `last_path` (`markets.BTC-PERP.bid`...).
It is not a real venue's format but the simplest one a matching engine could serve. Its pairs are
the USD markets it follows (`BTC-USD`), shown as that base's perpetual (`BTC-PERP`); its spec's bias
is the premium its traders pay over spot.
"""

from __future__ import annotations

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import VenueServer, price_decimals, trimmed

PATH = "/book"


def perp_name(pair: str) -> str:
    """The perpetual the book lists for a USD market: `BTC-USD` -> `BTC-PERP`."""
    return pair.split("-")[0] + "-PERP"


class OwnBook(VenueServer):
    name = "own_book"

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self._book)]

    async def _book(self, request: web.Request) -> web.Response:
        markets = {perp_name(p): _fields(self.ticker(p)) for p in self.pairs}
        return web.json_response({"time": round(self.clock.now() * 1000), "markets": markets})


def _fields(t: Ticker) -> dict[str, str]:
    d = price_decimals(t.last)
    return {"bid": trimmed(t.bid, d), "ask": trimmed(t.ask, d), "last": trimmed(t.last, d)}
