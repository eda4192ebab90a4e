"""The ticks file reader: pandas' columnar path and the line-by-line path give one answer, a bad row is
one clear error naming its line and column, and a .parquet file reads as its CSV twin does."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import ticks as ticks_module
from oracle.cli import main
from oracle.ticks import Ticks, TicksError, read_ticks, write_ticks

CONFIG = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
H = "ts,source,pair,price,bid,ask,venue_ts\n"


def _same(a: Ticks, b: Ticks) -> bool:
    columns = zip(a._columns(), b._columns(), strict=True)
    return a.keys == b.keys and all(np.array_equal(x, y, equal_nan=True) for x, y in columns)


def _same_rows(a: Ticks, b: Ticks) -> bool:
    """The same rows in the same order, whatever the numbering of the keys (first seen in each file)."""
    names = [a.keys[f] for f in a.feed.tolist()] == [b.keys[f] for f in b.feed.tolist()]
    columns = zip(a._columns()[1:], b._columns()[1:], strict=True)
    return names and all(np.array_equal(x, y, equal_nan=True) for x, y in columns)


def _outcome(read: Callable[[Path], Ticks], path: Path) -> Ticks | str:
    try:
        return read(path)
    except TicksError as exc:
        return f"error: {exc}"


def _agree(path: Path) -> Ticks | str:
    """read_ticks (columnar, falling back to lines) gives what the line-by-line reader alone gives."""
    fast, lines = _outcome(read_ticks, path), _outcome(ticks_module._read_rows, path)
    if isinstance(fast, str) or isinstance(lines, str):
        assert fast == lines
    else:
        assert _same(fast, lines)
    return fast


def _ticks(n: int = 40, extra: bool = True) -> Ticks:
    rng = np.random.default_rng(7)
    keys = (("pyth", "BTC-USD"), ("okx", "BTC-USDT"), ("kraken", "BTC-USD"))
    feed = rng.integers(0, 3, n)
    maybe = lambda: np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 100)  # noqa: E731
    ts = np.round(1.7e9 + rng.random(n) * 50, 1)  # equal ts: the sort must keep the file order
    confidence, last = (maybe(), maybe()) if extra else (np.empty(0), np.empty(0))
    return Ticks(keys, feed, ts, rng.random(n) * 3e4, maybe(), maybe(), maybe(), confidence, last)


# --- one answer from both paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        H + "1,a,B,2,,,\n2,b,B,3,1,4,1.5\n",
        H + "1,a,B,2,,,\n\n2,a,B,3,,,\n",  # a blank line is skipped
        H + "1,a,B,2,,,\n   \n",  # a line of spaces is a bad row
        H + "1,a,B,2\n2,a,B,3,,,\n",  # a short row: the optional columns are absent
        H + "1,a\n",  # too short: no pair
        H + "1,a,B,2,,,,9\n",  # a longer row: the extra field is ignored
        H + "1,a,B,2,,,\n2,a,B,3,,,,9\n",
        H + "1,,B,2,,,\n",  # an empty source name
        H + "1,a,B,nan,,,\n",  # Python's float reads nan
        H + "1,a,B,1_000,,,\n",  # and 1_000
        H + "1,a,B,NA,,,\n",  # but not NA
        H + "1,a,B,,,,\n",  # an empty price
        H + ",a,B,2,,,\n",  # an empty ts
        H + "inf,a,B,2,,,\n",
        H + "1,a,B,abc,,,\n",
        H + "1,a,B,2,x,,\n",
        H + '1,"a,b",B,2,,,\n',  # a quoted name with a comma
        H + "1,NA,null,2,,,\n",  # names that look like missing values are names
        H.replace("\n", "\r\n") + "1,a,B,2,,,\r\n",
        " ts , source,pair,price\n1,a,B,2\n",  # spaces around the header's names
        "price,pair,ts,source,last,confidence\n2,B,1,a,2.5,0.1\n",  # any column order
        "ts,source,pair,price,price\n1,a,B,2,3\n",  # a repeated column: its first one counts
        H,  # a header alone: no rows
        "",
        "ts,source,pair\n1,a,B\n",
        "\ufeff" + H + "1,a,B,2,,,\n",  # a byte order mark is not part of the name
        H + "1.7e9,a,B,0.1000000000000000055511151231257827,,,\n",  # more digits than a double holds
    ],
)
def test_both_paths_give_one_answer(tmp_path: Path, body: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(body, encoding="utf-8")
    _agree(path)
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(body.encode()))
    assert str(_outcome(read_ticks, gz)).replace("t.csv.gz", "t.csv") == str(_outcome(read_ticks, path))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=30))
def test_every_float_reads_back_as_pythons_float(tmp_path_factory: pytest.TempPathFactory, prices: list[float]) -> None:
    path = tmp_path_factory.mktemp("f") / "t.csv"
    text = "".join(f"{i},a,B,{p!r},{p:.17e},{p:.25g},\n" for i, p in enumerate(prices))
    path.write_text(H + text)
    got = _agree(path)
    assert isinstance(got, Ticks)
    assert got.price.tolist() == prices and got.bid.tolist() == prices and got.ask.tolist() == prices


def test_a_well_formed_file_never_needs_the_line_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = _ticks()
    for name in ("t.csv", "t.csv.gz"):
        write_ticks(tmp_path / name, ticks)
    expected = {name: ticks_module._read_rows(tmp_path / name) for name in ("t.csv", "t.csv.gz")}

    def refuse(p: Path) -> Ticks:
        raise AssertionError(f"{p} went through the line-by-line reader")

    monkeypatch.setattr(ticks_module, "_read_rows", refuse)
    for name, want in expected.items():
        got = read_ticks(tmp_path / name)
        assert _same(got, want) and not np.isnan(got.confidence).all() and not np.isnan(got.last).all()


# --- a bad row names its line and column ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (H + "1,a,B,2,,,\n2,a,B,abc,,,\n", "t.csv:3: price 'abc' is not a number"),
        (H + "1,a,B,2,,,\n2,a,B,2,1,zz,\n", "t.csv:3: ask 'zz' is not a number"),
        (H + "1,a\n", "t.csv:2: pair is missing (the row has 2 fields)"),
        (H + "1,a,B,,,,\n", "t.csv:2: price is empty"),
        (H + "nan,a,B,1,,,\n", "t.csv:2: ts must be a finite number"),
        ("ts,source,pair\n1,a,B\n", "header needs ts,source,pair,price (missing ['price'], unknown [])"),
        ("ts,source,pair,price,colour\n", "unknown ['colour']"),
        ("", "t.csv: empty file"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_line_and_column(tmp_path: Path, body: str, says: str) -> None:
    (tmp_path / "t.csv").write_text(body)
    with pytest.raises(TicksError) as exc:
        read_ticks(tmp_path / "t.csv")
    assert says in str(exc.value)


def test_replay_of_a_bad_row_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv.gz").write_bytes(
        gzip.compress((H + "1,coinbase,BTC-USD,1,,,\n2,kraken,BTC-USD,x,,,\n").encode())
    )
    (tmp_path / "s.toml").write_text(f'ticks = "t.csv.gz"\nconfig = "{CONFIG}"\n')
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t.csv.gz:3: price 'x' is not a number" in err and "Traceback" not in err


def test_a_truncated_gzip_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    write_ticks(tmp_path / "t.csv.gz", _ticks(2000))
    data = (tmp_path / "t.csv.gz").read_bytes()
    (tmp_path / "t.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(TicksError, match=r"t\.csv\.gz: unreadable"):
        read_ticks(tmp_path / "t.csv.gz")


# --- Parquet ---------------------------------------------------------------------------------------


def test_parquet_written_by_markd_reads_back_as_its_csv_twin(tmp_path: Path) -> None:
    write_ticks(tmp_path / "t.csv", _ticks())
    from_csv = read_ticks(tmp_path / "t.csv")  # the CSV rounds to ten digits: compare with what it holds
    assert write_ticks(tmp_path / "t.parquet", from_csv) == len(from_csv)
    assert _same_rows(read_ticks(tmp_path / "t.parquet"), from_csv)


def test_parquet_of_many_row_groups_reads_back_as_one(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    write_ticks(tmp_path / "t.csv", _ticks(200))
    from_csv = read_ticks(tmp_path / "t.csv")
    write_ticks(tmp_path / "t.parquet", from_csv)
    pq.write_table(pq.read_table(tmp_path / "t.parquet"), tmp_path / "u.parquet", row_group_size=7)
    assert pq.ParquetFile(tmp_path / "u.parquet").num_row_groups > 20  # each with its own dictionary of names
    assert _same_rows(read_ticks(tmp_path / "u.parquet"), from_csv)


def test_parquet_written_by_pandas_reads_back_as_the_csv_does(tmp_path: Path) -> None:
    import pandas as pd

    write_ticks(tmp_path / "t.csv", _ticks(extra=False))
    frame = pd.read_csv(tmp_path / "t.csv", dtype={"source": "category"})  # a categorical: a dictionary column
    frame["ts"] = frame["ts"].astype("float32").astype("float64")  # keep ts exact through the int cast below
    frame["price"] = frame["price"].round().astype("int64")  # integers are numbers too
    frame.to_csv(tmp_path / "u.csv", index=False)
    frame.to_parquet(tmp_path / "u.parquet", index=False)
    assert _same(read_ticks(tmp_path / "u.parquet"), read_ticks(tmp_path / "u.csv"))


def test_synth_writes_parquet(tmp_path: Path) -> None:
    argv = ["synth", "--markets", "BTC-USD=30000", "--sources", "coinbase,kraken", "--seconds", "5"]
    assert main([*argv, "--out", str(tmp_path / "t.parquet")]) == 0
    assert main([*argv, "--out", str(tmp_path / "t.csv")]) == 0
    parquet, csv = read_ticks(tmp_path / "t.parquet"), read_ticks(tmp_path / "t.csv")
    assert parquet.keys == csv.keys and len(parquet) == len(csv) == 10
    assert np.allclose(parquet.price, csv.price, rtol=1e-9, atol=0)  # the CSV's ten digits, Parquet's exact


def _parquet(path: Path, **columns: object) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    base: dict[str, object] = {"ts": [1.0, 2.0], "source": ["a", "a"], "pair": ["B", "B"], "price": [1.0, 2.0]}
    pq.write_table(pa.table({k: v for k, v in (base | columns).items() if v is not None}), path)
    return path


@pytest.mark.parametrize(
    ("columns", "says"),
    [
        ({"price": ["1.0", "2.0"]}, "column price is string, expected numbers (integers or floats)"),
        ({"ts": [True, False]}, "column ts is bool, expected numbers"),
        ({"source": [1, 2]}, "column source is int64, expected strings"),
        ({"price": [1.0, None]}, "row 2: price is absent (null)"),
        ({"pair": ["B", None]}, "row 2: pair is absent (null)"),
        ({"ts": [1.0, float("inf")]}, "row 2: ts must be a finite number"),
        ({"price": None}, "header needs ts,source,pair,price (missing ['price'], unknown [])"),
        ({"colour": ["red", "blue"]}, "unknown ['colour']"),
    ],
    ids=["string-price", "bool-ts", "int-source", "null-price", "null-pair", "inf-ts", "no-price", "unknown-column"],
)
def test_a_bad_parquet_file_is_one_error_naming_the_column(tmp_path: Path, columns: dict, says: str) -> None:
    path = _parquet(tmp_path / "t.parquet", **columns)
    with pytest.raises(TicksError) as exc:
        read_ticks(path)
    assert str(exc.value).startswith(f"{path}: ") and says in str(exc.value)


def test_a_parquet_files_empty_optional_cells_are_absent(tmp_path: Path) -> None:
    got = read_ticks(_parquet(tmp_path / "t.parquet", bid=[None, 1.5], last=[2.5, None]))
    assert np.array_equal(got.bid, [np.nan, 1.5], equal_nan=True)
    assert np.array_equal(got.last, [2.5, np.nan], equal_nan=True)


def test_not_parquet_is_unreadable_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "t.parquet").write_text(H + "1,a,B,2,,,\n")
    with pytest.raises(TicksError, match=r"t\.parquet: unreadable as Parquet"):
        read_ticks(tmp_path / "t.parquet")
    with pytest.raises(TicksError, match=r"nope\.parquet: no such file"):
        read_ticks(tmp_path / "nope.parquet")


def test_without_pyarrow_parquet_exits_2_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _parquet(tmp_path / "t.parquet")
    (tmp_path / "s.toml").write_text(f'ticks = "t.parquet"\nconfig = "{CONFIG}"\n')
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an import of it now fails, as when not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'markd[parquet]'" in err and "Traceback" not in err
    argv = ["synth", "--markets", "BTC-USD=30000", "--sources", "coinbase", "--out", str(tmp_path / "u.parquet")]
    assert main(argv) == 2
    assert "pip install 'markd[parquet]'" in capsys.readouterr().err


def test_a_recording_to_parquet_is_refused(tmp_path: Path) -> None:
    from oracle.clock import VirtualClock
    from oracle.ticks import TicksWriter

    with pytest.raises(TicksError, match="a recording is CSV"):
        TicksWriter(tmp_path / "t.parquet", VirtualClock(0.0))


def test_a_replay_of_the_parquet_twin_gives_the_same_marks_and_disputes(tmp_path: Path) -> None:
    from oracle.replay import run_scenario

    argv = ["synth", "--out", str(tmp_path / "t.csv"), "--markets", "BTC-USD=30000", "--sources", "coinbase,kraken,okx"]
    assert main([*argv, "--seconds", "300"]) == 0
    write_ticks(tmp_path / "t.parquet", read_ticks(tmp_path / "t.csv"))
    sources = ", ".join(f'{{ source = "{s}", pair = "BTC-USD" }}' for s in ("coinbase", "kraken", "okx"))
    kinds = "".join(f'[sources.{s}]\nkind = "{s}"\n' for s in ("coinbase", "kraken", "okx"))
    (tmp_path / "c.toml").write_text(f"[service]\ntick_ms = 1000\n{kinds}[markets.BTC-USD]\nsources = [{sources}]\n")
    attack = '[[attack]]\nkind = "spike"\nsources = ["okx"]\npair = "BTC-USD"\nstart_s = 60\nduration_s = 60\n'
    for name in ("t.csv", "t.parquet"):
        (tmp_path / f"{name}.toml").write_text(f'ticks = "{name}"\nconfig = "c.toml"\n{attack}magnitude = 0.3\n')
        run_scenario(tmp_path / f"{name}.toml", tmp_path / f"out-{name}", html=False)
    for out in ("marks.csv", "disputes.csv"):
        assert (tmp_path / "out-t.csv" / out).read_bytes() == (tmp_path / "out-t.parquet" / out).read_bytes()
    assert (tmp_path / "out-t.csv" / "marks.csv").read_text().count("\n") > 100  # marks to compare


@pytest.mark.parametrize("name", ["ticks.csv", "ticks.csv.gz"])
def test_names_with_commas_and_quotes_are_written_so_that_they_read_back(tmp_path, name):
    """A source or pair name holding a comma or a quote is quoted as CSV quotes it (unquoted, the
    row would have one column too many and the file could not be read back)."""
    from oracle.clock import VirtualClock
    from oracle.models import Quote
    from oracle.ticks import TicksWriter

    keys = (("a,b", 'X"Y'), ("plain", "P-USD"))
    nan = np.full(4, np.nan)
    ticks = Ticks(keys, np.array([0, 1, 0, 1]), 1.7e9 + np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]), nan, nan, nan)
    write_ticks(tmp_path / name, ticks)
    back = read_ticks(tmp_path / name)
    assert back.keys == keys and back.price.tolist() == [1.0, 2.0, 3.0, 4.0]
    with TicksWriter(tmp_path / f"rec-{name}", VirtualClock(0.0)) as rec:  # `markd record`
        rec.write(Quote("a,b", 'X"Y', 5.0, 1.7e9))
    assert read_ticks(tmp_path / f"rec-{name}").keys == (("a,b", 'X"Y'),)


def test_with_keys_renumbers_the_rows_over_any_list_that_names_their_keys():
    t = _ticks(12)
    names = [t.keys[f] for f in t.feed.tolist()]
    extended = t.with_keys((*t.keys, ("x", "Y-USD")))
    assert np.array_equal(extended.feed, t.feed)  # an extension keeps the numbers
    shuffled = t.with_keys((("x", "Y-USD"), *reversed(t.keys)))
    assert [shuffled.keys[f] for f in shuffled.feed.tolist()] == names
    assert np.array_equal(shuffled.price, t.price)
    with pytest.raises(ValueError, match="name every key"):
        t.with_keys(t.keys[1:])
