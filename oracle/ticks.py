"""The ticks file (replay input, `markd record` and `markd synth` output), held as numpy columns.

CSV with a header, one quote a row: `ts,source,pair,price` and optionally `bid,ask,venue_ts`, and
`confidence` (the venue's own uncertainty, Pyth's conf) and `last` (the last trade of a book row),
in any order after the first four; `ts` is the receive time in Unix seconds. Rows may come in any
order: `read_ticks` sorts them (stably, so rows with equal `ts` keep their file order). `.csv.gz` is
read and written transparently.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from oracle.clock import Clock
from oracle.models import Quote

HEADER = ("ts", "source", "pair", "price", "bid", "ask", "venue_ts")
EXTRA = ("confidence", "last")  # second-round columns: read in any position, written when present
REQUIRED = HEADER[:4]


class TicksError(ValueError):
    """A ticks file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Ticks:
    """Quotes as columns; `feed[i]` indexes `keys`, the (source, pair) of row i. NaN = absent."""

    keys: tuple[tuple[str, str], ...]
    feed: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    venue_ts: np.ndarray
    confidence: np.ndarray = field(default_factory=lambda: np.empty(0))  # empty: none (NaN) on every row
    last: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self) -> None:
        for name in ("confidence", "last"):
            if len(getattr(self, name)) != len(self.ts):
                object.__setattr__(self, name, np.full(len(self.ts), np.nan))

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: np.ndarray) -> Ticks:
        """The rows selected by an index or boolean array, in that order."""
        return Ticks(self.keys, *(col[idx] for col in self._columns()))

    def sorted(self) -> Ticks:
        return self.take(np.argsort(self.ts, kind="stable"))

    def rows_of(self, sources: set[str], pair: str | None) -> np.ndarray:
        """Boolean mask of the rows from any of `sources` (and `pair`, when given)."""
        wanted = [i for i, (s, p) in enumerate(self.keys) if s in sources and (pair is None or p == pair)]
        return np.isin(self.feed, wanted)

    def with_keys(self, keys: tuple[tuple[str, str], ...]) -> Ticks:
        """The same rows over a longer key list (new keys appended after the old ones)."""
        if keys[: len(self.keys)] != self.keys:
            raise ValueError("new keys must extend the old ones")
        return Ticks(keys, *self._columns())

    @staticmethod
    def concat(parts: list[Ticks]) -> Ticks:
        keys = parts[0].keys
        if any(p.keys != keys for p in parts):
            raise ValueError("concatenated ticks must share their keys")
        cols = zip(*(p._columns() for p in parts), strict=True)
        return Ticks(keys, *(np.concatenate(c) for c in cols))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.feed, self.ts, self.price, self.bid, self.ask, self.venue_ts, self.confidence, self.last)


def _open(path: Path, mode: str) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8", newline="", compresslevel=1)  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8", newline="")


def _float(text: str) -> float:
    return float(text) if text else math.nan


def read_ticks(path: str | Path) -> Ticks:
    p = Path(path)
    try:
        with _open(p, "r") as fh:
            return _parse(p, csv.reader(fh))
    except FileNotFoundError:
        raise TicksError(f"{p}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise TicksError(f"{p}: unreadable ({exc})") from None


def _parse(p: Path, reader: Iterator[list[str]]) -> Ticks:
    header = next(reader, None)
    if header is None:
        raise TicksError(f"{p}: empty file (expected a header {','.join(REQUIRED)}...)")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in HEADER + EXTRA]
    if missing or unknown:
        raise TicksError(f"{p}: header needs {','.join(REQUIRED)} (missing {missing}, unknown {unknown})")
    col = {name: header.index(name) for name in header}
    keys: dict[tuple[str, str], int] = {}
    feed: list[int] = []
    nums: list[list[float]] = [[] for _ in range(7)]
    optional = [col.get(name) for name in ("bid", "ask", "venue_ts", "confidence", "last")]
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        try:
            key = (row[col["source"]], row[col["pair"]])
            values = (float(row[col["ts"]]), float(row[col["price"]]))
            extra = [_float(row[i]) if i is not None and i < len(row) else math.nan for i in optional]
        except (IndexError, ValueError) as exc:
            raise TicksError(f"{p}:{line}: bad row {row!r} ({exc})") from None
        if not math.isfinite(values[0]):
            raise TicksError(f"{p}:{line}: ts must be a finite number")
        feed.append(keys.setdefault(key, len(keys)))
        for out, v in zip(nums, (*values, *extra), strict=True):
            out.append(v)
    ticks = Ticks(tuple(keys), np.array(feed, dtype=np.intp), *(np.array(c, dtype=float) for c in nums))
    return ticks.sorted()


def write_ticks(path: str | Path, ticks: Ticks) -> int:
    """Write the ticks file (gzip when the name ends in .gz); returns the number of rows.

    Times keep microseconds and prices ten significant digits: finer than any venue quotes, and
    several times faster to format than repr (a day of ticks is half a million rows). `confidence`
    and `last` are written when some row has them (synthetic ticks have neither)."""
    labels = [f"{s},{p}" for s, p in ticks.keys]
    extra = [name for name in EXTRA if not np.isnan(getattr(ticks, name)).all()]
    cols = [ticks.price, ticks.bid, ticks.ask, ticks.venue_ts, *(getattr(ticks, name) for name in extra)]
    formats = [_g, _g, _f, *(_g for _ in extra)]
    rows = zip(ticks.ts.tolist(), [labels[f] for f in ticks.feed.tolist()], *(c.tolist() for c in cols), strict=True)
    with _open(Path(path), "w") as out:
        out.write(",".join((*HEADER, *extra)) + "\n")
        out.writelines(
            f"{ts:.6f},{label},{price:.10g}," + ",".join(fmt(x) for fmt, x in zip(formats, rest, strict=True)) + "\n"
            for ts, label, price, *rest in rows
        )
    return len(ticks)


def _g(x: float) -> str:
    return "" if x != x else f"{x:.10g}"


def _f(x: float) -> str:
    return "" if x != x else f"{x:.6f}"


class TicksWriter:
    """Appends quotes one at a time (`markd record`); flushes at least every `flush_s` of clock time."""

    def __init__(self, path: str | Path, clock: Clock, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.clock = clock
        self.flush_s = flush_s
        self.rows = 0
        self._file = _open(self.path, "w")  # owned across calls and closed by close(), hence no `with`
        self._file.write(",".join(HEADER + EXTRA) + "\n")  # a recording writes every column it has
        self._flushed = clock.now()

    def write(self, q: Quote) -> None:
        self._file.write(
            f"{q.received_ts!r},{q.source},{q.pair},{q.price!r},{_opt(q.bid)},{_opt(q.ask)},{_opt(q.venue_ts)},"
            f"{_opt(q.confidence)},{_opt(q.last)}\n"
        )
        self.rows += 1
        if self.clock.now() - self._flushed >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flushed = self.clock.now()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TicksWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _opt(x: float | None) -> str:
    return "" if x is None else repr(x)
