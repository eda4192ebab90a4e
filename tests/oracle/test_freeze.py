"""The freeze rule (oracle/freeze.py): a stuck source is excluded, a quiet one is not.

Venus / LUNA: a feed clamped at its floor while the market falls 90 % must be caught. A Chainlink
aggregator that is silent because the market moved less than its 0.5 % deviation threshold must not
be (issue 14: it was, and a two-source fallback tier of Pyth and Chainlink never had quorum).
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from oracle.aggregate import Aggregator
from oracle.freeze import FreezeState, freeze_step, peer_median
from oracle.models import Candidate, Exclusion, Mark, Quote
from oracle.quotebook import QuoteBook
from oracle.settings import Settings, parse_settings

from .helpers import NOW, accept, refs


def test_peer_median_is_the_median_of_the_rest_of_the_row() -> None:
    rng = np.random.default_rng(3)
    for cols in (1, 2, 3, 4, 5, 8):
        values = rng.normal(100, 1, (300, cols)).round(1)  # rounding makes ties
        values[rng.random(values.shape) < 0.25] = np.nan
        got = peer_median(values)
        for r, row in enumerate(values):
            for c, v in enumerate(row):
                others = [x for k, x in enumerate(row) if k != c and not math.isnan(x)]
                want = statistics.median(others) if others and not math.isnan(v) else math.nan
                assert (math.isnan(want) and math.isnan(got[r, c])) or got[r, c] == pytest.approx(want), (row, c)


def chainlink(true: np.ndarray, deviation: float = 0.005, heartbeat: int = 14_400) -> np.ndarray:
    """What a Chainlink aggregator answers at each tick: a new round only past its deviation
    threshold from its last answer, or at its heartbeat (in ticks)."""
    out, answer, last = np.empty_like(true), true[0], 0
    for t, p in enumerate(true):
        if abs(p / answer - 1) >= deviation or t - last >= heartbeat:
            answer, last = p, t
        out[t] = answer
    return out


class Row:
    """One (market, tier) row of cells stepped tick by tick, as the aggregator steps it."""

    def __init__(self, cols: int, freeze_ticks: int = 20, freeze_bps: float | list[float] = 100.0) -> None:
        frac = np.broadcast_to(np.asarray(freeze_bps, dtype=float) / 1e4, (1, cols))
        self.state = FreezeState.start(np.array([freeze_ticks]), frac)

    def step(self, *prices: float) -> list[bool]:
        quoted = np.array([prices], dtype=float)
        live = ~np.isnan(quoted)
        return freeze_step(self.state, quoted, quoted, live)[0].tolist()


def walk(n: int, seed: int, vol_per_tick: float, drift_per_tick: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(drift_per_tick, vol_per_tick, n)))


@pytest.mark.parametrize(
    ("vol", "drift"),
    [(2e-4, 0.0), (2e-4, 3e-5), (2e-4, -3e-5), (1e-3, 0.0)],
    ids=["calm-walk", "uptrend", "downtrend", "wild-walk"],
)
def test_a_chainlink_feed_quiet_below_its_threshold_is_never_frozen(vol: float, drift: float) -> None:
    true = walk(20_000, seed=5, vol_per_tick=vol, drift_per_tick=drift)
    pyth = true * (1 + np.random.default_rng(6).normal(0, 1e-4, true.size))  # new price every tick
    feed = chainlink(true)
    assert len(np.unique(feed)) > 3  # it did write rounds, and sat still in between
    row = Row(2, freeze_bps=[25.0, 100.0])
    frozen = [row.step(p, c) for p, c in zip(pyth, feed, strict=True)]
    assert not any(any(f) for f in frozen)


def test_the_old_rule_any_move_of_a_peer_would_have_frozen_it() -> None:
    # freeze_bps = 0: the peers' median moving at all counts (what markd did before issue 14).
    true = walk(2_000, seed=5, vol_per_tick=2e-4)
    row = Row(2, freeze_bps=0.0)
    frozen = [row.step(p, c)[1] for p, c in zip(true, chainlink(true), strict=True)]
    assert sum(frozen) > 1_000


def test_a_feed_clamped_at_its_floor_while_the_market_falls_is_frozen_until_it_moves() -> None:
    row = Row(4, freeze_ticks=5, freeze_bps=100.0)
    price, floor = 1.0, 0.107
    seen = []
    for tick in range(40):
        price *= 0.9
        clamped = max(price, floor) if tick < 35 else price  # released at tick 35
        seen.append(row.step(price, price * 1.001, price * 0.999, clamped))
    assert not any(any(s[:3]) for s in seen)
    clamp_from = next(t for t in range(40) if 0.9 ** (t + 1) < floor)
    frozen = [t for t, s in enumerate(seen) if s[3]]
    # Caught one tick (a 10 % fall, beyond 1 %) after it stuck, plus the 5 ticks of grace.
    assert frozen[0] == clamp_from + 5
    assert frozen == list(range(frozen[0], 35))  # frozen until it moves again


def test_it_thaws_when_the_peers_come_back_to_where_it_stuck() -> None:
    row = Row(2, freeze_ticks=2, freeze_bps=100.0)
    row.step(100.0, 100.0)
    assert [row.step(p, 100.0)[1] for p in (102.0, 102.1, 102.2)] == [False, True, True]
    assert row.step(100.3, 100.0)[1] is False  # within 1 % of where it stuck: harmless again


def test_nothing_moving_freezes_nobody_absent_cells_restart_and_zero_turns_it_off() -> None:
    closed = Row(3, freeze_ticks=2, freeze_bps=0.0)
    assert not any(any(closed.step(5.0, 5.0, 5.0)) for _ in range(10))  # a closed market

    gappy = Row(3, freeze_ticks=2, freeze_bps=0.0)
    for tick in range(10):
        out = gappy.step(1.0 + tick, math.nan, 7.0)
    assert out == [False, False, True]
    assert gappy.step(20.0, math.nan, math.nan) == [False, False, False]  # absent: never frozen
    assert gappy.step(21.0, math.nan, 7.0) == [False, False, False]  # back: its run starts over

    off = Row(2, freeze_ticks=0, freeze_bps=0.0)
    assert not any(any(off.step(1.0 + t, 7.0)) for t in range(10))

    alone = Row(1, freeze_ticks=1, freeze_bps=0.0)
    assert not any(any(alone.step(7.0)) for _ in range(10))  # no peers: nothing to compare with


def test_clean_venues_that_sometimes_repeat_a_price_are_never_frozen() -> None:
    rng = np.random.default_rng(11)
    state = FreezeState.start(np.array([20, 20]), np.full((2, 5), 25e-4))
    prices = np.full((2, 5), 100.0)
    for _ in range(5_000):
        moves = rng.random((2, 5)) < 0.6  # a venue's mid often stays put for a tick or two
        prices = np.where(moves, prices * (1 + rng.normal(0, 1e-4, (2, 5))), prices)
        live = np.ones((2, 5), dtype=bool)
        assert not freeze_step(state, prices, prices, live).any()


# --- through the aggregator: the shipped shape, Pyth + Chainlink as the fallback tier ------------


def settings(**chainlink: object) -> Settings:
    return parse_settings(
        {
            "policy": {"min_sources": 3, "freeze_ticks": 20},
            "sources": {
                **{n: {"kind": "coinbase"} for n in "abc"},
                "pyth": {"kind": "pyth"},
                "chainlink": {"kind": "chainlink", **chainlink},
            },
            "markets": {
                "BTC-USD": {
                    "sources": refs("abc"),
                    "fallback": [
                        {"source": "pyth", "pair": "BTC-USD", "id": "ab"},
                        {
                            "source": "chainlink",
                            "pair": "BTC-USD",
                            "address": "0x1",
                            "decimals": 8,
                            "heartbeat_s": 3600,
                        },
                    ],
                }
            },
        }
    )


def run_ticks(s: Settings, rows: list[dict[str, float]], exchanges_until: int) -> list[Candidate]:
    """One tick a second; the exchanges quote until `exchanges_until`, Pyth and Chainlink always."""
    book = QuoteBook.for_settings(s)
    agg = Aggregator(s, book)
    seen: list[Candidate] = []

    def spy(cands: list[Candidate]) -> list[Mark]:
        seen.extend(cands)
        return accept(cands)

    for t, prices in enumerate(rows):
        now = NOW + t
        for source, price in prices.items():
            if source in "abc" and t >= exchanges_until:
                continue  # down: their last quotes go stale
            book.update(Quote(source, "BTC-USD", price, now))
        agg.run(book.snapshot(), now, spy)
    return seen


def test_a_quiet_chainlink_carries_the_fallback_tier_with_pyth_through_an_exchange_outage() -> None:
    true = walk(600, seed=9, vol_per_tick=3e-4, drift_per_tick=2e-5)
    feed = chainlink(true)
    rows = [
        {"a": p, "b": p * 1.0002, "c": p * 0.9998, "pyth": p, "chainlink": c} for p, c in zip(true, feed, strict=True)
    ]
    cands = run_ticks(settings(), rows, exchanges_until=200)
    during = cands[206:]  # the exchanges' last quotes are older than max_age_ms
    assert all(c.tier == 2 for c in during)
    assert all(c.result(2).sources == ("pyth", "chainlink") for c in during)  # type: ignore[union-attr]
    assert not [e for c in cands for e in c.excluded if e.reason is Exclusion.FROZEN]


def test_a_chainlink_stuck_at_a_floor_is_excluded_and_the_fallback_tier_loses_quorum() -> None:
    true = 100.0 * 0.995 ** np.arange(300)  # a steady fall, 0.5 % a tick
    rows = [{"a": p, "b": p, "c": p, "pyth": p, "chainlink": max(p, 80.0)} for p in true]
    cands = run_ticks(settings(freeze_bps=100.0), rows, exchanges_until=30)
    frozen_at = [
        i for i, c in enumerate(cands) if ("chainlink", Exclusion.FROZEN) in {(e.source, e.reason) for e in c.excluded}
    ]
    stuck = next(i for i, p in enumerate(true) if p < 80.0)
    assert frozen_at and frozen_at[0] == stuck + 2 + 20  # 1 % below its floor (two ticks), then the grace
    assert frozen_at == list(range(frozen_at[0], 300))
    assert not any(c.tier for c in cands[frozen_at[0] :])  # Pyth alone is not the tier's quorum of 2


def test_freeze_bps_is_per_source_with_a_default_by_kind() -> None:
    s = settings()
    assert [s.freeze_bps(n) for n in ("a", "pyth", "chainlink")] == [25.0, 25.0, 100.0]
    assert settings(freeze_bps=60).freeze_bps("chainlink") == 60.0
