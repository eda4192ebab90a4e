"""Feed adapters: the shared transport, one adapter per venue, the runner and the recorder.

feeds.transport    RestPoller and WsClient over one aiohttp session, RedisHashPoller, yielding raw Frames
feeds.adapter      the adapter protocol (Adapter, ParseResult, Request, SymbolMap) and parse helpers
feeds.<venue>      binance, coinbase, kraken, okx, bybit, bitstamp, pyth, chainlink, http_json,
                   redis_hash
feeds.registry     kind → adapter class
feeds.runner       FeedRunner: one supervised task per source, quotes to a callback
feeds.record       record() and run_record(): quotes to a ticks file
feeds.errors       the exception tree, each error carrying its metrics code
"""

import importlib
from typing import Any

from feeds.adapter import Adapter, PairError, ParseResult, Request
from feeds.errors import FeedError, ParseError, TransportError
from feeds.registry import ADAPTERS, adapter_class

# The I/O (aiohttp, Redis) is loaded when first asked for: a replay, which only uses the adapters'
# row checks, does not pay ~0.15 s of imports for it.
_IO = {"record": "feeds.record", "run_record": "feeds.record", "FeedRunner": "feeds.runner"}


def __getattr__(name: str) -> Any:
    if name in _IO:
        return getattr(importlib.import_module(_IO[name]), name)
    raise AttributeError(f"module 'feeds' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "FeedError",
    "FeedRunner",
    "PairError",
    "ParseError",
    "ParseResult",
    "Request",
    "TransportError",
    "adapter_class",
    "record",
    "run_record",
]
