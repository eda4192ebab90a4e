"""Bitstamp: REST /api/v2/ticker/{pair}/ with pairs spelt btcusd.

The answer does not name its pair (only the all-tickers form does), so the request's pair travels
with it. Every value is a string, the timestamp too (Unix seconds).
"""

from __future__ import annotations

from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, get, obj, optional_price, seconds


class Bitstamp(Adapter):
    kind = "bitstamp"
    rest_url = "https://www.bitstamp.net"

    @staticmethod
    def venue_symbol(pair: str) -> str:
        return pair.replace("-", "").lower()

    def requests(self) -> list[Request]:
        return [Request(f"{self.base_url}/api/v2/ticker/{self.symbols.venue(p)}/", pairs=(p,)) for p in self.refs]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        (pair,) = pairs
        return self.resolve([doc], lambda row: self._row(pair, row))

    def _row(self, pair: str, row: Any) -> Row:
        with about(pair):
            row = obj(row, "ticker")
            return self.book(
                pair,
                bid=optional_price(row, "bid"),
                ask=optional_price(row, "ask"),
                last=optional_price(row, "last"),
                venue_ts=seconds(get(row, "timestamp")),
            )
