"""The perp mark (DESIGN.md "Perpetual mark price"), tick by tick against an independent computation.

`Reference` below is a plain scalar transcription of the DESIGN text (no numpy, no code shared with
oracle.perp); the vectorised core must agree with it at every tick of seeded random runs as well as
in the hand-worked cases.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from oracle.aggregate import Aggregator
from oracle.models import Quote
from oracle.perp import PerpPlan, PerpState, perp_tick
from oracle.quotebook import QuoteBook
from oracle.settings import ConfigError, Settings, parse_settings

NOW = 1_700_000_000.0
MAX_AGE_S = 5.0
USDT = 1.0004  # the USDT-USD mark of every tick


def settings(perp: dict[str, Any] | None = None, **market: Any) -> Settings:
    perp = perp if perp is not None else {}
    perp.setdefault("book", {"source": "venue", "pair": "BTC-PERP"})
    perp.setdefault(
        "external",
        [
            {"source": "x1", "pair": "BTC-USDT", "convert": "USDT-USD", "weight": 3},
            {"source": "x2", "pair": "BTC-USDT", "convert": "USDT-USD", "weight": 2},
            {"source": "x3", "pair": "BTC-USDT", "convert": "USDT-USD"},
        ],
    )
    index = [{"source": s, "pair": "BTC-USD"} for s in ("a", "b", "c")]
    return parse_settings(
        {
            "policy": {"min_sources": 2, "max_age_ms": int(MAX_AGE_S * 1000), "max_deviation_bps": 200},
            "sources": {n: {"kind": "coinbase", "weight": 1.5} for n in ("a", "b", "c", "venue", "x1", "x2", "x3")},
            "markets": {
                "USDT-USD": {"sources": [{"source": s, "pair": "USDT-USD"} for s in ("a", "b")]},
                "BTC-USD": {"sources": index, "perp": perp, **market},
            },
        }
    )


class Core:
    """The production core driven directly: one BTC-USD perp, index and USDT rate given per tick."""

    def __init__(self, s: Settings) -> None:
        self.book = QuoteBook.for_settings(s)
        agg = Aggregator(s, self.book)
        self.index = agg.plan.index
        plan = PerpPlan.build(s, self.book, self.index)
        assert plan is not None
        self.plan = plan
        self.state = PerpState.start(len(plan.markets))
        self.conv_max_age = agg.plan.conv_max_age_s
        self.snapshot = self.book.snapshot()

    def tick(self, now: float, index: float | None) -> dict[str, float]:
        rates = np.full(len(self.index), np.nan)
        rate_ts = np.full(len(self.index), np.nan)
        rates[self.index["USDT-USD"]], rate_ts[self.index["USDT-USD"]] = USDT, now
        usable = np.array([index is not None])
        price = np.array([math.nan if index is None else index])
        r = perp_tick(
            self.plan,
            self.state,
            self.book.snapshot(self.snapshot),
            now,
            price,
            usable,
            rates,
            rate_ts,
            self.conv_max_age,
        )
        return {k: float(getattr(r, k)[0]) for k in ("price", "c1", "c2", "c3")}


# --- the independent computation ----------------------------------------------------------------


@dataclass
class BookQuote:
    ts: float
    bid: float | None
    ask: float | None
    last: float | None


@dataclass
class Reference:
    """DESIGN.md's perp mark for one market, written out scalar by scalar."""

    ema_s: float = 150.0
    max_premium_bps: float = 1000.0
    max_deviation_bps: float = 200.0
    basis: float | None = None
    basis_ts: float = 0.0
    price: float = math.nan
    book: BookQuote | None = None
    externals: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> (received, price)
    weights: dict[str, float] = field(default_factory=lambda: {"x1": 3.0, "x2": 2.0, "x3": 1.5})

    def tick(self, now: float, index: float | None) -> dict[str, float]:
        if index is None:
            return {"price": self.price, "c1": math.nan, "c2": math.nan, "c3": math.nan}
        fresh = self.book is not None and now - self.book.ts <= MAX_AGE_S
        bid = self.book.bid if fresh and self.book else None
        ask = self.book.ask if fresh and self.book else None
        last = self.book.last if fresh and self.book else None
        if bid is not None and ask is not None:
            mid = (bid + ask) / 2
            if self.basis is None:
                self.basis = mid - index
            else:
                a = 1 - math.exp(-(now - self.basis_ts) / self.ema_s)
                self.basis += a * ((mid - index) - self.basis)
            self.basis_ts = now
            parts = [bid, ask] + ([last] if last is not None else [])
        else:
            parts = [last] if last is not None else []
        c1 = index + (self.basis or 0.0)
        c2 = statistics_median(parts) if parts else index
        c3 = self.c3(now) or index
        lo, hi = index * (1 - self.max_premium_bps / 1e4), index * (1 + self.max_premium_bps / 1e4)
        self.price = min(max(statistics_median([c1, c2, c3]), lo), hi)
        return {"price": self.price, "c1": c1, "c2": c2, "c3": c3}

    def c3(self, now: float) -> float | None:
        live = {n: p * USDT for n, (ts, p) in self.externals.items() if now - ts <= MAX_AGE_S and p > 0}
        if not live:
            return None
        centre = statistics_median(list(live.values()))
        kept = sorted(
            (p, self.weights[n]) for n, p in live.items() if abs(p / centre - 1) <= self.max_deviation_bps / 1e4
        )
        if not kept:  # two quotes further apart than the band: both are outliers
            return None
        total = sum(w for _, w in kept)
        acc = 0.0
        for i, (p, w) in enumerate(kept):
            acc += w
            if math.isclose(acc, total / 2, rel_tol=1e-12):
                return (p + kept[i + 1][0]) / 2
            if acc > total / 2:
                return p
        raise AssertionError("unreachable")


def statistics_median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class Both:
    """Feeds the same quotes to the core and the reference and compares every tick."""

    def __init__(self, s: Settings | None = None, **ref: Any) -> None:
        self.core = Core(s or settings())
        self.ref = Reference(**ref)

    def book(self, ts: float, bid: float | None = None, ask: float | None = None, last: float | None = None) -> None:
        # The QuoteBook keeps the latest receive time (a late answer is dropped): so does the reference.
        if self.core.book.update(Quote("venue", "BTC-PERP", last or bid or ask or 1.0, ts, bid, ask, last=last)):
            self.ref.book = BookQuote(ts, bid, ask, last)

    def external(self, name: str, ts: float, price: float) -> None:
        if self.core.book.update(Quote(name, "BTC-USDT", price, ts)):
            self.ref.externals[name] = (ts, price)

    def tick(self, now: float, index: float | None) -> dict[str, float]:
        got, want = self.core.tick(now, index), self.ref.tick(now, index)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12, nan_ok=True), (key, now, got, want)
        return got


# --- the formula, case by case ------------------------------------------------------------------


def test_basis_ema_starts_at_the_first_basis_then_steps_over_irregular_gaps() -> None:
    both = Both()
    both.book(NOW, bid=100.9, ask=101.1)  # mid 101: basis +1 against an index of 100
    assert both.tick(NOW, 100.0)["c1"] == pytest.approx(101.0)
    both.book(NOW + 30, bid=102.9, ask=103.1)  # basis +3, 30 s later
    c1 = both.tick(NOW + 30, 100.0)["c1"]
    assert c1 == pytest.approx(100 + 1 + (1 - math.exp(-30 / 150)) * 2)
    both.book(NOW + 30.25, bid=102.9, ask=103.1)  # a quarter second later: a tiny step
    e = 1 + (1 - math.exp(-30 / 150)) * 2
    assert both.tick(NOW + 30.25, 100.0)["c1"] == pytest.approx(100 + e + (1 - math.exp(-0.25 / 150)) * (3 - e))


def test_c1_is_the_index_before_any_mid_and_carries_the_basis_over_the_index() -> None:
    both = Both()
    both.book(NOW, last=105.0)  # a last trade but no two-sided book: no basis yet
    assert both.tick(NOW, 100.0)["c1"] == 100.0
    both.book(NOW + 1, bid=101.9, ask=102.1)
    both.tick(NOW + 1, 100.0)
    later = NOW + 1 + MAX_AGE_S + 1  # the book has gone stale: E is kept, the index moved
    assert both.tick(later, 110.0)["c1"] == pytest.approx(112.0)


def test_stale_book_gives_no_mid_and_leaves_the_basis_alone() -> None:
    both = Both()
    both.book(NOW, bid=100.9, ask=101.1, last=101.0)
    both.tick(NOW, 100.0)
    out = both.tick(NOW + MAX_AGE_S + 1, 100.0)  # the whole book is older than max_age_ms
    assert out["c1"] == pytest.approx(101.0) and out["c2"] == 100.0
    both.book(NOW + 60, bid=99.9, ask=100.1)  # E's next step spans the 60 s since its last update
    assert both.tick(NOW + 60, 100.0)["c1"] == pytest.approx(100 + 1 - (1 - math.exp(-60 / 150)) * 1)


def test_c2_takes_bid_and_ask_only_as_a_pair() -> None:
    both = Both()
    both.book(NOW, bid=99.0, ask=103.0, last=102.0)
    assert both.tick(NOW, 100.0)["c2"] == 102.0  # median of bid, ask, last
    both.book(NOW + 1, bid=99.0, ask=103.0)
    assert both.tick(NOW + 1, 100.0)["c2"] == 101.0  # bid and ask alone: their mid
    both.book(NOW + 2, bid=99.0, last=100.5)  # one side only: no mid, the last alone
    assert both.tick(NOW + 2, 100.0)["c2"] == 100.5
    both.book(NOW + 3, ask=99.0)  # one side and no last: nothing counts
    assert both.tick(NOW + 3, 100.0)["c2"] == 100.0


def test_stale_last_falls_out_with_its_quote() -> None:
    both = Both()
    both.book(NOW, last=104.0)
    assert both.tick(NOW, 100.0)["c2"] == 104.0
    assert both.tick(NOW + MAX_AGE_S + 0.5, 100.0)["c2"] == 100.0


def test_no_externals_makes_c3_the_index() -> None:
    both = Both(settings({"external": []}))
    assert both.core.plan.external is None  # no external source is configured at all
    assert both.tick(NOW, 100.0)["c3"] == 100.0


def test_silent_or_stale_externals_fall_back_to_the_index() -> None:
    both = Both()
    both.external("x1", NOW, 100.2)
    assert both.tick(NOW, 100.0)["c3"] == pytest.approx(100.2 * USDT)  # a quorum of one
    assert both.tick(NOW + MAX_AGE_S + 1, 100.0)["c3"] == 100.0


def test_c3_is_a_weighted_median_with_the_tier_rules() -> None:
    both = Both()
    both.external("x1", NOW, 100.0)  # weight 3 (its own), x2 2, x3 1.5 (the source's)
    both.external("x2", NOW, 100.5)
    both.external("x3", NOW, 101.0)
    assert both.tick(NOW, 100.0)["c3"] == pytest.approx(100.5 * USDT)  # 3 < 3.25 <= 5
    both.external("x3", NOW + 1, 120.0)  # 20 % away: a deviation outlier, so x1 (3) vs x2 (2)
    assert both.tick(NOW + 1, 100.0)["c3"] == pytest.approx(100.0 * USDT)


def test_weighted_median_takes_the_midpoint_at_an_exact_half() -> None:
    s = settings(
        {
            "external": [
                {"source": "x1", "pair": "BTC-USDT", "weight": 2},
                {"source": "x2", "pair": "BTC-USDT", "weight": 2},
            ]
        }
    )
    core = Core(s)
    core.book.update(Quote("x1", "BTC-USDT", 100.0, NOW))
    core.book.update(Quote("x2", "BTC-USDT", 101.0, NOW))
    assert core.tick(NOW, 100.0)["c3"] == 100.5


def test_the_median_of_three_lets_no_single_component_carry_the_mark() -> None:
    both = Both()
    for name in ("x1", "x2", "x3"):
        both.external(name, NOW, 100.0 / USDT)
    both.book(NOW, bid=99.9, ask=100.1)
    both.tick(NOW, 100.0)
    both.book(NOW + 1, bid=104.9, ask=105.1, last=105.0)  # the own book pumped +5 %
    out = both.tick(NOW + 1, 100.0)
    assert out["c2"] == 105.0 and out["c1"] < 100.04 and out["price"] == pytest.approx(out["c1"])


def test_clamp_holds_the_mark_within_max_premium_of_the_index() -> None:
    both = Both(settings({"max_premium_bps": 500, "external": []}), max_premium_bps=500)
    both.book(NOW, bid=114.9, ask=115.1, last=115.0)  # +15 %: c1 = c2 = 115, c3 = I
    assert both.tick(NOW, 100.0)["price"] == pytest.approx(105.0)
    both = Both(settings({"max_premium_bps": 500, "external": []}), max_premium_bps=500)
    both.book(NOW, bid=84.9, ask=85.1, last=85.0)
    assert both.tick(NOW, 100.0)["price"] == pytest.approx(95.0)


def test_unusable_index_keeps_the_last_price_and_pauses_the_basis() -> None:
    both = Both()
    both.book(NOW, bid=100.9, ask=101.1)
    first = both.tick(NOW, 100.0)["price"]
    both.book(NOW + 1, bid=150.0, ask=151.0)
    held = both.tick(NOW + 1, None)
    assert held["price"] == first and all(math.isnan(held[c]) for c in ("c1", "c2", "c3"))
    both.book(NOW + 20, bid=101.9, ask=102.1)  # the step after the gap spans 20 s, not 19
    out = both.tick(NOW + 20, 100.0)
    assert out["c1"] == pytest.approx(100 + 1 + (1 - math.exp(-20 / 150)) * 1)


def test_no_index_yet_means_no_perp_price() -> None:
    assert math.isnan(Both().tick(NOW, None)["price"])


@pytest.mark.parametrize(("seed", "premium_bps"), [(0, 1000), (1, 1000), (2, 1000), (3, 30), (4, 30), (5, 10)])
def test_random_runs_agree_with_the_reference_tick_by_tick(seed: int, premium_bps: float) -> None:
    """Irregular gaps, stale and one-sided books, silent, stale and outlying externals, an index
    that drops out, and (with a narrow premium) the clamp: about 360 ticks a run."""
    rng = random.Random(seed)
    both = Both(settings({"max_premium_bps": premium_bps}), max_premium_bps=premium_bps)
    now, index = NOW, 100.0
    for _ in range(400):
        now += rng.choice([0.25, 0.25, 1.0, 3.7, 7.0, 40.0])  # irregular gaps, some past max_age
        index *= 1 + rng.gauss(0, 0.002)
        if rng.random() < 0.5:  # the book: sometimes one-sided, sometimes without a last
            mid = index * (1 + rng.gauss(0.003, 0.01))
            bid = mid - 0.05 if rng.random() < 0.85 else None
            ask = mid + 0.05 if rng.random() < 0.85 else None
            last = mid + rng.gauss(0, 0.1) if rng.random() < 0.7 or not (bid and ask) else None
            both.book(now - rng.choice([0.0, 0.0, 2.0, 6.0]), bid, ask, last)
        for name in ("x1", "x2", "x3"):
            if rng.random() < 0.4:
                spike = 1.05 if rng.random() < 0.05 else 1.0
                both.external(
                    name, now - rng.choice([0.0, 1.0, 9.0]), index * spike * (1 + rng.gauss(0.002, 0.003)) / USDT
                )
        both.tick(now, None if rng.random() < 0.08 else index)


# --- config -------------------------------------------------------------------------------------


def test_perp_table_defaults() -> None:
    perp = settings({"external": []}).markets["BTC-USD"].perp
    assert perp is not None and (perp.ema_s, perp.max_premium_bps, perp.external) == (150.0, 1000.0, [])


def test_perp_sources_get_quote_book_slots_and_feed() -> None:
    from feeds.runner import refs_by_source

    s = settings()
    book = QuoteBook.for_settings(s)
    assert ("venue", "BTC-PERP") in book.slot and ("x2", "BTC-USDT") in book.slot
    assert [r.pair for r in refs_by_source(s)["venue"]] == ["BTC-PERP"]


def problems(perp: dict[str, Any], **market: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        settings(perp, **market)
    return exc.value.problems


def test_a_book_source_that_feeds_an_index_is_refused() -> None:
    assert problems({"book": {"source": "a", "pair": "BTC-PERP"}}) == [
        "markets.BTC-USD.perp.book.source: 'a' also feeds an index tier; a perp book cannot"
    ]


def test_perp_unknown_keys_and_bad_values_are_refused_by_key() -> None:
    got = problems({"ema": 150, "max_premium_bps": -1, "ema_s": 0})
    assert "markets.BTC-USD.perp.ema: unknown key (typo?)" in got
    assert any(p.startswith("markets.BTC-USD.perp.max_premium_bps:") for p in got)
    assert any(p.startswith("markets.BTC-USD.perp.ema_s:") for p in got)
    got = problems({"external": [{"source": "x1", "pair": "BTC-USDT", "wieght": 2}]})
    assert "markets.BTC-USD.perp.external[0].wieght: unknown key (typo?)" in got


def test_perp_refs_are_checked_like_tier_entries() -> None:
    got = problems(
        {
            "book": {"source": "nowhere", "pair": "BTC-PERP"},
            "external": [
                {"source": "x1", "pair": "BTC-USDT", "convert": "EUR-USD"},
                {"source": "x2", "pair": "BTC-USDT", "convert": "BTC-USD"},
                {"source": "x2", "pair": "BTC-USDT"},
            ],
        }
    )
    assert got == [
        "markets.BTC-USD.perp.book.source: 'nowhere' is not defined under [sources]",
        "markets.BTC-USD.perp.external[0].convert: 'EUR-USD' is not a market",
        "markets.BTC-USD.perp.external[1].convert: a market cannot convert through itself",
        "markets.BTC-USD.perp.external[2]: x2 BTC-USDT appears twice",
    ]
    got = problems({"external": [{"source": "x2", "pair": "BTC-USDT", "weight": 0}]})
    assert got == ["markets.BTC-USD.perp.external[0].weight: Input should be greater than 0"]


def test_perp_needs_a_book() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "sources": {"a": {"kind": "coinbase"}},
                "markets": {"BTC-USD": {"sources": [{"source": "a", "pair": "BTC-USD"}], "min_sources": 1, "perp": {}}},
            }
        )
    assert exc.value.problems == ["markets.BTC-USD.perp.book: Field required"]


# --- inside the tick pipeline -------------------------------------------------------------------


def test_the_pipeline_computes_the_perp_after_the_index_and_sets_its_metrics() -> None:
    from oracle.metrics import Metrics
    from oracle.models import Status
    from oracle.pipeline import Pipeline
    from oracle.validation.stage import DisputeStage

    s = settings({"external": []})
    book = QuoteBook.for_settings(s)
    metrics = Metrics()
    pipeline = Pipeline(s, book, metrics, DisputeStage(s))
    for src in ("a", "b", "c"):
        book.update(Quote(src, "BTC-USD", 100.0, NOW))
    for src in ("a", "b"):
        book.update(Quote(src, "USDT-USD", 1.0, NOW))
    book.update(Quote("venue", "BTC-PERP", 100.5, NOW, 100.4, 100.6, last=100.5))
    out = pipeline.tick(NOW)
    (perp,) = out.perps
    assert (perp.market, perp.status, perp.index, perp.c1, perp.c2, perp.c3) == (
        "BTC-USD", Status.OK, 100.0, 100.5, 100.5, 100.0,
    )  # fmt: skip
    assert perp.price == 100.5 and out.perp_publish == [perp]
    assert metrics.registry.get_sample_value("markd_perp_price", {"market": "BTC-USD"}) == 100.5
    premium = metrics.registry.get_sample_value("markd_perp_premium_bps", {"market": "BTC-USD"})
    assert premium == pytest.approx(50.0)
    assert pipeline.tick(NOW + 0.25).perp_publish == []  # unchanged, index not re-published: not due
