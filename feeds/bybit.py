"""Bybit v5: REST /v5/market/tickers?category=spot, every spot symbol in one answer; a perp source
(`product = "perp"`) asks `category=linear` (USDT perpetuals), whose tickers carry the same fields.

Symbols are BTCUSDT. Prices are decimal strings ("" when a side is empty). The tickers carry no
time of their own; the envelope's `time` (ms) is when Bybit answered, the closest venue time there is.
"""

from __future__ import annotations

from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, arr, get, obj, optional_price, seconds
from feeds.errors import VenueRejected


class Bybit(Adapter):
    kind = "bybit"
    rest_url = "https://api.bybit.com"
    perp_rest_url = rest_url

    @staticmethod
    def venue_symbol(pair: str) -> str:
        return pair.replace("-", "")

    def requests(self) -> list[Request]:
        url = f"{self.base_url}/v5/market/tickers"
        category = "linear" if self.product == "perp" else "spot"
        return [Request(url, [("category", category)], pairs=tuple(self.refs))]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        body = obj(doc, "frame")
        if get(body, "retCode") != 0:
            raise VenueRejected(f"Bybit {body.get('retCode')}: {body.get('retMsg')!r}")
        venue_ts = seconds(get(body, "time"), "time", scale=1000)
        rows = arr(get(obj(get(body, "result"), "result"), "list"), "list")
        # The answer lists every spot symbol: the ones this source does not serve are skipped.
        ours = [row for row in rows if isinstance(row, dict) and row.get("symbol") in self.symbols]
        return self.resolve(ours, lambda row: self._row(row, venue_ts))

    def _row(self, row: Any, venue_ts: float) -> Row:
        pair = self.symbols.pair(get(row, "symbol"))
        with about(pair):
            return self.book(
                pair,
                bid=optional_price(row, "bid1Price"),
                ask=optional_price(row, "ask1Price"),
                last=optional_price(row, "lastPrice"),
                venue_ts=venue_ts,
            )
