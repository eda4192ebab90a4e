"""The ticks file (replay input, `markd record` and `markd synth` output), held as numpy columns.

CSV with a header, one quote a row: `ts,source,pair,price` and optionally `bid,ask,venue_ts`, and
`confidence` (the venue's own uncertainty, Pyth's conf) and `last` (the last trade of a book row),
in any order after the first four; `ts` is the receive time in Unix seconds. Rows may come in any
order: `read_ticks` sorts them (stably, so rows with equal `ts` keep their file order). `.csv.gz` is
read and written transparently; `.parquet` (the same columns, typed) needs the `parquet` extra.

Reading a CSV takes two paths to one answer. pandas' C parser reads a well-formed file at disk speed
(about ten times the csv module, README "Benchmarks"); anything it cannot read, or reads where the
line-by-line reader would not (an empty name, a missing price, a short row, a blank line, a value
that only Python's float accepts), sends the whole file to the line-by-line reader, which either
reads it exactly as before or names the line and the column that is wrong. Both parse a number to
the same float (Python's correctly rounded one), so the replay's answers do not depend on the path.

`TickStream` reads the same files in pieces, for a replay of more rows than memory holds (a month of
ticks is 155 million rows, tens of GB as columns): the columnar path a piece at a time, with the
same checks, so its pieces sorted together are `read_ticks`' answer. A piece the columnar path
cannot read is `NotStreamable`: the line reader needs the whole file, so `read_ticks` decides.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from oracle.clock import Clock
from oracle.models import Quote

HEADER = ("ts", "source", "pair", "price", "bid", "ask", "venue_ts")
EXTRA = ("confidence", "last")  # second-round columns: read in any position, written when present
REQUIRED = HEADER[:4]
NUMBERS = ("ts", "price", "bid", "ask", "venue_ts", *EXTRA)
PARQUET_EXTRA = "pip install 'markd[parquet]'"
T = TypeVar("T")


class TicksError(ValueError):
    """A ticks file that cannot be read; the message names the file and line."""


class NotStreamable(Exception):
    """The file must be read whole by read_ticks (it decides: a line the columnar path cannot read goes to
    the line reader, which reads it or names the bad line)."""


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
        """The same rows over a key list that names each of theirs: renumbered unless it extends theirs."""
        if keys[: len(self.keys)] == self.keys:
            return Ticks(keys, *self._columns())
        try:
            where = np.array([keys.index(k) for k in self.keys], dtype=np.intp)
        except ValueError:
            raise ValueError("the new keys must name every key of the rows") from None
        return Ticks(keys, where[self.feed], *self._columns()[1:])

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


def read_ticks(path: str | Path) -> Ticks:
    p = Path(path)
    if p.suffix == ".parquet":
        return _read_parquet(p)
    with _reading(p):
        fast = _read_columns(p, _check_header(p, _first_row(p)))
        return fast if fast is not None else _read_rows(p)


@contextmanager
def _reading(p: Path) -> Iterator[None]:
    """A CSV that cannot be opened or decoded as a TicksError naming it (for read_ticks and TickStream)."""
    try:
        yield
    except FileNotFoundError:
        raise TicksError(f"{p}: no such file") from None
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise TicksError(f"{p}: unreadable ({exc})") from None


def _first_row(p: Path) -> list[str] | None:
    with _open(p, "r") as fh:
        return next(csv.reader(fh), None)


def _check_header(p: Path, header: Sequence[str] | None) -> list[str]:
    """The column names (stripped of spaces); TicksError unless they are right."""
    if header is None:
        raise TicksError(f"{p}: empty file (expected a header {','.join(REQUIRED)}...)")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in HEADER + EXTRA]
    if missing or unknown:
        raise TicksError(f"{p}: header needs {','.join(REQUIRED)} (missing {missing}, unknown {unknown})")
    return header


@dataclass(frozen=True, slots=True)
class _Columns:
    """Rows read by a columnar path (one file, or one piece of it), each name column as integer codes
    into its own list of names: the keys are numbered once the rows are placed in a file (`_keys`)."""

    source_codes: np.ndarray
    sources: Sequence[str]
    pair_codes: np.ndarray
    pairs: Sequence[str]
    numbers: tuple[np.ndarray, ...]  # ts, price, bid, ask, venue_ts, confidence, last; NaN = absent

    def __len__(self) -> int:
        return len(self.numbers[0])

    def ticks(self) -> Ticks:
        """The rows with their keys numbered in order of first appearance among them."""
        keys, feed = _keys(self.source_codes, self.sources, self.pair_codes, self.pairs)
        return Ticks(keys, feed, *self.numbers)

    def ticks_after(self, seen: dict[tuple[str, str], int]) -> Ticks:
        """The rows of a piece after the pieces whose keys are `seen` (which this extends): numbered as a read
        of the whole file numbers them, since a key new here comes after every key of an earlier piece."""
        piece = self.ticks()
        number = np.array([seen.setdefault(key, len(seen)) for key in piece.keys], dtype=np.intp)
        return Ticks(tuple(seen), number[piece.feed], *self.numbers)


def _read_columns(p: Path, names: list[str]) -> Ticks | None:
    """The fast path: the whole file through pandas' C parser; None when the line reader must judge."""
    import pandas as pd  # here, not at the top: it takes a second to import, and only reading needs it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. a row longer than the header: the line reader decides
            compression = "gzip" if p.name.endswith(".gz") else None
            frame = pd.read_csv(p, **_csv_options(names), compression=compression)
    except (ValueError, OSError, EOFError, Warning):  # pandas' ParserError is a ValueError
        return None
    columns = _frame_columns(frame)
    return columns.ticks().sorted() if columns is not None else None


def _csv_options(names: list[str]) -> dict[str, Any]:
    """pandas.read_csv's options for a ticks file whose header holds `names` (the whole file, or pieces)."""
    numbers = [n for n in names if n in NUMBERS]
    return {
        "header": 0,
        "names": names,
        "index_col": False,
        "dtype": {"source": "category", "pair": "category", **dict.fromkeys(numbers, "float64")},
        "keep_default_na": False,  # only an empty cell is absent: "NA" is a bad number, "null" a name
        "na_values": {name: [""] for name in numbers},
        "skip_blank_lines": False,  # a blank line becomes a row without ts, so the line reader judges it
        "encoding": "utf-8",
        "engine": "c",
    }


def _frame_columns(frame: Any) -> _Columns | None:
    """The rows pandas read, or None when the line reader must judge one of them."""
    ts, price = frame["ts"].to_numpy(dtype=float), frame["price"].to_numpy(dtype=float)
    source, pair = frame["source"].cat, frame["pair"].cat
    if not np.isfinite(ts).all() or np.isnan(price).any():
        return None  # a bad or missing ts, an empty price (or a "nan" one): the line reader's call
    if "" in source.categories or "" in pair.categories or (source.codes < 0).any() or (pair.codes < 0).any():
        return None  # an empty name, or a row too short to have one
    optional = [_column(frame, name) for name in ("bid", "ask", "venue_ts", "confidence", "last")]
    sources, pairs = list(source.categories), list(pair.categories)
    return _Columns(source.codes.to_numpy(), sources, pair.codes.to_numpy(), pairs, (ts, price, *optional))


def _column(frame: Any, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=float) if name in frame else np.full(len(frame), np.nan)


def _keys(
    source_codes: np.ndarray, sources: Sequence[str], pair_codes: np.ndarray, pairs: Sequence[str]
) -> tuple[tuple[tuple[str, str], ...], np.ndarray]:
    """The (source, pair) keys numbered in the order they first appear, as the line reader numbers them,
    and each row's key number; from each name column as integer codes into its list of names."""
    combined = source_codes.astype(np.int64) * max(1, len(pairs)) + pair_codes
    unique, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    keys = tuple((str(sources[c // max(1, len(pairs))]), str(pairs[c % max(1, len(pairs))])) for c in unique[order])
    return keys, rank[inverse.reshape(-1)]


def _pyarrow(p: Path) -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet, or a TicksError that says how to install them (an optional extra)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TicksError(f"{p}: Parquet needs pyarrow, which is not installed: {PARQUET_EXTRA}") from None
    return pa, pq


def _read_parquet(p: Path) -> Ticks:
    """A Parquet file of the same columns: numbers as integers or floats (null = absent), names as strings."""
    pa, pq = _pyarrow(p)
    with _reading_parquet(p, pa):
        schema = pq.read_schema(p)
        table = pq.read_table(p, read_dictionary=_text_names(pa, schema))
    return _parquet_columns(p, table).ticks().sorted()


@contextmanager
def _reading_parquet(p: Path, pa: Any) -> Iterator[None]:
    """A Parquet file that cannot be opened or read as a TicksError naming it (read_ticks and TickStream)."""
    try:
        yield
    except FileNotFoundError:
        raise TicksError(f"{p}: no such file") from None
    except (OSError, pa.ArrowException) as exc:
        raise TicksError(f"{p}: unreadable as Parquet ({exc})") from None


def _text_names(pa: Any, schema: Any) -> list[str]:
    """The name columns stored as strings, to read as integer codes (4 bytes a row, not a string)."""
    return [n for n in ("source", "pair") if n in schema.names and _is_text(pa, schema.field(n).type)]


def _parquet_columns(p: Path, table: Any, first_row: int = 0) -> _Columns:
    """A table of the file's rows (all of them, or a piece from row `first_row` on, counted from 0) as columns;
    TicksError naming the column, and the row in the whole file, that is wrong."""
    _check_header(p, table.column_names)
    if len(set(table.column_names)) != len(table.column_names):
        raise TicksError(f"{p}: a column name is repeated ({', '.join(table.column_names)})")
    codes = [_parquet_names(p, table, name, first_row) for name in ("source", "pair")]
    numbers = {name: _parquet_numbers(p, table, name, first_row) for name in NUMBERS if name in table.column_names}
    bad_ts = np.flatnonzero(~np.isfinite(numbers["ts"]))
    if len(bad_ts):
        raise TicksError(f"{p}: row {first_row + bad_ts[0] + 1}: ts must be a finite number")
    (source_codes, sources), (pair_codes, pairs) = codes
    optional = [numbers.get(name, np.full(table.num_rows, np.nan)) for name in ("bid", "ask", "venue_ts", *EXTRA)]
    return _Columns(source_codes, sources, pair_codes, pairs, (numbers["ts"], numbers["price"], *optional))


def _parquet_names(p: Path, table: Any, name: str, first_row: int) -> tuple[np.ndarray, list[str]]:
    """A string column as integer codes into its names."""
    import pyarrow as pa

    column = table.column(name)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not _is_text(pa, kind):
        raise TicksError(f"{p}: column {name} is {kind}, expected strings")
    _no_nulls(p, column, name, first_row)
    if not pa.types.is_dictionary(column.type):  # read_dictionary did not apply (the schema said otherwise)
        column = column.dictionary_encode()
    column = column.unify_dictionaries()  # one list of names for every row group
    names = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
    if len(set(names)) != len(names):  # a name listed twice would make two keys of one: encode afresh
        column = column.cast(kind).dictionary_encode().unify_dictionaries()
        names = column.chunk(0).dictionary.to_pylist()
    codes = [chunk.indices.to_numpy(zero_copy_only=False) for chunk in column.chunks]
    return (np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)), names


def _is_text(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _parquet_numbers(p: Path, table: Any, name: str, first_row: int) -> np.ndarray:
    """A numeric column as floats, a null as NaN (absent); ts and price may not be null (as in a CSV)."""
    import pyarrow as pa

    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise TicksError(f"{p}: column {name} is {column.type}, expected numbers (integers or floats)")
    if name in REQUIRED:
        _no_nulls(p, column, name, first_row)
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)


def _no_nulls(p: Path, column: Any, name: str, first_row: int) -> None:
    missing = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
    if len(missing):
        raise TicksError(f"{p}: row {first_row + missing[0] + 1}: {name} is absent (null)")


def _read_rows(p: Path) -> Ticks:
    """The line-by-line reader: slower, and it names the line and column of the first bad row."""
    with _open(p, "r") as fh:
        return _parse(p, csv.reader(fh))


class _BadCell(Exception):
    def __init__(self, column: str, why: str) -> None:
        super().__init__(column, why)
        self.column, self.why = column, why


def _parse(p: Path, reader: Iterable[list[str]]) -> Ticks:
    rows = iter(reader)
    header = _check_header(p, next(rows, None))
    col = {name: header.index(name) for name in header}  # a repeated name: its first column counts
    keys: dict[tuple[str, str], int] = {}
    feed: list[int] = []
    nums: list[list[float]] = [[] for _ in range(7)]
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            key = (_cell(row, col, "source"), _cell(row, col, "pair"))
            values = [_number(row, col, name) for name in ("ts", "price", "bid", "ask", "venue_ts", *EXTRA)]
        except _BadCell as bad:
            raise TicksError(f"{p}:{line}: {bad.column} {bad.why} (row {row!r})") from None
        if not math.isfinite(values[0]):
            raise TicksError(f"{p}:{line}: ts must be a finite number")
        feed.append(keys.setdefault(key, len(keys)))
        for out, v in zip(nums, values, strict=True):
            out.append(v)
    ticks = Ticks(tuple(keys), np.array(feed, dtype=np.intp), *(np.array(c, dtype=float) for c in nums))
    return ticks.sorted()


def _cell(row: list[str], col: dict[str, int], name: str) -> str:
    if col[name] >= len(row):
        raise _BadCell(name, f"is missing (the row has {len(row)} fields)")
    return row[col[name]]


def _number(row: list[str], col: dict[str, int], name: str) -> float:
    """A column's float; an optional column's empty cell, or its absence from a short row, is NaN."""
    if name not in REQUIRED and (name not in col or col[name] >= len(row) or not row[col[name]]):
        return math.nan
    text = _cell(row, col, name)
    if not text:
        raise _BadCell(name, "is empty")
    try:
        return float(text)
    except ValueError:
        raise _BadCell(name, f"{text!r} is not a number") from None


class TickStream:
    """A ticks file as pieces of at most `rows` rows, in file order and unsorted, for a replay of more rows
    than memory holds; the caller sorts and cuts them. A piece's keys are every key seen so far, numbered
    as read_ticks numbers them (in order of first appearance in the file), so each piece's keys extend
    the previous piece's, and the pieces together, sorted, are read_ticks' answer.

    A missing file, a bad header or a Parquet column of the wrong type is a TicksError at once, as
    read_ticks raises it; a Parquet row that is wrong, when its piece is read (naming its row in the
    file). A CSV piece the columnar path cannot read is NotStreamable, even after earlier pieces: the
    line reader needs the whole file, so read_ticks decides."""

    def __init__(self, path: str | Path, rows: int = 1 << 20) -> None:
        if rows < 1:
            raise ValueError(f"rows must be at least 1, not {rows}")
        self.path, self.rows = Path(path), rows
        self._done, self._read = False, 0.0  # the fraction read, of the bytes (CSV) or the rows (Parquet)
        if self.path.suffix == ".parquet":
            self._text = self._check_parquet()
        else:
            with _reading(self.path):
                self._names = _check_header(self.path, _first_row(self.path))

    @property
    def fraction(self) -> float:
        """How much of the file has been read, 0 to 1 (1.0 at the end): for a progress bar."""
        return 1.0 if self._done else min(self._read, 1.0)

    def __iter__(self) -> Iterator[Ticks]:
        self._done, self._read = False, 0.0
        seen: dict[tuple[str, str], int] = {}
        for columns in self._parquet_pieces() if self.path.suffix == ".parquet" else self._csv_pieces():
            if len(columns):
                yield columns.ticks_after(seen)
        self._done = True

    def _csv_pieces(self) -> Iterator[_Columns]:
        first_row = 0  # in the file's rows, counted from 0 (line first_row + 2)
        for frame in self._csv_frames():
            columns = _frame_columns(frame)
            if columns is None:
                rows = f"rows {first_row + 1}-{first_row + len(frame)}"
                raise NotStreamable(f"{self.path}: one of {rows} is for the line reader to judge")
            first_row += len(frame)
            yield columns

    def _csv_frames(self) -> Iterator[Any]:
        """pandas' frames of `rows` rows. The file is opened here, not by pandas, to see how far into its
        (compressed) bytes the reader is."""
        import pandas as pd

        with _reading(self.path):
            raw = self.path.open("rb")
        size = max(1, os.fstat(raw.fileno()).st_size)
        with raw, gzip.GzipFile(fileobj=raw) if self._gz else nullcontext(raw) as fh:
            options = _csv_options(self._names)
            reader = _unless_warned(self.path, lambda: pd.read_csv(fh, **options, chunksize=self.rows))
            with reader:
                while (frame := _unless_warned(self.path, lambda: next(reader, None))) is not None:
                    self._read = raw.tell() / size
                    yield frame

    @property
    def _gz(self) -> bool:
        return self.path.name.endswith(".gz")

    def _check_parquet(self) -> list[str]:
        """The name columns to read as codes, after the checks read_ticks makes of the columns (an empty
        table of the file's schema goes through them): a wrong type is an error before any row is read."""
        pa, pq = _pyarrow(self.path)
        with _reading_parquet(self.path, pa):
            schema = pq.read_schema(self.path)
        _parquet_columns(self.path, schema.empty_table())
        return _text_names(pa, schema)

    def _parquet_pieces(self) -> Iterator[_Columns]:
        pa, pq = _pyarrow(self.path)
        with _reading_parquet(self.path, pa):  # pre_buffer keeps every row group's bytes read: RSS grew with the file
            parquet = pq.ParquetFile(self.path, read_dictionary=self._text, pre_buffer=False)
        with parquet:
            total, first_row = max(1, parquet.metadata.num_rows), 0
            batches = parquet.iter_batches(batch_size=self.rows)
            while True:
                with _reading_parquet(self.path, pa):
                    batch = next(batches, None)
                if batch is None:
                    return
                columns = _parquet_columns(self.path, pa.Table.from_batches([batch]), first_row)
                first_row += batch.num_rows
                self._read = first_row / total
                yield columns


def _unless_warned(p: Path, read: Callable[[], T]) -> T:
    """A read by pandas, whose warnings (a row longer than the header) and errors (ParserError, a
    ValueError; a truncated gzip) are NotStreamable: the columnar path leaves such a file to the line
    reader. Around each piece's read, not the iteration: pandas parses a piece when it is asked for."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return read()
    except (ValueError, OSError, EOFError, Warning) as exc:
        raise NotStreamable(f"{p}: the columnar reader stopped ({exc!r})") from exc


def write_ticks(path: str | Path, ticks: Ticks) -> int:
    """Write the ticks file (gzip when the name ends in .gz, Parquet in .parquet); returns the number of rows.

    Times keep microseconds and prices ten significant digits: finer than any venue quotes, and
    several times faster to format than repr (a day of ticks is half a million rows). `confidence`
    and `last` are written when some row has them (synthetic ticks have neither)."""
    extra = [name for name in EXTRA if not np.isnan(getattr(ticks, name)).all()]
    if Path(path).suffix == ".parquet":
        return _write_parquet(Path(path), ticks, extra)
    labels = [f"{_quoted(s)},{_quoted(p)}" for s, p in ticks.keys]
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


def _write_parquet(path: Path, ticks: Ticks, extra: list[str]) -> int:
    """The same columns, typed: floats stored exactly (no rounding, unlike the CSV), names as strings."""
    pa, pq = _pyarrow(path)
    names = np.array(ticks.keys, dtype=object).reshape(-1, 2)
    columns = {"ts": ticks.ts, "source": names[ticks.feed, 0], "pair": names[ticks.feed, 1], "price": ticks.price}
    columns |= {name: getattr(ticks, name) for name in ("bid", "ask", "venue_ts", *extra)}
    types = {name: pa.string() if name in ("source", "pair") else pa.float64() for name in columns}
    nullable = {"bid", "ask", "venue_ts", *extra}  # NaN there is "absent", a null; a NaN price stays NaN, as in a CSV
    table = pa.table({n: pa.array(v, type=types[n], from_pandas=n in nullable) for n, v in columns.items()})
    pq.write_table(table, path)
    return len(ticks)


def _g(x: float) -> str:
    return "" if x != x else f"{x:.10g}"


def _f(x: float) -> str:
    return "" if x != x else f"{x:.6f}"


class TicksWriter:
    """Appends quotes one at a time (`markd record`); flushes at least every `flush_s` of clock time."""

    def __init__(self, path: str | Path, clock: Clock, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        if self.path.suffix == ".parquet":  # Parquet is written whole, not a row at a time
            raise TicksError(f"{self.path}: a recording is CSV (.csv or .csv.gz); `markd synth` writes Parquet")
        self.clock = clock
        self.flush_s = flush_s
        self.rows = 0
        self._file = _open(self.path, "w")  # owned across calls and closed by close(), hence no `with`
        self._file.write(",".join(HEADER + EXTRA) + "\n")  # a recording writes every column it has
        self._flushed = clock.now()

    def write(self, q: Quote) -> None:
        self._file.write(
            f"{q.received_ts!r},{_quoted(q.source)},{_quoted(q.pair)},{q.price!r},{_opt(q.bid)},{_opt(q.ask)},{_opt(q.venue_ts)},"
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


def _quoted(name: str) -> str:
    """A source or pair name as a CSV cell: quoted when it holds a comma, a quote or a line break."""
    if any(c in name for c in ',"\r\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def _opt(x: float | None) -> str:
    return "" if x is None else repr(x)
