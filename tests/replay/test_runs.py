"""A chunk validated along time (oracle.replay.runs: quiet runs per market, the other ticks through
the dispute stage) gives exactly what the daemon's tick path gives tick by tick.

The markets here are made to leave the quiet path often and in every way: a source that stops (the
fallback tier takes over, then the primary recovers), prices that stand still (the heartbeat
publishes), a venue's spike (an outlier), the whole market jumping (the guard holds, a window), a
stuck source (frozen), anchor buckets closing, and several markets whose disputes interleave."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from oracle.replay.run import RunResult, replay
from oracle.settings import parse_settings
from oracle.ticks import Ticks
from oracle.validation.stage import DisputeStage
from oracle.validation.state import OK, StateArrays, TimeLanes, advance_run, publish_due, quiet_run

CONFIG = """
[service]
tick_ms = 1000
[policy]
max_age_ms = 4000
max_deviation_bps = 100
min_sources = 2
max_jump_bps = 300
dispute_window_ms = 5000
heartbeat_ms = 3000
recover_ticks = 3
anchor_window_s = 600
anchor_deviation_bps = 250
freeze_ticks = 8
[sources.a]
kind = "coinbase"
[sources.b]
kind = "kraken"
[sources.c]
kind = "okx"
[sources.d]
kind = "bybit"
[sources.e]
kind = "bitstamp"
"""
MARKETS = ("M1-USD", "M2-USD", "M3-USD")


def _settings():
    text = CONFIG
    for m in MARKETS:
        text += f'[markets.{m}]\nsources = [{{ source = "a", pair = "{m}" }}, {{ source = "b", pair = "{m}" }}, '
        text += f'{{ source = "c", pair = "{m}" }}]\nfallback = [{{ source = "d", pair = "{m}" }}, '
        text += f'{{ source = "e", pair = "{m}" }}]\n'
    return parse_settings(tomllib.loads(text))


def _ticks(seed: int, seconds: int = 900) -> Ticks:
    """Each source of each market quotes every second, with the troubles of the module docstring."""
    rng = np.random.default_rng(seed)
    keys, rows = [], []
    for mi, market in enumerate(MARKETS):
        steps = rng.normal(0, 0.0004, seconds)
        steps[rng.random(seconds) < 0.3] = 0.0  # seconds where the market stands still
        flat = rng.integers(0, seconds - 30, 3)
        for f in flat.tolist():
            steps[f : f + 20] = 0.0
        jumps = rng.integers(60, seconds - 60, 4).tolist()
        for jump in jumps:  # the whole market moves at once
            steps[jump] += rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
        level = (10.0 ** (mi + 1)) * np.exp(np.cumsum(steps))
        down = int(rng.integers(0, seconds - 60))  # the exchanges (tier 1) down together for a while
        down_for = int(rng.integers(15, 50))
        for si, source in enumerate("abcde"):
            # The fallback tier lags the exchanges by a few seconds: after a jump, the tiers disagree.
            behind = level if si < 3 else np.concatenate((np.full(3, level[0]), level[:-3]))
            price = behind * (1 + rng.normal(0, 0.0002, seconds))
            price[steps == 0.0] = behind[steps == 0.0]  # standing still: every venue on the same price
            alive = np.ones(seconds, dtype=bool)
            if rng.random() < 0.5:  # an outage: the source stops for a while
                start = int(rng.integers(0, seconds - 60))
                alive[start : start + int(rng.integers(10, 60))] = False
            if si < 3 and rng.random() < 0.4:  # a spike on one venue
                start = int(rng.integers(0, seconds - 30))
                price[start : start + int(rng.integers(3, 30))] *= 1.05
            if si == 4:  # a fallback source stuck across a jump, which its peer follows
                start = jumps[0] - 5
                price[start : start + 60] = price[start]
            if si < 3:
                alive[down : down + down_for] = False
            keys.append((source, market))
            ts = 1_700_000_000.0 + np.arange(seconds) + 0.1 + 0.05 * si
            for t in np.flatnonzero(alive).tolist():
                rows.append((len(keys) - 1, float(ts[t]), float(price[t])))
    rows.sort(key=lambda r: r[1])
    feed, ts, price = (np.array(c) for c in zip(*rows, strict=True))
    nan = np.full(len(ts), math.nan)
    return Ticks(tuple(keys), feed.astype(np.intp), ts, price, nan, nan.copy(), ts.copy())


def _calm_ticks(seconds: int = 900) -> Ticks:
    """Every source of every market quoting every second around a gently moving price."""
    rng = np.random.default_rng(0)
    keys = [(source, market) for market in MARKETS for source in "abcde"]
    level = 100 * np.exp(np.cumsum(rng.normal(0, 0.0002, (seconds, len(MARKETS))), axis=0))
    price = np.repeat(level, 5, axis=1) * (1 + rng.normal(0, 0.0001, (seconds, len(keys))))
    ts = 1_700_000_000.1 + np.arange(seconds)[:, None] + 0.01 * np.arange(len(keys))
    feed = np.broadcast_to(np.arange(len(keys)), ts.shape)
    nan = np.full(ts.size, math.nan)
    return Ticks(tuple(keys), feed.ravel().astype(np.intp), ts.ravel(), price.ravel(), nan, nan.copy(), ts.ravel())


def _outputs(r: RunResult) -> tuple:
    series = {m: (s.price.tobytes(), s.confidence.tobytes(), s.status.tobytes(), s.tier.tobytes())
              for m, s in r.series.items()}  # fmt: skip
    published = [(m, t) for m, t in zip(r.published, r.publish_ts, strict=True)]
    disputes = [(d.id, d.market, d.reason, d.opened_ts, d.closed_ts, d.outcome) for d in r.disputes]
    return series, published, disputes, r.excluded


@pytest.mark.parametrize("seed", range(6))
def test_runs_along_time_replay_as_tick_by_tick(seed):
    settings, ticks = _settings(), _ticks(seed)
    live = replay(settings, ticks, chunk=1)  # the daemon's own path
    for chunk in (7, 256, None):  # None: the default, by the plan's size
        assert _outputs(replay(settings, ticks, chunk=chunk)) == _outputs(live), chunk
    # The run shows what it was made to show (else the test would prove little).
    statuses = {int(x) for s in live.series.values() for x in s.status.tolist()}
    assert {0, 1, 2} <= statuses, statuses  # ok, degraded, held
    assert {1, 2} <= {m.tier for m in live.published}
    assert {d.reason.value for d in live.disputes} == {"anchor", "divergence"}
    kinds = {reason for exs in live.excluded.values() for *_, reason in exs}
    assert {"deviation", "stale", "frozen"} <= kinds, kinds
    last: dict[str, float] = {}
    heartbeats = 0  # a mark published again unchanged: the heartbeat's
    for m in live.published:
        heartbeats += last.get(m.market) == m.price
        last[m.market] = m.price
    assert heartbeats > 10


def test_most_ticks_skip_the_dispute_stage(monkeypatch):
    """Chunked, the quiet ticks (most of them) never reach `DisputeStage.process`; tick by tick, the
    replay's few markets all go through it (fewer than `Pipeline.array_min_markets`)."""
    calls = []
    process = DisputeStage.process
    monkeypatch.setattr(DisputeStage, "process", lambda self, c, now: calls.append(now) or process(self, c, now))
    settings, ticks = _settings(), _calm_ticks()
    live = replay(settings, ticks, chunk=1)
    ticked = len(live.grid) * len(MARKETS)
    assert len(calls) == ticked
    calls.clear()
    assert _outputs(replay(settings, ticks)) == _outputs(live)
    # The first tick, and one in ten: the anchor's buckets are 10 s wide and close in Python.
    assert 0 < len(calls) <= ticked / 10 + 2 * len(MARKETS), (len(calls), ticked)


def test_a_run_stops_at_the_first_tick_that_is_not_quiet():
    s = StateArrays(1, 2)
    s.live[0], s.tier[0], s.last_price[0], s.g_max_jump[0], s.pol_max_dev[0] = True, 1, 100.0, 300.0, 100.0
    price = np.array([[100.0, 100.0], [100.5, 100.0], [110.0, 100.0], [110.0, 100.0]])
    lanes = TimeLanes(price, np.zeros_like(price), np.ones_like(price, dtype=bool), 2, np.zeros(4, dtype=bool))
    nows = 1_700_000_000.0 + np.arange(4)
    run = quiet_run(s, 0, lanes, nows)
    assert run is not None and run.length == 2  # tick 2 jumps 9.5 %: the guard's, not the run's
    s.muted[0] = 1
    assert quiet_run(s, 0, lanes, nows) is None


def test_an_unchanged_mark_without_a_confidence_waits_for_the_heartbeat():
    """NaN == NaN for the publish cadence, on the tick path's quiet step (`publish_due`) and along
    time (`advance_run`): a mark whose price stands still and has no confidence is not new."""
    s = StateArrays(1, 1)
    s.live[0], s.tier[0], s.pol_heartbeat_ms[0] = True, 1, 1000.0
    s.pub_has[0], s.pub_price[0], s.pub_conf[0], s.pub_status[0], s.pub_tier[0] = True, 100.0, np.nan, OK, 1
    s.pub_ts[0], s.last_price[0], s.last_conf[0] = 1_700_000_000.0, 100.0, np.nan
    rows = np.array([0])
    assert publish_due(s, rows, np.array([OK], dtype=np.int8), 1_700_000_000.5).tolist() == [False]
    price = np.full((4, 1), 100.0)
    lanes = TimeLanes(price, np.full((4, 1), np.nan), np.ones((4, 1), dtype=bool), 1, np.zeros(4, dtype=bool))
    nows = 1_700_000_000.0 + np.array([0.25, 0.5, 0.75, 1.0])
    run = quiet_run(s, 0, lanes, nows)
    assert run is not None and run.length == 4
    assert advance_run(s, 0, run, lanes, [("a",)] * 4, nows).tolist() == [False, False, False, True]
