"""A chunked replay (level 0 aggregated for many ticks per pass, oracle.replay.chunked) gives exactly
what the daemon's tick path gives tick by tick: every scenario's marks.csv, disputes.csv, perp.csv and
report.json byte for byte, and the pieces it is made of step for step."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from oracle.aggregate import DEVIATION, Aggregator, run_block
from oracle.freeze import FreezeState, freeze_step, freeze_steps
from oracle.quotebook import QuoteBook, QuoteColumns
from oracle.replay import run_scenario
from oracle.replay.chunked import CHUNK_TICKS, FrameFill, tiled
from oracle.settings import Settings

from .conftest import LIBRARY, SCENARIOS

FILES = ("marks.csv", "disputes.csv", "perp.csv")


def _same_report(a: bytes, b: bytes) -> bool:
    ra, rb = json.loads(a), json.loads(b)
    for r in (ra, rb):
        for part in ("run", "reference"):
            r[part].pop("seconds"), r[part].pop("ticks_per_s")
    return bool(ra == rb)


@pytest.mark.parametrize("name", LIBRARY)
def test_every_scenario_replays_chunked_as_tick_by_tick(name, replayed, tmp_path):
    _, chunked = replayed[name]  # the library's session replays are chunked (the default)
    run_scenario(SCENARIOS / f"{name}.toml", tmp_path, html=False, chunk=1)
    for f in FILES:
        assert (tmp_path / f).exists() == (chunked / f).exists(), f
        if (tmp_path / f).exists():
            assert (chunked / f).read_bytes() == (tmp_path / f).read_bytes(), f"{name}/{f} differs"
    assert _same_report((chunked / "report.json").read_bytes(), (tmp_path / "report.json").read_bytes())


TWO_LEVELS = """\
[service]
tick_ms = 1000
[policy]
min_sources = 2
max_jump_bps = 1000
anchor_window_s = 60
anchor_deviation_bps = 200
[sources.coinbase]
kind = "coinbase"
[sources.kraken]
kind = "kraken"
[sources.okx]
kind = "okx"
[markets.USDC-USD]
sources = [{ source = "coinbase", pair = "USDC-USD" }, { source = "kraken", pair = "USDC-USD" },
           { source = "okx", pair = "USDC-USD" }]
[markets.BTC-USD]
sources = [{ source = "coinbase", pair = "BTC-USD" }, { source = "kraken", pair = "BTC-USD" },
           { source = "okx", pair = "BTC-USDC", convert = "USDC-USD" }]
"""
SPIKES = """
[[attack]]
kind = "spike"
sources = [{sources}]
pair = "{pair}"
start_s = {start}
duration_s = {duration}
magnitude = {magnitude}
"""


def test_disputes_in_two_levels_of_one_chunk_count_up_in_the_live_order(tmp_path):
    """USDC-USD (level 0) and BTC-USD (level 1, through USDC) open anchor disputes a few ticks apart,
    in either order, inside one chunk: the ids count up tick by tick, then level by level, as live.
    Chunk edges anywhere (1, a prime, the default, more than the whole run): the same outputs."""
    (tmp_path / "two.markd.toml").write_text(TWO_LEVELS)
    scenario = 'config = "two.markd.toml"\n[synth]\nmarkets = { "USDC-USD" = 1.0, "BTC-USD" = 30000.0 }\n'
    scenario += 'sources = ["coinbase", "kraken", "okx:BTC-USDC"]\nseconds = 600\nseed = 3\n'
    usdc, btc = ('"coinbase", "kraken", "okx"', "USDC-USD"), ('"coinbase", "kraken"', "BTC-USD")
    for (sources, pair), start, duration in ((usdc, 120, 30), (btc, 125, 40), (btc, 300, 20), (usdc, 305, 30)):
        scenario += SPIKES.format(sources=sources, pair=pair, start=start, duration=duration, magnitude=0.05)
    (tmp_path / "two.toml").write_text(scenario)
    runs = {}
    for chunk in (1, 7, CHUNK_TICKS, 100_000):
        outcome = run_scenario(tmp_path / "two.toml", tmp_path / str(chunk), html=False, chunk=chunk)
        files = [(tmp_path / str(chunk) / f).read_bytes() for f in ("marks.csv", "disputes.csv")]
        runs[chunk] = (files, [(d.id, d.market, d.opened_ts, d.closed_ts) for d in outcome.run.disputes])
    assert all(r == runs[1] for r in runs.values())
    assert [m for _, m, _, _ in runs[1][1]] == ["USDC-USD", "BTC-USD", "BTC-USD", "USDC-USD"]
    assert [i.rsplit(".", 1)[1] for i, _, _, _ in runs[1][1]] == ["1", "2", "3", "4"]


# --- the pieces -----------------------------------------------------------------------------------


def _random_inputs(rng: np.random.Generator, ticks: int, rows: int, cols: int):
    """Quotes that repeat (a stuck source), vanish (NaN) and come back, with peers that move."""
    base = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (ticks, rows, cols)), axis=0))
    stuck = rng.random((ticks, rows, cols)) < 0.6
    quoted = base.copy()
    for t in range(1, ticks):
        quoted[t] = np.where(stuck[t], quoted[t - 1], base[t])
    quoted[rng.random(quoted.shape) < 0.05] = np.nan
    price = quoted * np.where(rng.random(quoted.shape) < 0.1, 1.001, 1.0)
    live = ~np.isnan(quoted) & (rng.random(quoted.shape) < 0.9)
    return quoted, price, live


@pytest.mark.parametrize("seed", range(6))
def test_freeze_steps_advances_the_rule_as_one_step_a_tick(seed):
    rng = np.random.default_rng(seed)
    rows, cols = 3, 5
    need = rng.integers(0, 4, rows)
    frac = rng.choice([0.0005, 0.002, 0.01], (rows, cols))
    one, many = FreezeState.start(need, frac), FreezeState.start(need, frac)
    frozen = []
    for chunk in (1, 9, 40, 13):  # consecutive chunks: the state carries over between them
        quoted, price, live = _random_inputs(rng, chunk, rows, cols)
        want = np.stack([freeze_step(one, quoted[t], price[t], live[t]) for t in range(chunk)])
        got = freeze_steps(many, quoted, price, live)
        assert np.array_equal(got, want)
        for f in ("last", "ref", "over", "moved"):
            assert np.array_equal(getattr(many, f), getattr(one, f), equal_nan=True), f
        assert many.inputs == one.inputs
        frozen.append(want)
    seen = np.concatenate(frozen)
    assert seen.any() and not seen.all()  # the rule froze some cells and not others


def test_the_frames_are_the_book_before_each_tick():
    rng = np.random.default_rng(3)
    slots, ticks, n = 5, 30, 80
    ts = np.sort(rng.random(n) * ticks)
    slot, tick = rng.integers(0, slots, n), np.floor(ts).astype(np.intp)
    last = {(s, k): i for i, (s, k) in enumerate(zip(slot.tolist(), tick.tolist(), strict=True))}
    keep = np.array(sorted(last.values()))  # one row per slot and tick, the last, as the replay's feeder
    slot, tick, ts = slot[keep], tick[keep], ts[keep]
    cols = [rng.random(len(slot)) for _ in range(3)]
    nan = np.full(len(slot), np.nan)
    rows = QuoteColumns(slot, cols[0], cols[1], cols[1] + 0.1, nan, ts, np.where(cols[2] < 0.5, cols[2], np.nan), nan)
    book = QuoteBook(("s", str(i)) for i in range(slots))
    fill = FrameFill(rows, tick, slots)
    for k0, k1 in ((0, 7), (7, 8), (8, 30)):
        frames = fill.frames(k0, k1)
        for k in range(k0, k1):
            book.write(rows.take(tick == k))
            want, got = book.snapshot(), frames.at(k - k0)
            for f in ("price", "bid", "ask", "received_ts", "confidence", "half_width"):
                assert np.array_equal(getattr(got, f), getattr(want, f), equal_nan=True), (k, f)


def test_a_tiled_block_aggregates_each_tick_as_alone():
    """One pass over 50 stacked ticks of a block whose markets use different methods (rows of 12 and 9
    sources): each tick's prices, confidences and exclusions to the bit, as a pass over it alone."""
    sources = {f"v{i}": {"kind": "coinbase"} for i in range(12)}
    refs = [{"source": s, "pair": "X-USD"} for s in sources]
    settings = Settings.model_validate(
        {
            "policy": {"method": "trimmed_mean", "trim": 0.2, "freeze_ticks": 0, "max_deviation_bps": 40},
            "sources": sources,
            "markets": {"X-USD": {"sources": refs}, "Y-USD": {"sources": refs[:9], "method": "weighted_median"}},
        }
    )
    book = QuoteBook.for_settings(settings)
    agg = Aggregator(settings, book)
    (block,) = agg.plan.levels[0]
    rng = np.random.default_rng(5)
    ticks, stride = 50, len(book.keys) + 1
    flat = {f: np.full(ticks * stride, np.nan) for f in ("price", "received_ts", "venue_ts", "half_width")}
    flat["price"][:] = 100 + rng.random(ticks * stride)
    flat["received_ts"][:] = 1000.0
    flat["half_width"][:] = rng.random(ticks * stride) * 0.01
    flat["price"][stride - 1 :: stride] = np.nan  # each tick's empty slot
    flat["received_ts"][stride - 1 :: stride] = np.nan
    snap = book.snapshot()
    stacked = dataclasses.replace(snap, **{f: v for f, v in flat.items()})
    now = np.full((ticks * len(block.row_market), 1), 1000.5)
    big = run_block(tiled(block, ticks, stride), stacked, now, agg.rates, agg.rate_ts, agg.plan.conv_max_age_s)
    r = len(block.row_market)
    for t in range(ticks):
        one = dataclasses.replace(snap, **{f: v[t * stride : (t + 1) * stride] for f, v in flat.items()})
        want = run_block(block, one, 1000.5, agg.rates, agg.rate_ts, agg.plan.conv_max_age_s)
        assert want.price.tobytes() == big.price[t * r : (t + 1) * r].tobytes()
        assert want.confidence.tobytes() == big.confidence[t * r : (t + 1) * r].tobytes()
        assert want.reason.tobytes() == big.reason[t * r : (t + 1) * r].tobytes()
    assert (big.reason == DEVIATION).any()  # some quotes fell outside the deviation band
