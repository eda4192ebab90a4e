"""Pyth Hermes: REST `/v2/updates/price/latest?ids[]=<feed id>&ids[]=...` (the fallback tier).

Pyth publishes one aggregate price per feed, not a venue's book: an integer mantissa string with a
power-of-ten `expo`, a confidence half-width in the same units and `publish_time` in whole seconds.
The `binary` part of a real answer is a signed Wormhole accumulator update, which no simulation can
produce; here it carries the right envelope (hex strings after the `PNAU` magic) but no signatures,
so a client must read `parsed`, as an oracle that does not relay updates on-chain does anyway.
"""

from __future__ import annotations

import struct
from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import VenueServer

EXPO = -8
# Pyth's real feed ids (Crypto.X/USD), the ones config/markd.toml uses.
FEED_IDS = {
    "BTC-USD": "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43",
    "ETH-USD": "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace",
    "SOL-USD": "ef0d8b6fda2ceba41da15d4095d1da392a0d2f8ed0c6c7bc0f4cfac8c280b56d",
    "USDT-USD": "2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b",
    "USDC-USD": "eaa020c61cc479712813461ce153894a96a6c00b21ed0cfc2798d1f9a9e9c94a",
}
MAGIC = b"PNAU"


class Pyth(VenueServer):
    name = "pyth"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v2/updates/price/latest", self._latest)]

    async def _latest(self, request: web.Request) -> web.Response:
        by_id = {FEED_IDS[p]: p for p in self.pairs if p in FEED_IDS}
        asked = [i.lower().removeprefix("0x") for i in request.query.getall("ids[]", [])]
        if not asked:
            return web.Response(status=400, text="Missing required parameter: ids[]")
        missing = [i for i in asked if i not in by_id]
        if missing:
            return web.Response(status=404, text=f"Price ids not found: {', '.join(missing)}")
        parsed = [_parsed(i, self.ticker(by_id[i])) for i in dict.fromkeys(asked)]
        body: dict[str, Any] = {"binary": {"encoding": "hex", "data": [_binary(parsed).hex()]}}
        if request.query.get("parsed", "true") != "false":
            body["parsed"] = parsed
        return web.json_response(body)


def _parsed(feed_id: str, t: Ticker) -> dict[str, Any]:
    scale = 10.0**-EXPO
    publish = int(t.ts)
    conf = str(round((t.ask - t.bid) / 2 * scale))
    return {
        "id": feed_id,
        "price": {
            "price": str(round((t.bid + t.ask) / 2 * scale)),
            "conf": conf,
            "expo": EXPO,
            "publish_time": publish,
        },
        "ema_price": {
            "price": str(round(t.vwap * scale)),
            "conf": conf,
            "expo": EXPO,
            "publish_time": publish,
        },
        "metadata": {"slot": t.seq, "proof_available_time": publish + 1, "prev_publish_time": publish - 1},
    }


def _binary(parsed: list[dict[str, Any]]) -> bytes:
    """The update's envelope: magic, then per feed its id, price, conf, expo and publish time."""
    out = MAGIC
    for feed in parsed:
        p = feed["price"]
        out += bytes.fromhex(feed["id"]) + struct.pack(
            ">qQiq", int(p["price"]), int(p["conf"]), p["expo"], p["publish_time"]
        )
    return out
