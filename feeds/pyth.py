"""Pyth via Hermes: REST /v2/updates/price/latest?ids[]=...&parsed=true.

Feed ids come from SourceRef.id (with or without 0x; Hermes answers without). A price is an integer
mantissa string with an exponent: price × 10^expo, and `conf` × 10^expo is the venue's own
uncertainty, kept as Quote.confidence. `publish_time` (Unix seconds) is the venue time. The legacy
/api/latest_price_feeds answer (a bare list of the same objects) parses too.
"""

from __future__ import annotations

from typing import Any

from feeds.adapter import (
    Adapter,
    ParseResult,
    Request,
    Row,
    about,
    arr,
    get,
    integer,
    obj,
    scaled,
    seconds,
    text,
)


def _feed_id(value: str) -> str:
    """A feed id as Hermes answers it: lower-case hex without 0x."""
    return value.lower().removeprefix("0x")


class Pyth(Adapter):
    kind = "pyth"
    rest_url = "https://hermes.pyth.network"

    def venue_symbol(self, pair: str) -> str:
        # A Pyth pair's venue symbol is its feed id (the base class builds the SymbolMap from it).
        return _feed_id(self.refs[pair].id or "")

    def requests(self) -> list[Request]:
        params = [("ids[]", self.symbols.venue(p)) for p in self.refs] + [("parsed", "true")]
        return [Request(f"{self.base_url}/v2/updates/price/latest", params, pairs=tuple(self.refs))]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        feeds = doc if isinstance(doc, list) else get(obj(doc, "frame"), "parsed")
        return self.resolve(arr(feeds, "parsed"), lambda feed: self._feed(feed))

    def _feed(self, feed: Any) -> Row:
        pair = self.symbols.pair(_feed_id(text(obj(feed, "feed"), "id")))
        with about(pair):
            block = obj(get(feed, "price"), "price")
            expo = integer(get(block, "expo"), "expo")
            return self.book(
                pair,
                last=scaled(integer(get(block, "price"), "price"), expo),
                confidence=scaled(integer(get(block, "conf"), "conf"), expo),
                venue_ts=seconds(get(block, "publish_time"), "publish_time"),
            )
