"""Binance spot: REST /api/v3/ticker/bookTicker (batched), WebSocket combined <symbol>@bookTicker streams.
USD-M futures (`product = "perp"`): REST /fapi/v1/ticker/bookTicker?symbol=X, the same streams on fstream.

Prices are decimal strings. The spot forms carry no venue timestamp (the spot bookTicker stream has
no event time), so `venue_ts` stays None; the futures ones carry the transaction time in ms (`time`
on REST, `T` on the stream). The futures REST ticker takes one symbol (or none: every symbol, at a
higher request weight), so a perp source polls one request per pair.

The batched spot answer (a thousand pairs in one list) is decoded straight into typed rows by
msgspec, which turns the decimal strings into floats in C; any row that is not a plain, valid,
uncrossed book of a known pair sends the whole frame down the general path, so a malformed answer
is reported exactly as before.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np

from feeds.adapter import (
    Adapter,
    ParseResult,
    QuoteBatch,
    Request,
    Row,
    about,
    book_price,
    get,
    obj,
    optional_price,
    row_problems,
    seconds,
)


class _BookTicker(msgspec.Struct):
    """One row of the spot REST bookTicker list, the only form the fast path takes. A key of another
    form (the stream's `s`, the price ticker's `price`, the futures' `time`) fails the decode."""

    symbol: str
    bidPrice: float  # strict=False: msgspec reads "4.00000200" as a float, correctly rounded
    askPrice: float
    s: msgspec.UnsetType = msgspec.UNSET
    price: msgspec.UnsetType = msgspec.UNSET
    time: msgspec.UnsetType = msgspec.UNSET


_TICKERS = msgspec.json.Decoder(list[_BookTicker], strict=False)


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

    def parse(self, body: str | bytes, received_ts: float, pairs: tuple[str, ...] = ()) -> ParseResult:
        fast = self._parse_book_list(body, received_ts, pairs) if body[:1] in (b"[", "[") else None
        return fast if fast is not None else super().parse(body, received_ts, pairs)

    def _parse_book_list(self, body: str | bytes, received_ts: float, pairs: tuple[str, ...]) -> ParseResult | None:
        """The batched spot answer as columns, or None for anything the general path must judge: a
        row of another form, an empty side, a price that is not positive and finite, an unknown or
        missing pair, a crossed book. msgspec accepts a subset of what float() does (no spaces, no
        underscores) and rounds the same, so a frame it takes parses as the general path would."""
        try:
            rows = _TICKERS.decode(body)
        except msgspec.DecodeError:  # ValidationError is one too
            return None
        known = self.symbols.known
        if not rows or self.has_heartbeat() or any(r.symbol not in known for r in rows):
            return None
        names = tuple(known[r.symbol] for r in rows)
        if pairs and not set(pairs) <= set(names):  # a missing pair is reported by the general path
            return None
        bid = np.array([r.bidPrice for r in rows])
        ask = np.array([r.askPrice for r in rows])
        if not ((bid > 0) & (ask > 0) & (bid < math.inf) & (ask < math.inf)).all():
            return None
        venue_ts, confidence, last = (np.full(len(rows), math.nan) for _ in range(3))  # the spot form has none
        if row_problems(bid, ask, last, venue_ts, received_ts, math.nan).any():
            return None
        price, bid, ask = book_price(bid, ask, last)
        batch = QuoteBatch(self.source, received_ts, names, price, bid, ask, venue_ts, confidence, last)
        return ParseResult(batch=batch)

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
