"""The operator's own matching engine, read from the Redis hash it writes: one hash per pair, at the
key its SourceRef names (`key`), with the fields `bid`, `ask`, `last` (decimal strings) and `ts_ms`
(when the engine last vouched for those values, Unix milliseconds).

    HSET book:BTC-PERP bid 29999.5 ask 30000.5 last 30000.1 ts_ms 1700000000123

base_url is the engine's Redis (redis://, rediss:// or unix://, with its own user and password:
never markd's publishing connection unless it is configured to the same URL). The source is polled:
`feeds.transport.RedisHashPoller` sends one pipelined HMGET of those four fields per key each
`poll_ms` and hands the answers on as one frame, a JSON list in the order of the frame's pairs,
each entry either the four values (null = field absent) or the text of the Redis error for that key.
This module is the pure parse of that list (README "The venue's own book from Redis" says why poll,
with the figures of bench/redis_hash.py).

Per pair: bid and ask are a book only together (one side alone is no book, as for every venue),
`last` alone is a price, `ts_ms` is required. Because every poll re-reads the hash, a hash the engine
stopped writing would look fresh forever: its `ts_ms` is held against the ref's `heartbeat_s` (older:
stale_venue_time, by the shared row checks; further ahead: future_venue_time, a broken clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feeds.adapter import Adapter, ParseResult, Product, Request, Row, Transport, about, arr, number, seconds
from feeds.errors import FutureVenueTime, SchemaError, UnknownPair, VenueRejected, WrongType
from oracle.connection import redact
from oracle.settings import SourceRef

__all__ = ["FIELDS", "RedisHash"]

FIELDS = ("bid", "ask", "last", "ts_ms")  # what the engine writes, in the order HMGET asks for them
SCHEMES = ("redis://", "rediss://", "unix://")


class RedisHash(Adapter):
    kind = "redis_hash"
    rest_url = ""  # no default: base_url must name the engine's Redis

    def __init__(
        self,
        source: str,
        refs: Sequence[SourceRef],
        base_url: str | None = None,
        transport: Transport = "rest",
        product: Product = "spot",
    ) -> None:
        super().__init__(source, refs, base_url, transport, product)
        missing = [ref.pair for ref in self.refs.values() if ref.key is None or ref.heartbeat_s is None]
        if missing:  # the config loader says so first, naming the key path
            raise ValueError(f"redis_hash needs key and heartbeat_s for {', '.join(missing)}")
        self.keys = {pair: str(ref.key) for pair, ref in self.refs.items()}
        self._ahead_s = {pair: float(ref.heartbeat_s or 0.0) for pair, ref in self.refs.items()}

    @classmethod
    def settings_problems(
        cls, transport: Transport, base_url: str | None, product: Product = "spot"
    ) -> list[tuple[str, str]]:
        if product == "perp":
            return [("product", "redis_hash reads the hash it is given; product does not apply")]
        if transport != "rest":
            return [("transport", "redis_hash is polled: leave transport at its default")]
        if not base_url:
            return [("base_url", "redis_hash needs base_url: the engine's Redis URL (redis://, rediss://, unix://)")]
        if not base_url.startswith(SCHEMES):
            return [("base_url", f"must start with redis://, rediss:// or unix:// (got {redact(base_url)})")]
        return []

    def requests(self) -> list[Request]:
        return []  # not HTTP: the runner polls it with a RedisHashPoller

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        replies = arr(doc, "the poll's answer")
        if len(replies) != len(pairs):
            raise SchemaError(f"{len(replies)} answers for {len(pairs)} keys")
        return self.resolve(zip(pairs, replies, strict=True), lambda item: self._row(item[0], item[1], received_ts))

    def _row(self, pair: str, reply: Any, received_ts: float) -> Row:
        key = self.keys[pair]
        with about(pair):
            if isinstance(reply, str):  # Redis refused the command for this key
                error = WrongType if reply.startswith("WRONGTYPE") else VenueRejected
                raise error(f"key {key!r}: {reply}")
            values = arr(reply, f"key {key!r}")
            if len(values) != len(FIELDS):
                raise SchemaError(f"key {key!r}: {len(values)} values for {len(FIELDS)} fields")
            if all(v is None for v in values):
                raise UnknownPair(f"key {key!r}: no such hash (or none of {', '.join(FIELDS)})")
            bid, ask, last, ts_ms = values
            if ts_ms is None:
                raise SchemaError(f"key {key!r}: field ts_ms missing")
            venue_ts = seconds(ts_ms, "ts_ms", scale=1000.0)
            ahead = venue_ts - received_ts
            if ahead > self._ahead_s[pair]:
                raise FutureVenueTime(f"key {key!r}: ts_ms is {ahead:.3f}s ahead of the receive time")
            return self.book(
                pair, bid=_price(bid, "bid"), ask=_price(ask, "ask"), last=_price(last, "last"), venue_ts=venue_ts
            )


def _price(value: str | None, field: str) -> float | None:
    """A field's decimal string; absent (None) stays absent, anything else must read as a number."""
    return None if value is None else number(value, field)
