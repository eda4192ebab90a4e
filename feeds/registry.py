"""`kind` (SourceSettings.kind) → adapter class. Adding a venue is one file and one line here."""

from __future__ import annotations

from feeds.adapter import Adapter
from feeds.binance import Binance
from feeds.bitstamp import Bitstamp
from feeds.bybit import Bybit
from feeds.chainlink import Chainlink
from feeds.coinbase import Coinbase
from feeds.http_json import HttpJson
from feeds.kraken import Kraken
from feeds.okx import Okx
from feeds.pyth import Pyth
from feeds.redis_hash import RedisHash

__all__ = ["ADAPTERS", "adapter_class"]

ADAPTERS: dict[str, type[Adapter]] = {
    cls.kind: cls for cls in (Binance, Coinbase, Kraken, Okx, Bybit, Bitstamp, Pyth, Chainlink, HttpJson, RedisHash)
}


def adapter_class(kind: str) -> type[Adapter]:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ValueError(f"unknown source kind {kind!r}") from None
