"""Coinbase Exchange: REST /products/{id}/ticker, WebSocket `ticker` channel.

Product ids are already canonical (BTC-USD). The REST ticker does not name its product, so the
request's pair travels with the answer. Times are ISO 8601 strings; prices decimal strings.
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
    get,
    iso_seconds,
    obj,
    optional_price,
    text,
)
from feeds.errors import VenueRejected


class Coinbase(Adapter):
    kind = "coinbase"
    rest_url = "https://api.exchange.coinbase.com"
    ws_url = "wss://ws-feed.exchange.coinbase.com"

    def requests(self) -> list[Request]:
        return [Request(f"{self.base_url}/products/{self.symbols.venue(p)}/ticker", pairs=(p,)) for p in self.refs]

    def subscriptions(self) -> list[str]:
        # The heartbeat channel keeps a quiet product's connection talking, so silence means trouble.
        products = [self.symbols.venue(p) for p in self.refs]
        return [json.dumps({"type": "subscribe", "product_ids": products, "channels": ["ticker", "heartbeat"]})]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        body = obj(doc, "frame")
        if self.transport == "rest":
            (pair,) = pairs
            return self.resolve([body], lambda row: self._quote(pair, row, "bid", "ask"))
        kind = text(body, "type")
        if kind == "error":
            raise VenueRejected(f"venue error: {body.get('message')!r} {body.get('reason')!r}")
        if kind != "ticker":  # subscriptions, heartbeat: nothing to quote
            return ParseResult()
        pair = self.symbols.pair(get(body, "product_id"))
        return self.resolve([body], lambda row: self._quote(pair, row, "best_bid", "best_ask"))

    def _quote(self, pair: str, row: Any, bid_key: str, ask_key: str) -> Row:
        with about(pair):
            return self.book(
                pair,
                bid=optional_price(row, bid_key),
                ask=optional_price(row, ask_key),
                last=optional_price(row, "price"),
                venue_ts=iso_seconds(get(row, "time")),
            )
