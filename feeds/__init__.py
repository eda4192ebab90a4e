"""Feed adapters: the shared transport, one adapter per venue, the runner and the recorder.

feeds.transport    RestPoller and WsClient over one aiohttp session, RedisHashPoller, yielding raw Frames
feeds.adapter      the adapter protocol (Adapter, ParseResult, Request, SymbolMap) and parse helpers
feeds.<venue>      binance, coinbase, kraken, okx, bybit, bitstamp, pyth, chainlink, http_json,
                   redis_hash
feeds.registry     kind → adapter class
feeds.runner       FeedRunner: one supervised task per source, quotes to a callback
feeds.record       record() and run_record(): quotes to a ticks file
feeds.errors       the exception tree, each error carrying its metrics code

The package exports the parsing side only; the runner and the recorder, which bring aiohttp, are
imported from their modules (a replay checks rows with feeds.adapter and loads no aiohttp).
"""

from feeds.adapter import Adapter, PairError, ParseResult, Request
from feeds.errors import FeedError, ParseError, TransportError
from feeds.registry import ADAPTERS, adapter_class

__all__ = [
    "ADAPTERS",
    "Adapter",
    "FeedError",
    "PairError",
    "ParseError",
    "ParseResult",
    "Request",
    "TransportError",
    "adapter_class",
]
