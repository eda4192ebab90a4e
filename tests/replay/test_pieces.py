"""A streamed replay gives byte-identical outputs to reading the whole table, whatever the piece size.

`markd replay` feeds both runs the ticks piece by piece (oracle/replay/pieces.py), each piece cut at
an instant, and attacks each piece on its own (`PieceAttacks`, freeze carrying the row it repeats).
Pinned here: the attacked pieces are `apply_and_check`'s table row for row; `in_time` cuts at instants
and refuses rows out of order; every scenario of the library at small pieces gives its golden outputs;
a ticks file (CSV, .csv.gz, Parquet) streamed gives what the same file read whole gives; a file out
of time order, or with a bad row deep inside, falls back to the whole read; and memory stays bounded.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

import oracle.replay
import oracle.replay.pieces
from oracle.cli import main
from oracle.models import Mark, Status
from oracle.publish import MemorySink
from oracle.replay import replay_loaded, replay_scenario, run_scenario
from oracle.replay.attacks import Attack, PieceAttacks, apply_and_check
from oracle.replay.pieces import NotInTimeOrder, TableSource, in_time
from oracle.replay.report import QuoteTrace
from oracle.replay.run import DISCARD
from oracle.replay.scenario import load_scenario
from oracle.sim.synth import synth_columns
from oracle.ticks import NotStreamable, Ticks, write_ticks

from .conftest import LIBRARY, SCENARIOS
from .golden import kept, outputs

NAN = math.nan
STREAMABLE = ("spike", "ramp", "freeze", "dropout", "skew", "duplicate")
PAIRS = ("X-USD", "Y-USD")
ROWS = (1, 3, 17, 10_000)  # rows a piece: one row, a few, some instants, the whole table
LUNA = SCENARIOS / "venus_luna_freeze.toml"  # synth ticks: LUNA-USD from five sources, one row a second each
LUNA_CONFIG = LUNA.with_name("venus_luna_freeze.markd.toml")
LUNA_SOURCES = ["binance", "kraken", "okx", "bybit", "chainlink"]
START = 1_700_000_000.0  # the synth ticks' first second


# ---- helpers ---------------------------------------------------------------------------------------


def random_ticks(rng: np.random.Generator) -> Ticks:
    """A sorted table of 4-6 keys over two pairs, ~2 rows an instant, NaN books and times in places."""
    every = [(s, p) for s in ("a", "b", "c") for p in PAIRS]
    keys = tuple(every[i] for i in rng.permutation(len(every))[: rng.integers(4, 7)])
    n = int(rng.integers(150, 400))
    ts = 1000.0 + np.sort(rng.integers(0, n // 2, n)) * 0.5
    price = 100.0 * np.exp(rng.normal(0.0, 0.01, n).cumsum())
    bid = np.where(rng.random(n) < 0.15, NAN, price - rng.uniform(0.0, 0.1, n))
    ask = np.where(rng.random(n) < 0.15, NAN, price + rng.uniform(0.0, 0.1, n))
    venue_ts = np.where(rng.random(n) < 0.3, NAN, ts - rng.uniform(0.0, 0.3, n))
    confidence = np.where(rng.random(n) < 0.5, NAN, rng.uniform(0.0, 0.2, n))
    last = np.where(rng.random(n) < 0.5, NAN, price * rng.uniform(0.99, 1.01, n))
    feed = rng.integers(0, len(keys), n).astype(np.intp)
    return Ticks(keys, feed, ts, price, bid, ask, venue_ts, confidence, last)


def random_attack(rng: np.random.Generator, span: float) -> Attack:
    """One attack of a streamable kind, its window anywhere in (or past) the table's span; a duplicate
    copies a, b or c under one or two names, perhaps ones that quote already (d quotes nothing)."""
    kind = str(rng.choice(STREAMABLE))
    if kind == "duplicate":
        origin = str(rng.choice(["a", "b", "c"]))
        aliases = rng.choice([s for s in "abcd" if s != origin], size=int(rng.integers(1, 3)), replace=False)
        sources = [origin, *map(str, aliases)]
    else:
        sources = [str(s) for s in rng.choice(list("abcd"), size=int(rng.integers(1, 3)), replace=False)]
    magnitude = {
        "spike": rng.uniform(-0.5, 1.0),
        "ramp": rng.uniform(-0.5, 1.0),
        "skew": rng.uniform(-3.0, 3.0),
        "duplicate": rng.choice([0.0, rng.uniform(-0.01, 0.01)]),
    }
    return Attack(
        kind=kind,  # type: ignore[arg-type]
        sources=sources,
        pair=str(rng.choice(PAIRS)),
        start_s=float(rng.uniform(0.0, span)),
        duration_s=float(rng.uniform(0.5, span)),
        magnitude=float(magnitude.get(kind, 0.0)),
    )


def attack(
    kind: str, sources: list[str], start_s: float, duration_s: float, magnitude: float = 0.0, pair: str = "X-USD"
) -> Attack:
    return Attack(kind=kind, sources=sources, pair=pair, start_s=start_s, duration_s=duration_s, magnitude=magnitude)  # type: ignore[arg-type]


def rows(parts: Iterable[Ticks]) -> tuple[list[tuple[str, str]], np.ndarray]:
    """The rows of consecutive tables: each row's (source, pair) by name (a piece may number its keys
    its own way), and every number column."""
    names: list[tuple[str, str]] = []
    values = []
    for t in parts:
        names += [t.keys[f] for f in t.feed.tolist()]
        values.append(np.column_stack([t.ts, t.price, t.bid, t.ask, t.venue_ts, t.confidence, t.last]))
    return names, np.concatenate(values) if values else np.zeros((0, 7))


def same_rows(a: Ticks, b: Ticks) -> bool:
    (a_names, a_values), (b_names, b_values) = rows([a]), rows([b])
    return a_names == b_names and np.array_equal(a_values, b_values, equal_nan=True)


def assert_same_rows(got: Iterable[Ticks], want: Iterable[Ticks]) -> None:
    got_names, got_values = rows(got)
    want_names, want_values = rows(want)
    assert got_names == want_names
    np.testing.assert_array_equal(got_values, want_values)  # exact, NaN == NaN


def streamed(
    ticks: Ticks, attacks: list[Attack], read: set[tuple[str, str]] | None, r: int
) -> tuple[list[Ticks], list[int]]:
    """The attacked pieces of `ticks` cut at instants from slices of `r` rows, and the attacks missed."""
    pieces = list(in_time(TableSource(ticks, rows=r)))
    applied = PieceAttacks(attacks, float(ticks.ts[0]), read)
    return [applied.apply(p) for p in pieces], applied.missed


def reads(ticks: Ticks) -> list[set[tuple[str, str]] | None]:
    """The `read` sets to check against: none given, every key, every key but the first."""
    return [None, set(ticks.keys), set(ticks.keys[1:])]


def pieces_fed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each piece a replay feeds its runs from now on (oracle.replay's `in_time`, spied on)."""
    sizes: list[int] = []

    def spy(pieces: Iterable[Ticks]) -> Iterator[Ticks]:
        for piece in in_time(pieces):
            sizes.append(len(piece))
            yield piece

    monkeypatch.setattr(oracle.replay, "in_time", spy)
    return sizes


def whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each scenario read whole from now on (oracle.replay's `scenario_ticks`, spied on)."""
    calls: list[Path] = []
    whole = oracle.replay.scenario_ticks

    def spy(loaded):
        calls.append(loaded.path)
        return whole(loaded)

    monkeypatch.setattr(oracle.replay, "scenario_ticks", spy)
    return calls


def set_piece_rows(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Pieces of `rows` rows: a table's slices (TableSource's default) and a file's (TickStream)."""
    monkeypatch.setattr(oracle.replay.pieces, "PIECE_ROWS", rows)
    monkeypatch.setattr(oracle.replay, "PIECE_ROWS", rows)


def never_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every replay reads its ticks whole (the fallback a file that cannot stream takes)."""

    def refuse(loaded):
        raise NotStreamable("this test reads the file whole")

    monkeypatch.setattr(oracle.replay, "ticks_source", refuse)


def luna_ticks(seconds: float = 5400, interval_s: float = 1.0) -> Ticks:
    """venus_luna_freeze's synth ticks (its seed), `seconds` of them: a row from each of 5 sources an interval."""
    return synth_columns({"LUNA-USD": 1.0}, LUNA_SOURCES, seconds, interval_s, 4, START)


def iso(offset_s: float) -> str:
    return datetime.fromtimestamp(START + offset_s, UTC).isoformat()


# Every streamable kind, timed from the window's first tick (~300 s into the ticks); a piece of 997 rows
# is ~200 s. The spike crosses a piece boundary; chainlink's quotes are duplicated onto by binance's,
# then frozen from 1200 s, six pieces in; a genuine ramp makes the reference run an attacked one too.
ATTACKS = """
[[attack]]
kind = "spike"
sources = ["binance"]
pair = "LUNA-USD"
start_s = 150
duration_s = 120
magnitude = 0.05

[[attack]]
kind = "ramp"
sources = ["kraken"]
pair = "LUNA-USD"
start_s = 300
duration_s = 1200
magnitude = 0.2

[[attack]]
kind = "dropout"
sources = ["okx"]
pair = "LUNA-USD"
start_s = 600
duration_s = 300

[[attack]]
kind = "skew"
sources = ["bybit"]
pair = "LUNA-USD"
start_s = 0
duration_s = 4000
magnitude = 2.0

[[attack]]
kind = "duplicate"
sources = ["binance", "chainlink"]
pair = "LUNA-USD"
start_s = 1000
duration_s = 400
magnitude = 0.001

[[attack]]
kind = "freeze"
sources = ["chainlink"]
pair = "LUNA-USD"
start_s = 1200
duration_s = 2000

[[attack]]
kind = "ramp"
genuine = true
sources = ["binance", "kraken", "okx", "bybit"]
pair = "LUNA-USD"
start_s = 2000
duration_s = 2000
magnitude = -0.3
"""
DELAY = """
[[attack]]
kind = "delay"
sources = ["okx"]
pair = "LUNA-USD"
start_s = 500
duration_s = 600
magnitude = 3.0
"""


def write_scenario(path: Path, ticks: Path, attacks: str = ATTACKS, window: bool = True) -> Path:
    """A scenario over the file `ticks` with venus_luna_freeze's config (both by absolute path)."""
    text = f'ticks = "{ticks}"\nconfig = "{LUNA_CONFIG}"\n'
    if window:
        text += f"\n[window]\nstart = {iso(300)}\nend = {iso(5000)}\n"
    path.write_text(text + attacks, encoding="utf-8")
    return path


def replayed(scenario: Path, out: Path) -> dict[str, bytes]:
    """run_scenario's kept outputs: marks.csv, disputes.csv and report.json without timings or path."""
    run_scenario(scenario, out, html=False)
    return outputs("pieces", out)


# ---- PieceAttacks and in_time ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_attacked_pieces_are_the_attacked_whole_table_row_for_row(seed):
    rng = np.random.default_rng(seed)
    ticks = random_ticks(rng)
    span = float(ticks.ts[-1] - ticks.ts[0])
    attacks = [random_attack(rng, span) for _ in range(int(rng.integers(1, 5)))]
    for read in reads(ticks):
        assert_streamed_as_whole(ticks, attacks, read)


def assert_streamed_as_whole(ticks: Ticks, attacks: list[Attack], read: set[tuple[str, str]] | None) -> list[int]:
    """The attacked pieces at every size of ROWS are apply_and_check's table, row for row, and miss
    the same attacks; returns those."""
    want, missed = apply_and_check(ticks, attacks, read)
    for r in ROWS:
        got, got_missed = streamed(ticks, attacks, read, r)
        assert_same_rows(got, [want])
        assert got_missed == missed, (r, read)
    return missed


def duplicate_then_freeze(ticks: Ticks) -> list[Attack]:
    """a's quotes copied under d, which quotes nothing else, then d frozen: the price it repeats is a copy."""
    return [attack("duplicate", ["a", "d"], 5, 40, 0.002), attack("freeze", ["d"], 30, 60)]


def late_freeze(ticks: Ticks) -> list[Attack]:
    """a, b and c's copies under b frozen late: the rows they repeat are many pieces back."""
    return [
        attack("duplicate", ["c", "b"], 0, 30),
        attack("freeze", ["a", "b"], 45, 100),
        attack("spike", ["a"], 50, 5, 0.5),
    ]


def misses(ticks: Ticks) -> list[Attack]:
    """No such source; after the last row; only the first key, which one `read` set leaves out."""
    (source, pair), far = ticks.keys[0], float(ticks.ts[-1] - ticks.ts[0]) + 1.0
    return [
        attack("spike", ["zz"], 0, 100, 0.1),
        attack("ramp", ["a", "b"], far, 5, 0.3),
        attack("dropout", [source], 0, 10, pair=pair),
    ]


@pytest.mark.parametrize("case", [duplicate_then_freeze, late_freeze, misses], ids=lambda f: f.__name__)
def test_freeze_carries_its_row_across_pieces_and_misses_are_the_whole_tables(case):
    frozen = []  # per table: whether the freeze changed rows (there was a carried row to get wrong)
    for seed in range(5):
        ticks = random_ticks(np.random.default_rng(100 + seed))
        attacks = case(ticks)
        for read in reads(ticks):
            missed = assert_streamed_as_whole(ticks, attacks, read)
            if case is misses:
                assert missed == ([0, 1, 2] if read is not None and ticks.keys[0] not in read else [0, 1])
        unfrozen = apply_and_check(ticks, [a for a in attacks if a.kind != "freeze"], None)[0]
        frozen.append(not same_rows(apply_and_check(ticks, attacks, None)[0], unfrozen))
    assert case is misses or any(frozen)


def test_in_time_cuts_at_instants_and_keeps_every_row():
    for seed in range(10):
        ticks = random_ticks(np.random.default_rng(seed))
        for r in ROWS:
            pieces = list(in_time(TableSource(ticks, rows=r)))
            assert all(len(p) for p in pieces)
            assert all(np.all(p.ts[1:] >= p.ts[:-1]) for p in pieces)
            assert all(a.ts[-1] < b.ts[0] for a, b in itertools.pairwise(pieces)), "an instant split"
            assert all(p.keys == ticks.keys for p in pieces)
            assert_same_rows(pieces, [ticks])
            np.testing.assert_array_equal(np.concatenate([p.feed for p in pieces]), ticks.feed)


def test_in_time_joins_an_instant_across_pieces_whose_keys_grow():
    keys = (("a", "X-USD"),)
    first = Ticks(keys, np.array([0, 0, 0]), np.array([1.0, 2.0, 2.0]), *(np.array([1.0, 2.0, 3.0]),) * 4)
    grown = (*keys, ("b", "X-USD"))
    second = Ticks(grown, np.array([1, 0]), np.array([2.0, 3.0]), *(np.array([4.0, 5.0]),) * 4)
    pieces = list(in_time([first, second]))
    assert [p.ts.tolist() for p in pieces] == [[1.0], [2.0, 2.0, 2.0], [3.0]]
    assert [p.keys for p in pieces] == [keys, grown, grown]
    assert_same_rows(pieces, [first, second])


def test_in_time_refuses_rows_out_of_order_within_and_across_pieces():
    ticks = random_ticks(np.random.default_rng(0))
    later = int(np.argmax(ticks.ts > ticks.ts[0]))  # the first row of the second instant
    swapped = np.arange(len(ticks))
    swapped[[0, later]] = swapped[[later, 0]]
    with pytest.raises(NotInTimeOrder):
        list(in_time([ticks.take(swapped)]))
    split = len(ticks) // 2
    with pytest.raises(NotInTimeOrder):
        list(in_time([ticks.take(slice(split, None)), ticks.take(slice(0, split))]))  # type: ignore[arg-type]
    with pytest.raises(NotInTimeOrder):  # a later piece one instant back: older than the held instant
        back = int(np.searchsorted(ticks.ts, ticks.ts[split - 1], side="left")) - 1
        list(in_time([ticks.take(slice(0, split)), ticks.take(slice(back, None))]))  # type: ignore[arg-type]


# ---- whole replays ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LIBRARY)
def test_every_scenario_at_small_pieces_gives_the_golden_outputs(name, tmp_path, monkeypatch):
    set_piece_rows(monkeypatch, 1009)
    fed = pieces_fed(monkeypatch)
    run_scenario(SCENARIOS / f"{name}.toml", tmp_path, html=False)
    assert len(fed) > 1 and max(fed) <= 2 * 1009, "the small pieces took effect"
    got, want = outputs(name, tmp_path), kept(name)
    assert got.keys() == want.keys()
    for file in want:
        assert got[file] == want[file], f"{name}/{file} differs from the golden file at pieces of 1009 rows"


@pytest.fixture(scope="module")
def luna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with venus_luna_freeze's ticks (27,000 rows) as t.csv, t.csv.gz and t.parquet."""
    folder = tmp_path_factory.mktemp("luna")
    ticks = luna_ticks()
    for name in ("t.csv", "t.csv.gz", "t.parquet"):
        write_ticks(folder / name, ticks)
    return folder


@pytest.mark.parametrize("ticks_name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_a_ticks_file_streamed_gives_what_it_gives_read_whole(ticks_name, luna, tmp_path, monkeypatch):
    scenario = write_scenario(tmp_path / "s.toml", luna / ticks_name)
    reads_whole = whole_reads(monkeypatch)
    with monkeypatch.context() as m:
        set_piece_rows(m, 997)
        fed = pieces_fed(m)
        got = replayed(scenario, tmp_path / "streamed")
    assert not reads_whole and len(fed) > 10, "streamed, in pieces"
    never_stream(monkeypatch)
    want = replayed(scenario, tmp_path / "whole")
    assert reads_whole == [scenario]
    assert got == want
    assert json.loads(want["report.json"])["markets"]["LUNA-USD"]["max_error_bps"] > 1, "the attacks moved the mark"


def test_a_delay_attack_reads_the_file_whole_and_gives_the_same_outputs(luna, tmp_path, monkeypatch):
    scenario = write_scenario(tmp_path / "s.toml", luna / "t.csv", ATTACKS + DELAY)
    reads_whole = whole_reads(monkeypatch)
    with monkeypatch.context() as m:
        set_piece_rows(m, 997)
        got = replayed(scenario, tmp_path / "fallback")
    assert reads_whole == [scenario]
    never_stream(monkeypatch)
    assert replayed(scenario, tmp_path / "whole") == got


def test_a_file_out_of_time_order_is_read_whole_to_the_sorted_files_outputs(luna, tmp_path, monkeypatch):
    ticks = luna_ticks()
    order = np.random.default_rng(1).permutation(len(ticks))
    order[np.argsort(ticks.ts[order], kind="stable")] = np.arange(len(ticks))  # rows of one instant keep their order
    write_ticks(tmp_path / "shuffled.csv", ticks.take(order))
    set_piece_rows(monkeypatch, 997)
    reads_whole = whole_reads(monkeypatch)
    want = replayed(write_scenario(tmp_path / "sorted.toml", luna / "t.csv"), tmp_path / "sorted")
    assert not reads_whole
    shuffled = write_scenario(tmp_path / "shuffled.toml", tmp_path / "shuffled.csv")
    got = replayed(shuffled, tmp_path / "shuffled")
    assert reads_whole == [shuffled]
    assert got == want


def test_a_bad_row_deep_in_the_file_is_named_after_pieces_already_ran(tmp_path, monkeypatch, capsys):
    ticks = tmp_path / "t.csv"
    write_ticks(ticks, luna_ticks(2000))
    lines = ticks.read_text().splitlines(keepends=True)
    ts, source, pair, _, *rest = lines[4999].split(",")  # line 5000
    lines[4999] = ",".join([ts, source, pair, "1.2.3", *rest])
    ticks.write_text("".join(lines))
    set_piece_rows(monkeypatch, 997)
    fed = pieces_fed(monkeypatch)
    out = tmp_path / "out"
    scenario = write_scenario(tmp_path / "s.toml", ticks, attacks="", window=False)
    assert main(["replay", str(scenario), "--out", str(out), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "t.csv:5000: price '1.2.3' is not a number" in err
    assert "Traceback" not in err
    assert len(fed) >= 3, "earlier pieces had run"
    assert not out.exists()
    assert not list(tmp_path.glob(".marks.csv.*.partial"))


def test_a_streamed_replay_holds_a_fraction_of_the_memory_of_a_whole_read(tmp_path, monkeypatch):
    """600,000 rows (10 a second for 60,000 s): the whole read holds them all (~84 MB traced), the
    stream a piece's worth and the per-tick series (~17 MB, nearly the same at 150,000 rows)."""
    set_piece_rows(monkeypatch, 10_000)
    warm_up = write_scenario(tmp_path / "small.toml", tmp_path / "small.csv", attacks="", window=False)
    write_ticks(tmp_path / "small.csv", luna_ticks(600))
    run_scenario(warm_up, tmp_path / "small", html=False)  # the lazy imports (pandas: ~30 MB) before tracing
    write_ticks(tmp_path / "t.csv", luna_ticks(60_000, 0.5))
    scenario = write_scenario(tmp_path / "s.toml", tmp_path / "t.csv", attacks="", window=False)

    def peak(out: str) -> int:
        tracemalloc.start()
        try:
            run_scenario(scenario, tmp_path / out, html=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    stream_peak = peak("streamed")
    never_stream(monkeypatch)
    whole_peak = peak("whole")
    print(f"peak traced memory: streamed {stream_peak / 1e6:.1f} MB, whole {whole_peak / 1e6:.1f} MB")
    assert (tmp_path / "streamed" / "marks.csv").read_bytes() == (tmp_path / "whole" / "marks.csv").read_bytes()
    assert stream_peak < whole_peak / 3


# ---- what streaming promises around the runs -------------------------------------------------------


def test_a_file_out_of_order_late_starts_marks_and_quotes_afresh_when_read_whole(luna, tmp_path, monkeypatch):
    """Rows out of order only near the end: pieces have already run, written marks.csv and gathered
    report.html's quotes when the stream finds out. The whole read starts both afresh: the same
    marks.csv as the sorted file, and each quote drawn once."""
    ticks = luna_ticks()
    order = np.arange(len(ticks))
    order[-40:] = order[-40:][::-1]  # the last 40 rows reversed: 8 instants out of order
    write_ticks(tmp_path / "late.csv", ticks.take(order))
    set_piece_rows(monkeypatch, 997)
    fed = pieces_fed(monkeypatch)
    want = replayed(write_scenario(tmp_path / "sorted.toml", luna / "t.csv", window=False), tmp_path / "sorted")
    streamed_pieces = len(fed)
    late = write_scenario(tmp_path / "late.toml", tmp_path / "late.csv", window=False)
    assert replayed(late, tmp_path / "late") == want
    assert len(fed) - streamed_pieces > 10, "pieces ran before the stream found the rows out of order"
    quotes = QuoteTrace({("binance", "LUNA-USD")})
    loaded = load_scenario(late)
    replay_scenario(loaded, marks=lambda: DISCARD, quotes=quotes)
    binance = quotes.of(("binance", "LUNA-USD"))
    assert binance is not None and len(binance[0]) == int(
        (ticks.feed == ticks.keys.index(("binance", "LUNA-USD"))).sum()
    )


def test_a_parquet_row_error_met_while_streaming_exits_2_naming_its_row(tmp_path, monkeypatch, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ticks = luna_ticks(2000)
    write_ticks(tmp_path / "t.parquet", ticks)
    table = pq.read_table(tmp_path / "t.parquet")
    ts = table.column("ts").to_pylist()
    ts[4999] = None  # row 5000: five pieces of 997 rows in
    table = table.set_column(table.schema.get_field_index("ts"), "ts", pa.array(ts, type=pa.float64()))
    pq.write_table(table, tmp_path / "t.parquet")
    set_piece_rows(monkeypatch, 997)
    fed = pieces_fed(monkeypatch)
    out = tmp_path / "out"
    scenario = write_scenario(tmp_path / "s.toml", tmp_path / "t.parquet", attacks="", window=False)
    assert main(["replay", str(scenario), "--out", str(out), "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "row 5000" in err and "ts" in err and "Traceback" not in err
    assert len(fed) >= 3 and not out.exists() and not list(tmp_path.glob(".marks.csv.*.partial"))


def test_marks_csv_gets_the_mode_a_file_opened_for_writing_gets(luna, tmp_path):
    """It is written beside DIR by mkstemp (mode 0600) and moved in: it must not stay private."""
    umask = os.umask(0o022)
    try:
        run_scenario(write_scenario(tmp_path / "s.toml", luna / "t.csv"), tmp_path / "out", html=False)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out" / "marks.csv").stat().st_mode) == 0o644


def test_the_bar_of_a_streamed_file_follows_how_much_of_it_was_read(luna, monkeypatch):
    set_piece_rows(monkeypatch, 997)
    loaded = load_scenario(write_scenario(luna / "bar.toml", luna / "t.csv", window=False))
    source = oracle.replay.ticks_source(loaded)
    seen: list[float] = []
    replay_loaded(loaded, source, seen.append, chunk=64, marks=DISCARD)  # a pass (and a report) every 64 ticks
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen.count(1.0) == 1
    assert len(set(seen)) > 5 and any(0.25 < f < 0.75 for f in seen), sorted(set(seen))


def test_a_replays_sink_keeps_no_history_of_the_marks_it_numbers():
    marks = [Mark("A-USD", 1.0 + i, 0.1, float(i), 0, Status.OK, 1, ("a",)) for i in range(3)]
    kept, not_kept = MemorySink(), MemorySink(history=False)
    assert [m.seq for m in not_kept.write(marks)] == [m.seq for m in kept.write(marks)] == [1, 2, 3]
    assert len(kept.history) == 3 and not not_kept.history
    assert not_kept.latest["A-USD"].seq == 3 and not_kept.next_seq("A-USD") == 4
