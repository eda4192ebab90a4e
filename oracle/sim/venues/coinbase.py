"""Coinbase Exchange: REST `/products/{product_id}/ticker`, WS feed (path `/`) channel `ticker`.

Product ids are the canonical pairs (`BTC-USD`). Numbers are strings, ids are integers, times are
ISO 8601 UTC (milliseconds in REST, microseconds on the feed). A client subscribes with
`{"type": "subscribe", "product_ids": [...], "channels": ["ticker"]}` (or channel objects carrying
their own product_ids) and is answered with a `subscriptions` message listing what it now has.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from oracle.sim.market import Ticker
from oracle.sim.venues.base import Conn, Json, VenueServer, fixed, parse_json, price_decimals

CHANNEL = "ticker"


def iso(ts: float, decimals: int) -> str:
    """`2021-04-17T16:43:30.244075Z` (decimals=6) or `2020-03-20T00:22:57.833Z` (decimals=3)."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - 6 + decimals] + "Z"


class Coinbase(VenueServer):
    name = "coinbase"
    ws_path = "/"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/products/{product_id}/ticker", self._ticker)]

    async def _ticker(self, request: web.Request) -> web.Response:
        if not request.headers.get("User-Agent"):  # Coinbase refuses anonymous clients
            return web.json_response({"message": "User-Agent header is required."}, status=400)
        pair = request.match_info["product_id"]
        if pair not in self.pairs:
            return web.json_response({"message": "NotFound"}, status=404)
        t = self.ticker(pair)
        d = price_decimals(t.last)
        return web.json_response(
            {
                "trade_id": t.seq,
                "price": fixed(t.last, d),
                "size": fixed(t.last_size, 8),
                "time": iso(t.ts, 3),
                "bid": fixed(t.bid, d),
                "ask": fixed(t.ask, d),
                "volume": fixed(t.volume, 8),
                "rfq_volume": fixed(0.0, 3),
                "conversions_volume": fixed(0.0, 2),
            }
        )

    async def on_text(self, conn: Conn, text: str) -> None:
        msg = parse_json(text)
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
            await self.send(conn, _failure("malformed message"))
            return
        wanted = _requested(msg)
        if wanted is None:
            await self.send(conn, _failure("only the ticker channel is simulated"))
            return
        unknown = [p for p in wanted if p not in self.pairs]
        if unknown:
            await self.send(conn, _failure(f"{unknown[0]} is not a valid product"))
            return
        for pair in wanted:
            conn.subscribe(pair, on=msg["type"] == "subscribe")
        channels = [{"name": CHANNEL, "product_ids": list(conn.pairs)}] if conn.pairs else []
        await self.send(conn, {"type": "subscriptions", "channels": channels})

    def push(self, conn: Conn, ticker: Ticker) -> Json:
        d = price_decimals(ticker.last)
        return {
            "type": "ticker",
            "sequence": ticker.seq,
            "product_id": ticker.pair,
            "price": fixed(ticker.last, d),
            "open_24h": fixed(ticker.open, d),
            "volume_24h": fixed(ticker.volume, 8),
            "low_24h": fixed(ticker.low, d),
            "high_24h": fixed(ticker.high, d),
            "volume_30d": fixed(ticker.volume * 30, 8),
            "best_bid": fixed(ticker.bid, d),
            "best_ask": fixed(ticker.ask, d),
            "side": ticker.side,
            "time": iso(ticker.ts, 6),
            "trade_id": ticker.seq,
            "last_size": fixed(ticker.last_size, 8),
        }


def _requested(msg: dict[str, Any]) -> list[str] | None:
    """The product ids a (un)subscribe names for the ticker channel; None if it names another channel."""
    pairs = [str(p) for p in msg.get("product_ids") or []]
    for channel in msg.get("channels") or []:
        name = channel.get("name") if isinstance(channel, dict) else channel
        if name == "heartbeat":  # accepted, as Coinbase does; the ticker pushes already keep it busy
            continue
        if name != CHANNEL:
            return None
        if isinstance(channel, dict):
            pairs += [str(p) for p in channel.get("product_ids") or []]
    return list(dict.fromkeys(pairs))


def _failure(reason: str) -> dict[str, str]:
    return {"type": "error", "message": "Failed to subscribe", "reason": reason}
