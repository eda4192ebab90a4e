"""Kraken: REST /0/public/Ticker?pair=..., WebSocket v1 `ticker` ([channelID, {a,b,c,...}, "ticker", pair]).

Kraken names BTC as XBT (and DOGE as XDG). It is asked for XBTUSD, streams XBT/USD, and answers
REST with its legacy asset codes, XXBTZUSD, so every spelling maps back. `a`/`b` are
[price, whole lot volume, lot volume] and `c` is [price, lot volume]; nothing carries a venue
timestamp. In-band errors arrive as HTTP 200 with a non-empty `error` list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, arr, get, obj, price, split_pair
from feeds.errors import UnknownPair, VenueRejected

# Kraken's asset table, the one place it lives: the simulated Kraken (oracle/sim/venues/kraken.py)
# names pairs from it too. ASSET_CODES maps markd's code to Kraken's where they differ.
ASSET_CODES = {"BTC": "XBT", "DOGE": "XDG"}
# Assets whose legacy code carries an X (crypto) or Z (fiat) prefix in REST result keys.
LEGACY_CRYPTO = frozenset({"XBT", "ETH", "LTC", "XMR", "XRP", "XLM", "ZEC", "ETC", "REP", "MLN", "XDG"})
LEGACY_FIAT = frozenset({"USD", "EUR", "GBP", "JPY", "CAD", "CHF", "AUD"})


def kraken_asset(code: str) -> str:
    """markd's asset code as Kraken spells it (`BTC` -> `XBT`)."""
    return ASSET_CODES.get(code, code)


def legacy_asset(asset: str) -> str:
    """A Kraken asset's legacy code in REST result keys (`XBT` -> `XXBT`, `USD` -> `ZUSD`)."""
    return f"X{asset}" if asset in LEGACY_CRYPTO else f"Z{asset}" if asset in LEGACY_FIAT else asset


def _assets(pair: str) -> tuple[str, str]:
    base, quote = split_pair(pair)
    return kraken_asset(base), kraken_asset(quote)


class Kraken(Adapter):
    kind = "kraken"
    rest_url = "https://api.kraken.com"
    ws_url = "wss://ws.kraken.com"

    @staticmethod
    def venue_symbol(pair: str) -> str:
        return "".join(_assets(pair))

    @staticmethod
    def venue_aliases(pair: str) -> Iterable[str]:
        base, quote = _assets(pair)
        return {f"{base}/{quote}", legacy_asset(base) + legacy_asset(quote), base + legacy_asset(quote)}

    def ws_symbol(self, pair: str) -> str:
        return "/".join(_assets(pair))

    def requests(self) -> list[Request]:
        symbols = ",".join(self.symbols.venue(p) for p in self.refs)
        return [Request(f"{self.base_url}/0/public/Ticker", [("pair", symbols)], pairs=tuple(self.refs))]

    def subscriptions(self) -> list[str]:
        pairs = [self.ws_symbol(p) for p in self.refs]
        return [json.dumps({"event": "subscribe", "pair": pairs, "subscription": {"name": "ticker"}})]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        if isinstance(doc, list):
            return self._ws_ticker(doc)
        body = obj(doc, "frame")
        if "event" in body:
            return self._ws_event(body)
        errors = arr(get(body, "error"), "error")
        if errors:
            unknown = any("Unknown asset pair" in str(e) for e in errors)
            raise (UnknownPair(str(errors)) if unknown else VenueRejected(str(errors)))
        result = obj(get(body, "result"), "result")
        return self.resolve(result.items(), lambda item: self._row(item))

    def _ws_ticker(self, msg: list[Any]) -> ParseResult:
        if len(msg) != 4 or get(msg, 2) != "ticker":
            return ParseResult()  # another channel's message
        return self.resolve([(get(msg, 3), get(msg, 1))], lambda item: self._row(item))

    def _ws_event(self, body: Any) -> ParseResult:
        # heartbeat, systemStatus and successful subscriptions need nothing; a refused pair does.
        if body.get("event") == "subscriptionStatus" and body.get("status") == "error":
            symbol = body.get("pair")
            pair = self.symbols.pair(symbol) if symbol in self.symbols else None
            raise UnknownPair(str(body.get("errorMessage")), pair)
        return ParseResult()

    def _row(self, item: tuple[Any, Any]) -> Row:
        symbol, row = item
        pair = self.symbols.pair(symbol)
        with about(pair):
            row = obj(row, "ticker")
            return self.book(
                pair,
                bid=price(get(row, "b"), 0),
                ask=price(get(row, "a"), 0),
                last=price(get(row, "c"), 0),
            )
