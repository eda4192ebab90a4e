"""TickStream, the ticks file in pieces for a replay of more rows than memory holds: the pieces, sorted
together, are read_ticks' answer bit for bit; each piece's keys extend the last; a row the columnar
path cannot read is NotStreamable (read_ticks decides), and a bad file is read_ticks' own TicksError."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from oracle.ticks import NotStreamable, Ticks, TicksError, TickStream, read_ticks, write_ticks

H = "ts,source,pair,price,bid,ask,venue_ts\n"
KEYS = (("pyth", "BTC-USD"), ("a,b", 'X"Y'), ("okx", "BTC-USDT"), ("kraken", "BTC-USD"), ("late", "ETH-USD"))


def _same(a: Ticks, b: Ticks) -> bool:
    """The same keys and every column equal, bit for bit and of the same type (NaN equal to NaN)."""
    columns = zip(a._columns(), b._columns(), strict=True)
    return a.keys == b.keys and all(x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True) for x, y in columns)


def _joined(pieces: list[Ticks]) -> Ticks:
    """The pieces as one, in file order, over the last piece's keys."""
    return Ticks.concat([piece.with_keys(pieces[-1].keys) for piece in pieces])


def _ticks(n: int = 300, extra: bool = True) -> Ticks:
    """Unsorted rows with many equal ts, a name that needs quoting, and a key first seen in the last rows."""
    rng = np.random.default_rng(11)
    feed = np.concatenate([rng.integers(0, 4, n - 3), [4, 0, 4]])
    maybe = lambda: np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 100)  # noqa: E731
    ts = np.round(1.7e9 + rng.random(n) * 30, 1)
    confidence, last = (maybe(), maybe()) if extra else (np.empty(0), np.empty(0))
    return Ticks(KEYS, feed, ts, rng.random(n) * 3e4, maybe(), maybe(), maybe(), confidence, last)


def _file_order(path: Path) -> list[tuple[float, str, str]]:
    """Each row's ts, source and pair as the file holds them, read without markd."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pydict()
        return list(zip(table["ts"], table["source"], table["pair"], strict=True))
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if path.name.endswith(".gz") else raw.decode()
    return [(float(row[0]), row[1], row[2]) for row in list(csv.reader(io.StringIO(text)))[1:]]


def _row_groups_of(path: Path, size: int) -> Path:
    """The same Parquet file rewritten in row groups of `size` rows, each with its own dictionary of names."""
    import pyarrow.parquet as pq

    out = path.with_name(f"groups-{path.name}")
    pq.write_table(pq.read_table(path), out, row_group_size=size)
    return out


# --- the pieces are read_ticks' answer ------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 7, 1000])
@pytest.mark.parametrize("extra", [True, False], ids=["extra", "no-extra"])
@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet", "groups"])
def test_the_pieces_sorted_together_are_read_ticks_answer(tmp_path: Path, name: str, extra: bool, rows: int) -> None:
    ticks = _ticks(extra=extra)
    path = tmp_path / ("t.parquet" if name == "groups" else name)
    write_ticks(path, ticks)
    if name == "groups":
        path = _row_groups_of(path, 13)
    pieces = list(TickStream(path, rows=rows))
    assert all(0 < len(piece) <= rows for piece in pieces) and sum(map(len, pieces)) == len(ticks)
    assert len(pieces) >= -(-len(ticks) // rows)  # pieces as large as asked for, or smaller (a row group's end)
    whole = read_ticks(path)
    assert _same(_joined(pieces).sorted(), whole)
    assert whole.keys[-1] == ("late", "ETH-USD") and np.isnan(whole.confidence).all() != extra
    joined = _joined(pieces)
    names = [joined.keys[f] for f in joined.feed.tolist()]
    assert list(zip(joined.ts.tolist(), *zip(*names, strict=True), strict=True)) == _file_order(path)  # unsorted


def test_a_parquet_file_written_by_pandas_streams_as_read_ticks_reads_it(tmp_path: Path) -> None:
    """A categorical name (a dictionary column in every row group) and an integer price."""
    import pandas as pd

    write_ticks(tmp_path / "t.csv", _ticks(extra=False))
    frame = pd.read_csv(tmp_path / "t.csv", dtype={"source": "category"}, keep_default_na=False, na_values=[""])
    frame["price"] = frame["price"].round().astype("int64")
    frame.to_parquet(tmp_path / "t.parquet", index=False, row_group_size=50)
    pieces = list(TickStream(tmp_path / "t.parquet", rows=30))
    assert _same(_joined(pieces).sorted(), read_ticks(tmp_path / "t.parquet"))


@pytest.mark.parametrize("name", ["t.csv", "t.parquet"])
def test_each_pieces_keys_extend_the_last_and_number_keys_by_first_appearance(tmp_path: Path, name: str) -> None:
    write_ticks(tmp_path / name, _ticks())
    pieces = list(TickStream(tmp_path / name, rows=5))
    for before, after in itertools.pairwise(pieces):
        assert after.keys[: len(before.keys)] == before.keys
    seen: list[tuple[str, str]] = []
    for piece in pieces:  # every key of a piece was seen by then, and a new one is numbered next
        for f in piece.feed.tolist():
            if piece.keys[f] not in seen:
                seen.append(piece.keys[f])
            assert piece.keys[: len(seen)] == tuple(seen)
    assert tuple(seen) == pieces[-1].keys and len(pieces[0].keys) < len(KEYS) == len(pieces[-1].keys)


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_a_file_of_no_rows_gives_no_pieces_and_is_read_to_the_end(tmp_path: Path, name: str) -> None:
    write_ticks(tmp_path / name, _ticks().take(np.zeros(0, dtype=np.intp)))
    stream = TickStream(tmp_path / name, rows=3)
    assert list(stream) == [] and stream.fraction == 1.0
    assert len(read_ticks(tmp_path / name)) == 0


# --- what the columnar path cannot read goes to read_ticks ------------------------------------------


def _with_line(tmp_path: Path, line: int, text: str, n: int = 100) -> Path:
    """A file of n rows whose line `line` (the header is line 1) is `text`."""
    rows = [f"{i},a,B,{i + 1},,," for i in range(n)]
    rows[line - 2] = text
    path = tmp_path / "t.csv"
    path.write_text(H + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("text", "read_ticks_gives"),
    [
        ("49,a,B,abc,,,", "t.csv:50: price 'abc' is not a number"),
        ("49,a,B,1_000,,,", 100),  # Python's float reads it, pandas does not: the line reader's call
        ("49,a,B,nan,,,", 100),  # a NaN price: the line reader reads it as the columnar path would not
        ("49,,B,1,,,", 100),  # an empty name
        ("49,a", "t.csv:50: pair is missing (the row has 2 fields)"),
        ("49,a,B,1,,,,9", 100),  # a longer row: pandas' tokenizer fails
        ("", 99),  # a blank line: skipped
    ],
    ids=["bad-number", "underscore", "nan-price", "empty-name", "short-row", "long-row", "blank-line"],
)
def test_a_row_the_columnar_path_cannot_read_is_not_streamable_midway(
    tmp_path: Path, text: str, read_ticks_gives: str | int
) -> None:
    path = _with_line(tmp_path, 50, text)
    pieces: list[Ticks] = []
    with warnings.catch_warnings(), pytest.raises(NotStreamable):
        warnings.simplefilter("ignore")  # a warning is NotStreamable because the stream says so, not pytest
        pieces.extend(TickStream(path, rows=10))
    assert len(pieces) == 4  # rows 1-40 read, the fifth piece (lines 42-51) stops
    if isinstance(read_ticks_gives, int):  # the rows read
        assert len(read_ticks(path)) == read_ticks_gives
    else:  # the error
        assert read_ticks_gives in _error(read_ticks, path)


def test_a_longer_first_row_is_not_streamable_though_pandas_only_warns(tmp_path: Path) -> None:
    """pandas warns as it reads each piece (not when it opens the file): each read must turn it into an error."""
    path = _with_line(tmp_path, 2, "0,a,B,1,,,,9")
    with warnings.catch_warnings(), pytest.raises(NotStreamable, match="Length of header"):
        warnings.simplefilter("ignore")  # as outside pytest: the warning is NotStreamable because the stream says so
        list(TickStream(path, rows=10))
    assert len(read_ticks(path)) == 100  # the line reader ignores the extra field


def test_a_truncated_gzip_is_not_streamable_and_read_ticks_names_it(tmp_path: Path) -> None:
    write_ticks(tmp_path / "t.csv.gz", _ticks(3000))
    data = (tmp_path / "t.csv.gz").read_bytes()
    (tmp_path / "t.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(NotStreamable):
        list(TickStream(tmp_path / "t.csv.gz", rows=100))
    with pytest.raises(TicksError, match=r"t\.csv\.gz: unreadable"):
        read_ticks(tmp_path / "t.csv.gz")


# --- a bad file is read_ticks' TicksError, before any row is read ----------------------------------


def _error(read: object, path: Path) -> str:
    with pytest.raises(TicksError) as exc:
        read(path)  # type: ignore[operator]
    return str(exc.value)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("nope.csv", None),
        ("nope.csv.gz", None),
        ("nope.parquet", None),
        ("t.csv", ""),
        ("t.csv", "ts,source,pair\n1,a,B\n"),
        ("t.csv", "ts,source,pair,price,colour\n1,a,B,2,red\n"),
        ("t.csv.gz", b"not gzip"),
        ("t.csv", b"\xff\xfets,source\n"),
        ("t.parquet", H + "1,a,B,2,,,\n"),
    ],
    ids=[
        "missing",
        "missing-gz",
        "missing-parquet",
        "empty",
        "no-price",
        "unknown",
        "not-gz",
        "not-utf8",
        "not-parquet",
    ],
)
def test_a_bad_file_is_read_ticks_error_as_the_stream_is_made(
    tmp_path: Path, name: str, body: str | bytes | None
) -> None:
    path = tmp_path / name
    if isinstance(body, str):
        path.write_text(body)
    elif isinstance(body, bytes):
        path.write_bytes(body)
    assert _error(TickStream, path) == _error(read_ticks, path)


def _parquet(path: Path, **columns: object) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base: dict[str, object] = {"ts": [float(i) for i in range(10)], "source": ["a"] * 10, "pair": ["B"] * 10}
    pq.write_table(pa.table(base | {"price": [1.0] * 10} | columns), path, row_group_size=5)
    return path


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        ({"ts": [*range(7), None, 8.0, 9.0]}, "row 8: ts is absent (null)"),
        ({"ts": [*range(8), float("nan"), 9.0]}, "row 9: ts must be a finite number"),
        ({"pair": ["B"] * 6 + [None] * 4}, "row 7: pair is absent (null)"),
        ({"price": [1.0] * 9 + [None]}, "row 10: price is absent (null)"),
    ],
    ids=["null-ts", "nan-ts", "null-pair", "null-price"],
)
def test_a_bad_parquet_row_in_a_later_piece_is_named_by_its_row_in_the_file(
    tmp_path: Path, columns: dict, says: str
) -> None:
    path = _parquet(tmp_path / "t.parquet", **columns)
    pieces: list[Ticks] = []
    with pytest.raises(TicksError) as exc:
        pieces.extend(TickStream(path, rows=5))
    assert len(pieces) == 1 and str(exc.value) == f"{path}: {says}" == _error(read_ticks, path)


@pytest.mark.parametrize(
    "columns",
    [{"price": ["1.0"] * 10}, {"source": list(range(10))}, {"ts": [True] * 10}, {"colour": ["red"] * 10}],
    ids=["string-price", "int-source", "bool-ts", "unknown-column"],
)
def test_a_parquet_column_of_the_wrong_type_is_an_error_before_any_row_is_read(tmp_path: Path, columns: dict) -> None:
    path = _parquet(tmp_path / "t.parquet", **columns)
    assert _error(TickStream, path) == _error(read_ticks, path)


def test_an_empty_parquet_files_wrong_column_is_an_error_too(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"ts": pa.array([], pa.float64()), "source": pa.array([], pa.string()), "pair": pa.array([], pa.string())}
    pq.write_table(pa.table(columns | {"price": pa.array([], pa.string())}), tmp_path / "t.parquet")
    assert (
        "column price is string"
        in _error(TickStream, tmp_path / "t.parquet")
        == _error(read_ticks, tmp_path / "t.parquet")
    )


def test_without_pyarrow_a_parquet_stream_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _parquet(tmp_path / "t.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert "pip install 'markd[parquet]'" in _error(TickStream, path) == _error(read_ticks, path)


def test_rows_must_be_positive(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(H)
    with pytest.raises(ValueError, match="rows must be at least 1"):
        TickStream(tmp_path / "t.csv", rows=0)


# --- progress ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_fraction_grows_with_the_pieces_read_to_one_at_the_end(tmp_path: Path, name: str) -> None:
    write_ticks(tmp_path / name, _ticks(40_000))
    stream = TickStream(tmp_path / name, rows=4000)
    assert stream.fraction == 0.0
    seen = [stream.fraction for _ in stream]
    assert len(seen) == 10 and seen == sorted(seen) and 0 < seen[0] < 0.8 and stream.fraction == 1.0
    if name == "t.parquet":
        assert seen == pytest.approx([(i + 1) / 10 for i in range(10)])


# --- memory ---------------------------------------------------------------------------------------


def test_a_parquet_stream_holds_about_a_piece_not_the_bytes_read_so_far(tmp_path: Path) -> None:
    """pyarrow's pre-buffering keeps the bytes of every row group read until the file is closed: a month
    of ticks (155 million rows) would grow to the file's size. Arrow's memory here is pyarrow's own count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 500_000
    nan = np.full(n, np.nan)
    rng = np.random.default_rng(3)
    write_ticks(
        tmp_path / "t.parquet", Ticks(KEYS, rng.integers(0, 5, n), 1.7e9 + rng.random(n), rng.random(n), nan, nan, nan)
    )
    path = _row_groups_of(tmp_path / "t.parquet", 5_000)
    assert pq.ParquetFile(path).num_row_groups == 100
    before = pa.total_allocated_bytes()
    held = [pa.total_allocated_bytes() - before for _ in TickStream(path, rows=5_000)]
    assert len(held) == 100 and max(held) < path.stat().st_size / 4
