"""Binance spot: REST /api/v3/ticker/bookTicker (batched), WebSocket combined <symbol>@bookTicker streams.
USD-M futures (`product = "perp"`): REST /fapi/v1/ticker/bookTicker?symbol=X, the same streams on fstream.

Prices are decimal strings. The spot forms carry no venue timestamp (the spot bookTicker stream has
no event time), so `venue_ts` stays None; the futures ones carry the transaction time in ms (`time`
on REST, `T` on the stream). The futures REST ticker takes one symbol (or none: every symbol, at a
higher request weight), so a perp source polls one request per pair.
"""

from __future__ import annotations

import json
from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, get, obj, optional_price, seconds


class Binance(Adapter):
    kind = "binance"
    rest_url = "https://api.binance.com"
    ws_url = "wss://stream.binance.com:9443"
    perp_rest_url = "https://fapi.binance.com"
    perp_ws_url = "wss://fstream.binance.com"

    @staticmethod
    def venue_symbol(pair: str) -> str:
        return pair.replace("-", "")

    def requests(self) -> list[Request]:
        if self.product == "perp":
            url = f"{self.base_url}/fapi/v1/ticker/bookTicker"
            return [Request(url, [("symbol", self.symbols.venue(p))], pairs=(p,)) for p in self.refs]
        symbols = json.dumps([self.symbols.venue(p) for p in self.refs], separators=(",", ":"))
        url = f"{self.base_url}/api/v3/ticker/bookTicker"
        return [Request(url, [("symbols", symbols)], pairs=tuple(self.refs))]

    def ws_endpoint(self) -> str:
        # Combined streams are subscribed by URL: there is no message to send after connecting.
        streams = "/".join(f"{self.symbols.venue(p).lower()}@bookTicker" for p in self.refs)
        return f"{self.base_url}/stream?streams={streams}"

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        if isinstance(doc, list):  # REST, several symbols
            rows = doc
        else:
            body = obj(doc, "frame")
            rows = [get(body, "data") if "stream" in body else body]  # a combined-stream wrapper, or one row
        return self.resolve(rows, lambda row: self._row(row))

    def _row(self, row: Any) -> Row:
        row = obj(row, "ticker")
        ws = "s" in row  # the stream abbreviates the REST field names
        pair = self.symbols.pair(get(row, "s" if ws else "symbol"))
        with about(pair):
            if not ws and "price" in row:  # /api/v3/ticker/price: a last price only
                return self.book(pair, last=optional_price(row, "price"))
            bid = optional_price(row, "b" if ws else "bidPrice")
            ask = optional_price(row, "a" if ws else "askPrice")
            time_key = "T" if ws else "time"  # futures only: the transaction time
            venue_ts = seconds(row[time_key], time_key, scale=1000) if time_key in row else None
            return self.book(pair, bid=bid, ask=ask, venue_ts=venue_ts)
