"""The adapter protocol: what a venue declares, and the pure parsing helpers every venue shares.

A venue is a small class: its default endpoints, how it names pairs, the requests (REST) or the
subscription messages (WebSocket) for the pairs one source serves, and a pure `parse`. It never
opens a socket and never reads a clock: `feeds.transport` brings the bytes and their receive time.

`parse(body, received_ts, pairs)` always returns a `ParseResult`: the quotes it could resolve and
one `PairError` per pair (or per frame) it could not. `pairs` is the request's own pairs, for
venues whose REST answer does not name its symbol (Coinbase, Bitstamp, Chainlink).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from feeds.errors import BadPrice, DecodeError, ParseError, SchemaError, StaleVenueTime, UnknownPair
from oracle.models import Quote
from oracle.settings import SourceRef

__all__ = [
    "Adapter",
    "PairError",
    "ParseResult",
    "Request",
    "SymbolMap",
]

Transport = Literal["rest", "ws"]


@dataclass(frozen=True, slots=True)
class Request:
    """One REST call; a POST when `json` is set. `pairs` travel with the answer to the parser."""

    url: str
    params: Sequence[tuple[str, str]] = ()
    json: Any = None
    pairs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PairError:
    code: str
    pair: str | None = None  # None: the whole frame failed
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ParseResult:
    quotes: tuple[Quote, ...] = ()
    errors: tuple[PairError, ...] = ()


class SymbolMap:
    """Canonical pair ↔ venue symbol, for the pairs one source serves.

    `to_venue` names a pair the way requests do; `aliases` adds the other spellings the venue may
    answer with (Kraken asks for XBTUSD and answers XXBTZUSD).
    """

    def __init__(
        self,
        pairs: Iterable[str],
        to_venue: Callable[[str], str],
        aliases: Callable[[str], Iterable[str]] = lambda _: (),
    ) -> None:
        self._venue = {p: to_venue(p) for p in pairs}
        self._pair = {a: p for p, v in self._venue.items() for a in (v, *aliases(p))}

    def venue(self, pair: str) -> str:
        return self._venue[pair]

    def pair(self, symbol: object) -> str:
        if not isinstance(symbol, str):
            raise SchemaError(f"symbol is {type(symbol).__name__}, not a string")
        try:
            return self._pair[symbol]
        except KeyError:
            raise UnknownPair(f"{symbol!r} is not a pair of this source") from None

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and symbol in self._pair


def split_pair(pair: str) -> tuple[str, str]:
    base, quote = pair.split("-")
    return base, quote


class Adapter:
    """Base of every venue. Subclasses set the class attributes and implement `parse_doc`."""

    kind: ClassVar[str]
    rest_url: ClassVar[str]
    ws_url: ClassVar[str | None] = None  # None: the venue has no WebSocket adapter
    ws_heartbeat_s: ClassVar[float | None] = 15.0  # WebSocket protocol pings (aiohttp heartbeat)
    ws_ping: ClassVar[str | None] = None  # an application-level ping text, for venues that want one
    ws_pong: ClassVar[str | None] = None  # the venue's answer to it (not JSON, never parsed)
    ws_ping_s: ClassVar[float] = 20.0

    def __init__(
        self,
        source: str,
        refs: Sequence[SourceRef],
        base_url: str | None = None,
        transport: Transport = "rest",
    ) -> None:
        if transport == "ws" and self.ws_url is None:
            raise ValueError(f"{self.kind} has no WebSocket transport")
        self.source = source
        self.refs: dict[str, SourceRef] = {}
        for ref in refs:
            self.refs.setdefault(ref.pair, ref)
        self.transport = transport
        default = self.ws_url if transport == "ws" else self.rest_url
        self.base_url = (base_url or default or "").rstrip("/")
        if not self.base_url:
            raise ValueError(f"{self.kind} has no default endpoint: set base_url")
        self.symbols = SymbolMap(self.refs, self.venue_symbol, self.venue_aliases)

    # --- what a venue declares ---
    def venue_symbol(self, pair: str) -> str:
        """How requests name a pair; a method, not a static one, for venues that read it from the
        pair's SourceRef (Pyth's feed id). `self.refs` is set when the SymbolMap is built."""
        return pair

    @staticmethod
    def venue_aliases(pair: str) -> Iterable[str]:
        return ()

    def requests(self) -> list[Request]:
        """The REST calls of one poll."""
        raise NotImplementedError

    def ws_endpoint(self) -> str:
        return self.base_url

    def subscriptions(self) -> list[str]:
        """Text messages sent after each (re)connect."""
        return []

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        raise NotImplementedError

    # --- the pure parser ---
    def parse(self, body: str | bytes, received_ts: float, pairs: tuple[str, ...] = ()) -> ParseResult:
        """Decode one frame; never raises a ParseError, reports it instead."""
        try:
            result = self.parse_doc(decode(body), received_ts, pairs)
        except ParseError as exc:
            return ParseResult(errors=(PairError(exc.code, exc.pair, str(exc)),))
        return _missing_as_unknown(result, pairs)

    def resolve(self, items: Iterable[Any], one: Callable[[Any], Quote | None]) -> ParseResult:
        """Run `one` on each entry of a frame, keeping each entry's failure to itself."""
        quotes: list[Quote] = []
        errors: list[PairError] = []
        for item in items:
            try:
                quote = one(item)
            except ParseError as exc:
                errors.append(PairError(exc.code, exc.pair, str(exc)))
            else:
                if quote is not None:
                    quotes.append(quote)
        return ParseResult(tuple(quotes), tuple(errors))

    def book(
        self,
        pair: str,
        received_ts: float,
        *,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        venue_ts: float | None = None,
        confidence: float | None = None,
    ) -> Quote:
        """A checked Quote: positive finite prices, an uncrossed book, a fresh enough venue time."""
        for name, value in (("bid", bid), ("ask", ask), ("last", last)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadPrice(f"{name} is {value}", pair)
        if bid is not None and ask is not None and bid > ask:
            raise BadPrice(f"crossed book: bid {bid} > ask {ask}", pair)
        if bid is None or ask is None:
            bid = ask = None  # a one-sided book is no book: the price is the last trade
            if last is None:
                raise SchemaError("neither a two-sided book nor a last price", pair)
        heartbeat = self.refs[pair].heartbeat_s
        if heartbeat is not None and venue_ts is not None and received_ts - venue_ts > heartbeat:
            raise StaleVenueTime(f"venue time {venue_ts} is older than {heartbeat}s", pair)
        return Quote.from_book(
            self.source,
            pair,
            received_ts,
            bid=bid,
            ask=ask,
            last=last,
            venue_ts=venue_ts,
            confidence=confidence,
        )


def _missing_as_unknown(result: ParseResult, pairs: tuple[str, ...]) -> ParseResult:
    """A pair we asked for that the answer never mentions is one the venue does not know."""
    if not pairs or any(e.pair is None for e in result.errors):
        return result
    seen = {q.pair for q in result.quotes} | {e.pair for e in result.errors}
    missing = tuple(PairError("unknown_pair", p, "absent from the answer") for p in pairs if p not in seen)
    return ParseResult(result.quotes, result.errors + missing) if missing else result


# --- helpers for parse_doc: each raises a typed ParseError, never KeyError/TypeError ---


def decode(body: str | bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DecodeError(f"not JSON: {exc}") from None


def obj(value: Any, what: str = "value") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"{what} is {type(value).__name__}, not an object")
    return value


def arr(value: Any, what: str = "value") -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(f"{what} is {type(value).__name__}, not a list")
    return value


def get(container: Any, key: str | int) -> Any:
    """container[key] for an object or a list, or SchemaError."""
    if type(container) is dict and type(key) is str:  # what json.loads gives: skip the ABC checks
        if key in container:
            return container[key]
    elif isinstance(key, int) and isinstance(container, list):
        if -len(container) <= key < len(container):
            return container[key]
    elif isinstance(container, Mapping) and key in container:
        return container[key]
    raise SchemaError(f"missing field {key!r}")


def text(container: Any, key: str | int) -> str:
    value = get(container, key)
    if not isinstance(value, str):
        raise SchemaError(f"{key!r} is {type(value).__name__}, not a string")
    return value


def number(value: Any, what: str = "value") -> float:
    """A venue number, sent as a JSON number or a decimal string."""
    if type(value) is float:  # the common case, and already a float (NaN and inf are checked later)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SchemaError(f"{what} is {type(value).__name__}, not a number")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise SchemaError(f"{what} is {value!r}, not a number") from None


def price(container: Any, key: str | int) -> float:
    return number(get(container, key), str(key))


def optional_price(container: Any, key: str | int) -> float | None:
    """A price a venue may leave empty ("" or null) when that side of the book is empty."""
    value = get(container, key)
    return None if value in ("", None) else number(value, str(key))


def integer(value: Any, what: str = "value") -> int:
    """An integer sent as a JSON number or a decimal string (Pyth and Chainlink amounts)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SchemaError(f"{what} is {type(value).__name__}, not an integer")
    try:
        return int(value)
    except ValueError:  # also raised past Python's digit limit for int(str)
        raise SchemaError(f"{what} is {value!r}, not an integer") from None


def scaled(mantissa: int, exponent: int) -> float:
    """mantissa × 10^exponent, correctly rounded (int / int is), for decimals up to 10^±64."""
    if not -64 <= exponent <= 64:
        raise SchemaError(f"exponent {exponent} out of range")
    try:
        return mantissa / 10 ** (-exponent) if exponent < 0 else float(mantissa * 10**exponent)
    except OverflowError:
        raise BadPrice(f"{mantissa}e{exponent} overflows a float") from None


def seconds(value: Any, what: str = "timestamp", *, scale: float = 1.0) -> float:
    """A Unix timestamp sent as seconds (scale 1) or milliseconds (scale 1000)."""
    ts = number(value, what) / scale
    if not math.isfinite(ts):
        raise SchemaError(f"{what} is {value!r}")
    return ts


def iso_seconds(value: Any, what: str = "time") -> float:
    """An ISO 8601 UTC time such as 2021-04-17T16:43:30.244075Z (nanoseconds cut to micro: Python
    3.11's fromisoformat truncates a longer fraction itself)."""
    if not isinstance(value, str):
        raise SchemaError(f"{what} is {type(value).__name__}, not a string")
    try:
        stamp = datetime.fromisoformat(value)
        if stamp.tzinfo is None:
            raise SchemaError(f"{what} {value!r} has no time zone")
        return stamp.timestamp()
    except (ValueError, OverflowError):  # not ISO, or a year out of range once moved to UTC
        raise SchemaError(f"{what} is {value!r}, not an ISO time") from None


class about:
    """Attach `pair` to a ParseError raised inside, so the error is counted against it. A class, not
    a @contextmanager generator: it wraps every quote of every frame, and this is several times cheaper."""

    __slots__ = ("pair",)

    def __init__(self, pair: str) -> None:
        self.pair = pair

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ParseError):  # the error goes on, now naming its pair
            exc.pair = exc.pair or self.pair
