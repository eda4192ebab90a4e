"""The one exception tree of the feeds. Each class carries its `code`, the label of
markd_source_errors_total{source,code}.

    FeedError
    ├── TransportError            raised by feeds.transport, the only place aiohttp errors are mapped
    │   ├── FeedTimeout           timeout: no answer in timeout_ms, or a WebSocket gone silent
    │   ├── ConnectError          connect: refused, reset, or a WebSocket closed under us
    │   ├── TooLarge              too_large: a REST body or WebSocket message over max_body_bytes
    │   └── HttpError             http_4xx / http_5xx (also a venue's in-band refusal of a request)
    │       └── RateLimited       rate_limited, with the venue's Retry-After when it sent one
    └── ParseError                raised inside a pure parser, for one pair or for the whole frame
        ├── DecodeError           decode: not JSON (or not the venue's framing)
        ├── SchemaError           schema: a field we need is missing or of the wrong type
        ├── BadPrice              bad_price: non-finite, zero, negative, or a crossed book
        ├── UnknownPair           unknown_pair: a symbol we did not ask for, or one the venue lacks
        ├── VenueRejected         http_4xx: an HTTP 200 whose body refuses the request (Kraken's
        │                         `error`, OKX's `code`, Bybit's `retCode`, a JSON-RPC error)
        ├── StaleVenueTime        stale_venue_time: the venue's own timestamp is too old
        ├── FutureVenueTime       future_venue_time: the venue's own timestamp is too far ahead
        └── WrongType             wrong_type: a Redis key holds another type than a hash (WRONGTYPE)
"""

from __future__ import annotations

__all__ = [
    "BadPrice",
    "ConnectError",
    "DecodeError",
    "FeedError",
    "FeedTimeout",
    "FutureVenueTime",
    "HttpError",
    "ParseError",
    "RateLimited",
    "SchemaError",
    "StaleVenueTime",
    "TooLarge",
    "TransportError",
    "UnknownPair",
    "VenueRejected",
    "WrongType",
]


class FeedError(Exception):
    code: str  # a class default; HttpError's instances set their own from the status


class TransportError(FeedError):
    retry_after: float | None = None


class FeedTimeout(TransportError):
    code = "timeout"


class ConnectError(TransportError):
    code = "connect"


class TooLarge(TransportError):
    """A venue sent more than the source's `max_body_bytes` in one answer or one message: the
    connection is dropped before the rest is read, and the source backs off like any failure."""

    code = "too_large"


class HttpError(TransportError):
    code = "http_4xx"

    def __init__(self, status: int, detail: str = "") -> None:
        super().__init__(f"HTTP {status} {detail}".strip())
        self.status = status
        self.code = "http_5xx" if status >= 500 else "http_4xx"  # the status decides 4xx vs 5xx


class RateLimited(HttpError):
    def __init__(self, status: int = 429, retry_after: float | None = None) -> None:
        super().__init__(status, "rate limited")
        self.code = "rate_limited"
        self.retry_after = retry_after


class ParseError(FeedError):
    """A parser's complaint; `pair` is the canonical pair when known, None for the whole frame."""

    def __init__(self, detail: str = "", pair: str | None = None) -> None:
        super().__init__(detail)
        self.pair = pair


class DecodeError(ParseError):
    code = "decode"


class SchemaError(ParseError):
    code = "schema"


class BadPrice(ParseError):
    code = "bad_price"


class UnknownPair(ParseError):
    code = "unknown_pair"


class StaleVenueTime(ParseError):
    code = "stale_venue_time"


class FutureVenueTime(ParseError):
    """A venue time further ahead of our receive time than the source's heartbeat: a broken clock,
    and a hash stuck with it would look fresh until that time came."""

    code = "future_venue_time"


class WrongType(ParseError):
    """redis_hash: the key holds a string, list... where the engine's hash should be."""

    code = "wrong_type"


class VenueRejected(ParseError):
    code = "http_4xx"
