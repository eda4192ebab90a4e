"""Kraken: REST `/0/public/Ticker?pair=XBTUSD,ETHUSD`, WS v1 (path `/`) channel `ticker`.

Kraken calls bitcoin XBT and has three names per pair: the altname a client sends (`XBTUSD`), the
key its REST result is filed under (`XXBTZUSD`: legacy assets carry an X prefix and fiat a Z) and
the WS name (`XBT/USD`). REST errors are HTTP 200 with a non-empty `error` list. On WS v1 a ticker
frame is an array `[channelID, {a,b,c,v,p,t,l,h,o}, "ticker", "XBT/USD"]`; the object is the REST
one except that `o` is [today, 24h] and the whole-lot volumes in `a`/`b` are integers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from feeds.kraken import LEGACY_CRYPTO, LEGACY_FIAT, kraken_asset  # one asset table
from oracle.sim.market import Ticker
from oracle.sim.venues.base import Conn, Json, VenueServer, fixed, joined, parse_json, price_decimals

SUBSCRIPTION = {"name": "ticker"}
CHANNEL_ID0 = 119930880  # channel ids are large opaque integers on the real feed


def altname(pair: str) -> str:
    base, quote = pair.split("-")
    return kraken_asset(base) + kraken_asset(quote)


def result_key(pair: str) -> str:
    """`BTC-USD` → `XXBTZUSD`, `USDT-USD` → `USDTZUSD`, `SOL-USD` → `SOLUSD`."""
    base, quote = (kraken_asset(c) for c in pair.split("-"))
    if base in LEGACY_CRYPTO and (quote in LEGACY_FIAT or quote in LEGACY_CRYPTO):
        return f"X{base}{'Z' if quote in LEGACY_FIAT else 'X'}{quote}"
    return f"{base}Z{quote}" if base == "USDT" and quote in LEGACY_FIAT else base + quote


def wsname(pair: str) -> str:
    return "/".join(kraken_asset(c) for c in pair.split("-"))


class Kraken(VenueServer):
    name = "kraken"
    ws_path = "/"

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/0/public/Ticker", self._ticker)]

    def _lookup(self) -> dict[str, str]:
        """Every name a client may use for a pair (Kraken also accepts BTCUSD and XXBTZUSD)."""
        names: dict[str, str] = {}
        for p in self.pairs:
            names |= {altname(p): p, result_key(p): p, joined(p): p}
        return names

    async def _ticker(self, request: web.Request) -> web.Response:
        names = self._lookup()
        asked = [s.strip().upper() for s in request.query.get("pair", "").split(",") if s.strip()]
        if any(s not in names for s in asked):
            return web.json_response({"error": ["EQuery:Unknown asset pair"]})
        pairs = dict.fromkeys(names[s] for s in asked) if asked else self.pairs
        result = {result_key(p): _rest_fields(self.ticker(p)) for p in pairs}
        return web.json_response({"error": [], "result": result})

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        await self.send(
            conn,
            {
                "connectionID": CHANNEL_ID0 * 10**10,
                "event": "systemStatus",
                "status": "online",
                "version": "1.9.0",
            },
        )

    async def on_text(self, conn: Conn, text: str) -> None:
        msg = parse_json(text)
        event = msg.get("event") if isinstance(msg, dict) else None
        reqid = {"reqid": msg["reqid"]} if isinstance(msg, dict) and "reqid" in msg else {}
        if event == "ping":
            await self.send(conn, {"event": "pong", **reqid})
        elif event in ("subscribe", "unsubscribe") and isinstance(msg, dict):
            await self._subscription(conn, event, msg, reqid)
        else:
            await self.send(conn, {"errorMessage": "Unsupported event", "event": "error", **reqid})

    async def _subscription(self, conn: Conn, event: str, msg: dict[str, Any], reqid: dict[str, Any]) -> None:
        by_ws = {wsname(p): p for p in self.pairs}
        if (msg.get("subscription") or {}).get("name") != "ticker":
            await self.send(
                conn,
                {
                    "errorMessage": "Subscription name invalid",
                    "event": "subscriptionStatus",
                    "status": "error",
                    **reqid,
                },
            )
            return
        for name in msg.get("pair") or []:
            base = {"event": "subscriptionStatus", "pair": name, "subscription": SUBSCRIPTION, **reqid}
            pair = by_ws.get(name)
            if pair is None:
                await self.send(
                    conn, {"errorMessage": f"Currency pair not supported {name}", **base, "status": "error"}
                )
                continue
            conn.subscribe(pair, on=event == "subscribe")
            status = "subscribed" if event == "subscribe" else "unsubscribed"
            channel = {"channelID": self._channel(pair), "channelName": "ticker"}
            await self.send(conn, {**channel, **base, "status": status})

    def _channel(self, pair: str) -> int:
        return CHANNEL_ID0 + self.pairs.index(pair)

    def push(self, conn: Conn, ticker: Ticker) -> Json:
        """The REST fields, except that WS v1 sends `o` as [today, 24h] and whole-lot volumes as ints."""
        fields = _rest_fields(ticker)
        fields["a"][1] = max(1, round(ticker.ask_size))
        fields["b"][1] = max(1, round(ticker.bid_size))
        fields["o"] = [fields["o"], fields["o"]]
        return [self._channel(ticker.pair), fields, "ticker", wsname(ticker.pair)]

    def idle_frame(self) -> Json:
        return {"event": "heartbeat"}


def _rest_fields(t: Ticker) -> dict[str, Any]:
    d = price_decimals(t.last) + 3  # Kraken pads: XBT/USD prices print as 30300.10000
    vwap, trades = fixed(t.vwap, d), t.seq % 100_000
    return {
        "a": [fixed(t.ask, d), str(max(1, round(t.ask_size))), fixed(t.ask_size, 3)],
        "b": [fixed(t.bid, d), str(max(1, round(t.bid_size))), fixed(t.bid_size, 3)],
        "c": [fixed(t.last, d), fixed(t.last_size, 8)],
        "v": [fixed(t.volume, 8), fixed(t.volume, 8)],
        "p": [vwap, vwap],
        "t": [trades, trades],
        "l": [fixed(t.low, d), fixed(t.low, d)],
        "h": [fixed(t.high, d), fixed(t.high, d)],
        "o": fixed(t.open, d),
    }
