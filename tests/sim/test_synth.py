from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from oracle.sim.synth import Model, SynthError, rounds, run_synth, synth_columns, synth_ticks
from oracle.ticks import HEADER, Ticks, write_ticks

SIX = ["coinbase", "kraken", "bitstamp", "binance:USDT", "okx:USDT", "bybit:USDT"]


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        assert f.readline().strip() == ",".join(HEADER)
        f.seek(0)
        return list(csv.DictReader(f))


def test_synth_writes_a_valid_sorted_ticks_file(tmp_path: Path) -> None:
    out = tmp_path / "ticks.csv"
    n = synth_ticks(out, {"BTC-USD": 30_000.0, "USDT-USD": 1.0}, ["coinbase", "binance:BTC-USDT"], 60, 1, 7)
    rows = _rows(out)
    assert n == len(rows) == 2 * 2 * 60
    ts = [float(r["ts"]) for r in rows]
    assert ts == sorted(ts)
    assert {(r["source"], r["pair"]) for r in rows} == {
        ("coinbase", "BTC-USD"),
        ("coinbase", "USDT-USD"),
        ("binance", "BTC-USDT"),
        ("binance", "USDT-USD"),
    }
    for r in rows:
        assert float(r["bid"]) < float(r["price"]) < float(r["ask"])
        assert 0 < float(r["ts"]) - float(r["venue_ts"]) < 1.0  # received shortly after the venue sent it


def test_synth_is_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{x}.csv" for x in "abc")
    synth_ticks(a, {"ETH-USD": 2_000.0}, ["kraken", "okx"], 30, 0.5, seed=3)
    synth_ticks(b, {"ETH-USD": 2_000.0}, ["kraken", "okx"], 30, 0.5, seed=3)
    synth_ticks(c, {"ETH-USD": 2_000.0}, ["kraken", "okx"], 30, 0.5, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_synth_gz_holds_the_same_rows(tmp_path: Path) -> None:
    args = ({"SOL-USD": 20.0}, ["coinbase", "kraken"], 20, 1, 1)
    synth_ticks(tmp_path / "t.csv", *args)
    synth_ticks(tmp_path / "t.csv.gz", *args)
    assert _rows(tmp_path / "t.csv.gz") == _rows(tmp_path / "t.csv")


def test_usdt_quotes_are_the_market_divided_by_the_quote_rate() -> None:
    model = Model(noise_bps=0.0, bias_bps=0.0, quote_rates={"USDT-USD": 1.0005})
    ticks = synth_columns({"BTC-USD": 30_000.0}, ["coinbase", "binance:USDT"], 10, 1, 5, model=model)
    pair = np.array([ticks.keys[i][1] for i in ticks.feed])
    by_venue_ts = {p: ticks.price[pair == p][np.argsort(ticks.venue_ts[pair == p])] for p in ("BTC-USD", "BTC-USDT")}
    np.testing.assert_allclose(by_venue_ts["BTC-USDT"] * 1.0005, by_venue_ts["BTC-USD"], rtol=1e-12)


def test_a_day_of_one_second_ticks_for_six_venues_writes_every_row(tmp_path: Path) -> None:
    # Its speed is bench/replay.py's to measure (it writes this very file): no timing asserted here.
    n = synth_ticks(
        tmp_path / "day.csv",
        {"BTC-USD": 30_000.0},
        SIX,
        86_400,
        1,
        7,
        quote_rates={"USDT-USD": 1.0005},
    )
    assert n == 518_400


def _feed_rows(ticks: Ticks, source: str, pair: str) -> np.ndarray:
    rows = ticks.feed == ticks.keys.index((source, pair))
    return np.column_stack([ticks.ts[rows], ticks.venue_ts[rows], ticks.price[rows], ticks.bid[rows]])


def test_adding_a_market_or_a_source_leaves_the_others_numbers_alone() -> None:
    # walk.rng_for keys randomness by name, not by call order (its docstring's promise).
    small = synth_columns({"BTC-USD": 30_000.0}, ["kraken"], 20, 1, 9)
    big = synth_columns({"ETH-USD": 2_000.0, "BTC-USD": 30_000.0}, ["coinbase", "kraken"], 20, 1, 9)
    np.testing.assert_array_equal(_feed_rows(big, "kraken", "BTC-USD"), _feed_rows(small, "kraken", "BTC-USD"))


def test_a_source_never_quotes_a_coin_in_itself() -> None:
    ticks = synth_columns({"BTC-USD": 30_000.0, "USDT-USD": 1.0}, ["kraken", "binance:USDT"], 5, 1, 1)
    assert list(ticks.keys) == [
        ("kraken", "BTC-USD"), ("kraken", "USDT-USD"), ("binance", "BTC-USDT"),
    ]  # fmt: skip


def test_a_quote_currency_without_a_rate_is_an_error() -> None:
    with pytest.raises(SynthError, match="EUR-USD"):
        synth_columns({"BTC-USD": 30_000.0}, ["binance:EUR"], 10, 1, 1)


def test_a_usd_stablecoin_quote_defaults_to_its_peg() -> None:
    model = Model(noise_bps=0.0, bias_bps=0.0, spread_bps=0.0)
    pegged = synth_columns({"BTC-USD": 30_000.0}, ["coinbase", "binance:USDT"], 10, 1, 1, model=model)
    given = synth_columns(
        {"BTC-USD": 30_000.0}, ["coinbase", "binance:USDT"], 10, 1, 1,
        model=Model(noise_bps=0.0, bias_bps=0.0, spread_bps=0.0, quote_rates={"USDT-USD": 1.0}),
    )  # fmt: skip
    assert list(pegged.keys) == [("coinbase", "BTC-USD"), ("binance", "BTC-USDT")]
    assert np.array_equal(pegged.price, given.price)
    by_feed = [pegged.price[pegged.feed == i] for i in range(2)]
    assert np.allclose(by_feed[0], by_feed[1])  # no bias, no noise: USDT at par quotes the USD price


def test_the_readme_example_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's and --help's example, verbatim but for the file and a shorter run."""
    out = tmp_path / "F.csv"
    argv = ["--out", str(out), "--markets", "BTC-USD=30000", "--sources", "coinbase,kraken,binance:USDT"]
    assert run_synth([*argv, "--seconds", "60"]) == 0
    assert {r["pair"] for r in _rows(out)} == {"BTC-USD", "BTC-USDT"}


def test_cli_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv.gz"
    argv = [
        "--out",
        str(out),
        "--markets",
        "BTC-USD=30000,ETH-USD=2000",
        "--sources",
        "coinbase,kraken,binance:USDT",
        "--seconds",
        "10",
        "--interval",
        "1",
        "--seed",
        "7",
        "--start",
        "1700000000",
        "--quote-rates",
        "USDT-USD=1.0005",
        "--vol",
        "BTC-USD=0.5",
    ]
    assert run_synth(argv) == 0
    rows = _rows(out)
    assert len(rows) == 3 * 2 * 10
    assert float(rows[0]["venue_ts"]) >= 1_700_000_000
    assert "wrote 60 ticks" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--markets", "BTC-USD=30000", "--sources", "coinbase"], "--out"),
        (["--out", "x.csv", "--markets", "BTC-USD", "--sources", "coinbase"], "NAME=NUMBER"),
        (["--out", "x.csv", "--markets", "BTC-USD=abc", "--sources", "coinbase"], "not a number"),
        (["--out", "x.csv", "--markets", "BTC=1", "--sources", "coinbase"], "BASE-QUOTE"),
        (["--out", "x.csv", "--markets", "BTC-USD=1", "--sources", "binance:BTC-"], "NAME:QUOTE"),
        (["--out", "x.csv", "--markets", "BTC-USD=1", "--sources", "binance:EUR"], "--quote-rates EUR-USD"),
        (
            ["--out", "x.csv", "--markets", "BTC-USD=1", "--sources", "coinbase", "--interval", "0"],
            "interval",
        ),
    ],
)
def test_cli_bad_usage_exits_2_with_one_clear_message(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_synth(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()


def test_rounds_are_written_past_the_deviation_threshold_or_at_the_heartbeat() -> None:
    answers = np.array([100.0, 100.4, 100.49, 100.51, 100.6, 100.0, 99.99, 100.1, 100.1, 100.1])
    # 0.5 % from the last round's answer, or 4 steps after it
    assert rounds(answers, 0.005, 4).tolist() == [0, 0, 0, 3, 3, 5, 5, 5, 5, 9]


def test_a_rounds_source_repeats_its_round_with_the_rounds_time_while_the_others_move() -> None:
    model = Model(vol=1.5, rounds={"chainlink": (0.005, 3600.0)})
    ticks = synth_columns({"BTC-USD": 30_000.0}, ["coinbase", "chainlink"], 1500, 1, 14, model=model)
    plain = synth_columns({"BTC-USD": 30_000.0}, ["coinbase"], 1500, 1, 14, model=Model(vol=1.5))
    cl = ticks.feed == ticks.keys.index(("chainlink", "BTC-USD"))
    price, venue_ts, ts = ticks.price[cl], ticks.venue_ts[cl], ticks.ts[cl]
    assert len(price) == 1500  # polled every second
    changes = np.flatnonzero(np.diff(price)) + 1
    assert 2 <= len(changes) < 60  # a few rounds in 25 minutes, silent for minutes between
    assert (np.diff(venue_ts)[np.diff(price) == 0] == 0).all()  # a repeated answer keeps its updatedAt
    assert (venue_ts <= ts).all() and (ts[changes] - venue_ts[changes] < 1).all()  # seen at the next poll
    moves = np.abs(price[changes] / price[changes - 1] - 1)
    assert (moves >= 0.005).all()
    assert np.isnan(ticks.bid[cl]).all() and np.isnan(ticks.ask[cl]).all()  # an answer, not a book
    cb = ticks.feed == ticks.keys.index(("coinbase", "BTC-USD"))
    assert np.array_equal(ticks.price[cb], plain.price)  # the other sources' numbers are unchanged


# --- perp sources: the walk x (1 + basis), each row a book with its last trade ----------------------


def test_a_perp_source_quotes_spot_times_its_basis_with_a_last_trade_at_the_bid_or_the_ask() -> None:
    model = Model(noise_bps=0.0, bias_bps=0.0, perps={"venue": 0.003, "binance_perp": -0.001})
    sources = ["coinbase", "venue:BTC-PERP", "binance_perp:USDT"]
    ticks = synth_columns({"BTC-USD": 30_000.0}, sources, 300, 1, 4, model=model)
    assert list(ticks.keys) == [("coinbase", "BTC-USD"), ("venue", "BTC-PERP"), ("binance_perp", "BTC-USDT")]
    spot, own, ext = (ticks.feed == i for i in range(3))
    np.testing.assert_allclose(ticks.price[own] / ticks.price[spot], 1.003, rtol=1e-12)  # the same walk
    np.testing.assert_allclose(ticks.price[ext] / ticks.price[spot], 0.999, rtol=1e-12)  # USDT at its peg
    for rows in (own, ext):
        at_bid, at_ask = ticks.last[rows] == ticks.bid[rows], ticks.last[rows] == ticks.ask[rows]
        assert (at_bid | at_ask).all() and 100 < at_ask.sum() < 200  # a trade hits one side or the other
    assert np.isnan(ticks.last[spot]).all()  # a spot venue's row has no last of its own


def test_perps_leave_the_other_sources_numbers_alone_and_only_they_write_last(tmp_path: Path) -> None:
    plain = synth_columns({"BTC-USD": 30_000.0}, ["kraken"], 20, 1, 9)
    model = Model(perps={"venue": 0.0})
    perps = synth_columns({"BTC-USD": 30_000.0}, ["kraken", "venue:BTC-PERP"], 20, 1, 9, model=model)
    np.testing.assert_array_equal(_feed_rows(perps, "kraken", "BTC-USD"), _feed_rows(plain, "kraken", "BTC-USD"))
    write_ticks(tmp_path / "plain.csv", plain)
    write_ticks(tmp_path / "perps.csv", perps)
    assert _header(tmp_path / "plain.csv") == list(HEADER)  # without perps, the file is as before
    assert _header(tmp_path / "perps.csv") == [*HEADER, "last"]


def _header(path: Path) -> list[str]:
    return path.read_text().splitlines()[0].split(",")


def test_cli_perps_writes_the_last_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.csv"
    argv = ["--out", str(out), "--markets", "BTC-USD=30000", "--sources", "coinbase,venue:BTC-PERP,okx_perp:USDT"]
    assert run_synth([*argv, "--seconds", "10", "--perps", "venue=0,okx_perp=0.003"]) == 0
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows if r["last"]} == {"venue", "okx_perp"}
    assert run_synth([*argv, "--perps", "bybit_perp=0.001"]) == 2
    assert "perps names ['bybit_perp'], which are not among the sources" in capsys.readouterr().err
    assert run_synth([*argv, "--perps", "venue=-1"]) == 2
    assert "basis must be a finite number above -1" in capsys.readouterr().err
