"""The adapter protocol: what a venue declares, and the pure parsing helpers every venue shares.

A venue is a small class: its default endpoints, how it names pairs, the requests (REST) or the
subscription messages (WebSocket) for the pairs one source serves, and a pure `parse`. It never
opens a socket and never reads a clock: `feeds.transport` brings the bytes and their receive time.

`parse(body, received_ts, pairs)` always returns a `ParseResult`: the frame's quotes as one
`QuoteBatch` of columns (what the QuoteBook takes in one write) and one `PairError` per pair (or
per frame) it could not resolve. `pairs` is the request's own pairs, for venues whose REST answer
does not name its symbol (Coinbase, Bitstamp, Chainlink).

A venue's `parse_doc` only reads values: `book()` gives one row per pair and refuses a price that is
not positive and finite. The checks on a row as a whole (a crossed book, a book with no price, a
venue time older than the source's `heartbeat_s`) run once per frame over arrays, in `check_rows`,
which the replay harness runs over its ticks too. `Quote` objects are built only where a person
reads them (`QuoteBatch.quotes()`: `markd record`, logs, tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec
import numpy as np

from feeds.errors import BadPrice, DecodeError, ParseError, SchemaError, StaleVenueTime, UnknownPair
from oracle.models import Quote
from oracle.settings import SourceRef

__all__ = [
    "Adapter",
    "PairError",
    "ParseError",
    "ParseResult",
    "QuoteBatch",
    "Request",
    "Row",
    "SymbolMap",
    "check_rows",
]

Transport = Literal["rest", "ws"]
Product = Literal["spot", "perp"]


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


# One pair's values as a venue gave them: (pair, bid, ask, last, venue_ts, confidence), None = absent.
Row = tuple[str, float | None, float | None, float | None, float | None, float | None]


@dataclass(frozen=True, slots=True, eq=False)
class QuoteBatch:
    """A frame's checked quotes as columns, NaN = absent; every row shares the frame's receive time.

    `price` is the mid where the row has a two-sided book, else its last trade; a one-sided book's
    bid and ask are NaN (a one-sided book is no book)."""

    source: str
    received_ts: float
    pair: tuple[str, ...]
    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    venue_ts: np.ndarray
    confidence: np.ndarray
    last: np.ndarray  # the last trade where the venue gave one (the perp mark's book reads it)

    def __len__(self) -> int:
        return len(self.pair)

    def quotes(self) -> tuple[Quote, ...]:
        """The rows as Quote objects, for whoever reads them one by one (record, logs, tests)."""
        cols = (self.price, self.bid, self.ask, self.venue_ts, self.confidence, self.last)
        return tuple(
            Quote(self.source, pair, p, self.received_ts, _opt(b), _opt(a), _opt(v), _opt(c), _opt(t))
            for pair, p, b, a, v, c, t in zip(self.pair, *(c.tolist() for c in cols), strict=True)
        )

    @staticmethod
    def of(quotes: Sequence[Quote]) -> list[QuoteBatch]:
        """Quote objects as batches, one per (source, receive time): for tests and one-off quotes."""
        groups: dict[tuple[str, float], list[Quote]] = {}
        for q in quotes:
            groups.setdefault((q.source, q.received_ts), []).append(q)
        out = []
        for (source, ts), qs in groups.items():
            fields = ("price", "bid", "ask", "venue_ts", "confidence", "last")
            cols = [np.array([_num(getattr(q, f)) for q in qs]) for f in fields]
            out.append(QuoteBatch(source, ts, tuple(q.pair for q in qs), *cols))
        return out


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What `parse` returns: the frame's quotes as one batch, and what could not be resolved.

    A venue's `parse_doc` fills `rows` (unchecked); `parse` turns them into `batch`."""

    rows: tuple[Row, ...] = ()
    errors: tuple[PairError, ...] = ()
    batch: QuoteBatch | None = field(default=None, compare=False)

    @property
    def quotes(self) -> tuple[Quote, ...]:
        return self.batch.quotes() if self.batch is not None else ()


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

    @property
    def known(self) -> Mapping[str, str]:
        """Every spelling the venue may answer with → its pair (read-only use)."""
        return self._pair

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
    # A venue with perpetuals (`product = "perp"`) names their endpoints; None: spot only.
    perp_rest_url: ClassVar[str | None] = None
    perp_ws_url: ClassVar[str | None] = None

    def __init__(
        self,
        source: str,
        refs: Sequence[SourceRef],
        base_url: str | None = None,
        transport: Transport = "rest",
        product: Product = "spot",
    ) -> None:
        for _, problem in self.settings_problems(transport, base_url, product):
            raise ValueError(problem)
        self.source = source
        self.product = product
        self.refs: dict[str, SourceRef] = {}
        for ref in refs:
            self.refs.setdefault(ref.pair, ref)
        self.transport = transport
        default = self._default_url(transport, product)
        self.base_url = (base_url or default or "").rstrip("/")
        self.symbols = SymbolMap(self.refs, self.venue_symbol, self.venue_aliases)
        self._heartbeat: dict[str, float] | None = None  # pair -> heartbeat_s (NaN: none), built once
        self._any_heartbeat: bool | None = None

    @classmethod
    def _default_url(cls, transport: Transport, product: Product) -> str | None:
        if product == "perp":
            return cls.perp_ws_url if transport == "ws" else cls.perp_rest_url
        return cls.ws_url if transport == "ws" else cls.rest_url

    @classmethod
    def settings_problems(
        cls, transport: Transport, base_url: str | None, product: Product = "spot"
    ) -> list[tuple[str, str]]:
        """(key, problem) for a source's settings this venue cannot serve; the config loader asks
        too, so that these come in the same run as every other config error."""
        if product == "perp" and cls.perp_rest_url is None:
            return [("product", f'{cls.kind} has no perpetuals (product = "perp" is for binance, okx, bybit)')]
        if transport == "ws" and (cls.perp_ws_url if product == "perp" else cls.ws_url) is None:
            return [("transport", f"{cls.kind} has no WebSocket transport (markd reads it over REST)")]
        if not (base_url or cls._default_url(transport, product)):
            return [("base_url", f"{cls.kind} has no default endpoint: set base_url")]
        return []

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
        return _missing_as_unknown(self._checked(result, received_ts), pairs)

    def _checked(self, result: ParseResult, received_ts: float) -> ParseResult:
        """The frame's rows through `check_rows`: the good ones as a batch, the others as errors."""
        if not result.rows:
            return result
        heartbeat = None
        if self.has_heartbeat():  # only Chainlink sets one
            limits = self._heartbeats()
            heartbeat = np.array([limits[row[0]] for row in result.rows])
        batch, errors = check_rows(self.source, received_ts, result.rows, heartbeat)
        return ParseResult((), result.errors + errors, batch if len(batch) else None)

    def _heartbeats(self) -> dict[str, float]:
        """pair -> its ref's heartbeat_s (NaN: none), built once."""
        if self._heartbeat is None:
            self._heartbeat = {p: math.nan if r.heartbeat_s is None else r.heartbeat_s for p, r in self.refs.items()}
        return self._heartbeat

    def has_heartbeat(self) -> bool:
        """Whether any pair of this source limits the age of its venue time (asked once a frame)."""
        if self._any_heartbeat is None:
            self._any_heartbeat = any(not math.isnan(h) for h in self._heartbeats().values())
        return self._any_heartbeat

    def resolve(self, items: Iterable[Any], one: Callable[[Any], Row | None]) -> ParseResult:
        """Run `one` on each entry of a frame, keeping each entry's failure to itself."""
        rows: list[Row] = []
        errors: list[PairError] = []
        for item in items:
            try:
                row = one(item)
            except ParseError as exc:
                errors.append(PairError(exc.code, exc.pair, str(exc)))
            else:
                if row is not None:
                    rows.append(row)
        return ParseResult(tuple(rows), tuple(errors))

    def book(
        self,
        pair: str,
        *,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        venue_ts: float | None = None,
        confidence: float | None = None,
    ) -> Row:
        """One pair's row; each price given must be positive and finite (the row as a whole is checked
        by `check_rows`, over the whole frame at once)."""
        for name, value in (("bid", bid), ("ask", ask), ("last", last)):
            if value is not None and not 0.0 < value < math.inf:  # NaN fails both comparisons
                raise BadPrice(f"{name} is {value}", pair)
        return (pair, bid, ask, last, venue_ts, confidence)


def _missing_as_unknown(result: ParseResult, pairs: tuple[str, ...]) -> ParseResult:
    """A pair we asked for that the answer never mentions is one the venue does not know."""
    if not pairs or any(e.pair is None for e in result.errors):
        return result
    seen = set(result.batch.pair if result.batch is not None else ()) | {e.pair for e in result.errors}
    missing = tuple(PairError("unknown_pair", p, "absent from the answer") for p in pairs if p not in seen)
    return ParseResult((), result.errors + missing, result.batch) if missing else result


# --- the checks on whole rows, over a frame's arrays (the live parse and the replay share them) ---

CROSSED, NO_PRICE, STALE_VENUE_TIME = 1, 2, 3  # in the order `book` checked them one by one


def row_problems(
    bid: np.ndarray, ask: np.ndarray, last: np.ndarray, venue_ts: np.ndarray, received_ts: Any, heartbeat: Any
) -> np.ndarray:
    """Per row, 0 or the first check it fails: a crossed book (bid > ask), no price (neither a
    two-sided book nor a last trade), a venue time older than `heartbeat` seconds (NaN: no limit)."""
    two_sided = ~(np.isnan(bid) | np.isnan(ask))
    problem = np.zeros(len(bid), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        checks = (
            (received_ts - venue_ts > heartbeat, STALE_VENUE_TIME),
            (~two_sided & np.isnan(last), NO_PRICE),
            (two_sided & (bid > ask), CROSSED),
        )
    for failed, code in checks:  # the first check a row fails is written last
        np.putmask(problem, failed, code)
    return problem


def book_price(bid: np.ndarray, ask: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(price, bid, ask): the mid of a two-sided book, else the last trade with no book."""
    two_sided = ~(np.isnan(bid) | np.isnan(ask))
    price = np.where(two_sided, (bid + ask) / 2.0, last)
    return price, np.where(two_sided, bid, np.nan), np.where(two_sided, ask, np.nan)


def check_rows(
    source: str, received_ts: float, rows: Sequence[Row], heartbeat: np.ndarray | None = None
) -> tuple[QuoteBatch, tuple[PairError, ...]]:
    """A frame's rows as a QuoteBatch of the good ones, and one PairError per bad one."""
    columns = list(zip(*rows, strict=True))  # one tuple per field: far cheaper than rows -> 2-D array
    bid, ask, last, venue_ts, confidence = map(_floats, columns[1:])
    problem = row_problems(bid, ask, last, venue_ts, received_ts, math.nan if heartbeat is None else heartbeat)
    errors: tuple[PairError, ...] = ()
    pairs: tuple[str, ...] = columns[0]
    if problem.any():
        bad = np.flatnonzero(problem)
        errors = tuple(_row_error(rows[i], int(problem[i]), heartbeat, i) for i in bad.tolist())
        good = problem == 0
        bid, ask, last, venue_ts, confidence = (c[good] for c in (bid, ask, last, venue_ts, confidence))
        pairs = tuple(p for p, ok in zip(pairs, good.tolist(), strict=True) if ok)
    price, bid, ask = book_price(bid, ask, last)
    return QuoteBatch(source, received_ts, pairs, price, bid, ask, venue_ts, confidence, last), errors


def _floats(column: tuple[float | None, ...]) -> np.ndarray:
    """A field's column as floats, None as NaN. A field the venue never gives (an http_json price has
    no book, no venue time, no confidence) is all None: NaNs at once, not converted one by one (that
    was half of a 1,000-pair frame's checks)."""
    if column.count(None) == len(column):
        return np.full(len(column), math.nan)
    return np.array(column, dtype=float)


def _row_error(row: Row, problem: int, heartbeat: np.ndarray | None, i: int) -> PairError:
    pair, bid, ask, _, venue_ts, _ = row
    exc: ParseError
    if problem == CROSSED:
        exc = BadPrice(f"crossed book: bid {bid} > ask {ask}", pair)
    elif problem == NO_PRICE:
        exc = SchemaError("neither a two-sided book nor a last price", pair)
    else:
        limit = float(heartbeat[i]) if heartbeat is not None else math.nan
        exc = StaleVenueTime(f"venue time {venue_ts} is older than {limit}s", pair)
    return PairError(exc.code, exc.pair, str(exc))


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


# --- helpers for parse_doc: each raises a typed ParseError, never KeyError/TypeError ---


_FAST_JSON = msgspec.json.Decoder()


def decode(body: str | bytes) -> Any:
    """msgspec's decoder: 3-11x faster than json on the venues' documents (README, Benchmarks), and,
    unlike orjson, exact on integers past 64 bits (a Chainlink uint256). What it refuses and the
    standard library takes (NaN and Infinity literals, lone surrogates) goes to json.loads, so a
    frame decodes exactly as before."""
    try:
        return _FAST_JSON.decode(body)
    except msgspec.DecodeError:
        pass
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
