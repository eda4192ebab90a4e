"""OKX v5: REST /api/v5/market/ticker?instId=..., WebSocket public `tickers` channel.

Instrument ids are canonical for spot (BTC-USDT); a perp source (`product = "perp"`) reads the
pair's swap, `BTC-USDT-SWAP`, from the same endpoints (REST ticker, WS `tickers`). Both forms carry
the same ticker object, prices as decimal strings ("" when a side is empty) and `ts` as a
millisecond string. OKX drops a connection silent for 30 s, so the client sends the text "ping"
and the venue answers "pong".
"""

from __future__ import annotations

import json
from typing import Any

from feeds.adapter import (
    Adapter,
    ParseResult,
    Request,
    Row,
    about,
    arr,
    get,
    obj,
    optional_price,
    seconds,
)
from feeds.errors import UnknownPair, VenueRejected

# OKX codes for "no such instrument": REST 51001, WebSocket 60018.
_UNKNOWN_INSTRUMENT = frozenset({"51001", "60018"})


def _refusal(body: Any) -> UnknownPair | VenueRejected:
    code = str(body.get("code"))
    error = UnknownPair if code in _UNKNOWN_INSTRUMENT else VenueRejected
    return error(f"OKX {code}: {body.get('msg')!r}")


class Okx(Adapter):
    kind = "okx"
    rest_url = "https://www.okx.com"
    ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    ws_heartbeat_s = None
    ws_ping = "ping"
    ws_pong = "pong"
    ws_ping_s = 20.0
    perp_rest_url = rest_url
    perp_ws_url = ws_url

    def venue_symbol(self, pair: str) -> str:
        return f"{pair}-SWAP" if self.product == "perp" else pair

    def requests(self) -> list[Request]:
        url = f"{self.base_url}/api/v5/market/ticker"
        return [Request(url, [("instId", self.symbols.venue(p))], pairs=(p,)) for p in self.refs]

    def subscriptions(self) -> list[str]:
        args = [{"channel": "tickers", "instId": self.symbols.venue(p)} for p in self.refs]
        return [json.dumps({"op": "subscribe", "args": args})]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        body = obj(doc, "frame")
        if "event" in body:
            return self._event(body)
        if body.get("code", "0") != "0":  # REST: an HTTP 200 that refuses the request
            raise _refusal(body)
        rows = arr(get(body, "data"), "data")
        return self.resolve(rows, lambda row: self._row(row))

    def _event(self, body: Any) -> ParseResult:
        if body.get("event") == "error":
            raise _refusal(body)
        return ParseResult()  # subscribe acknowledgements

    def _row(self, row: Any) -> Row:
        row = obj(row, "ticker")
        pair = self.symbols.pair(get(row, "instId"))
        with about(pair):
            return self.book(
                pair,
                bid=optional_price(row, "bidPx"),
                ask=optional_price(row, "askPx"),
                last=optional_price(row, "last"),
                venue_ts=seconds(get(row, "ts"), "ts", scale=1000),
            )
