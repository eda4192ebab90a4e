"""The aggregation rules, each alone, through the public API, against hand-computed numbers.

Prices are multiples of 1/4 wherever possible, so every expected value is exact in binary floating point.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import pytest

from oracle.aggregate import Aggregator
from oracle.models import Candidate, Exclusion, Mark, Quote, Status
from oracle.quotebook import QuoteBook

from .helpers import NOW, accept, config, one_market, q, refs, tick

# --- staleness ------------------------------------------------------------------------------------


def test_quote_older_than_max_age_by_receive_time_is_stale() -> None:
    s = one_market("abcd", max_age_ms=5000)
    t = tick(s, [q("a", 100.0), q("b", 100.25, age=5.0), q("c", 100.5, age=5.001), q("d", 100.75, age=1)])
    # exactly max_age old still counts; a millisecond more is stale
    assert t.excluded("BTC-USD") == {("c", "stale")}
    assert t.candidates["BTC-USD"].tiers[0].sources == ("a", "b", "d")
    assert t.price("BTC-USD") == 100.25


def test_staleness_uses_receive_time_not_venue_time() -> None:
    s = one_market("abc", max_age_ms=5000)
    t = tick(s, [q("a", 100.0, venue_ts=NOW - 3600), q("b", 100.25), q("c", 100.5)])
    assert t.excluded("BTC-USD") == set()
    assert t.price("BTC-USD") == 100.25


def test_market_max_age_override_applies() -> None:
    s = config({"BTC-USD": {"sources": refs("abc"), "max_age_ms": 1000}}, min_sources=2, max_age_ms=5000)
    t = tick(s, [q("a", 100.0), q("b", 100.5, age=2), q("c", 101.0)])
    assert t.excluded("BTC-USD") == {("b", "stale")}
    assert t.price("BTC-USD") == 100.5


# --- future venue time -----------------------------------------------------------------------------


def test_venue_time_ahead_of_the_clock_by_more_than_max_age_is_future() -> None:
    s = one_market("abcd", max_age_ms=5000, min_sources=3)
    t = tick(
        s,
        [
            q("a", 100.0, venue_ts=NOW + 5.0),  # exactly max_age ahead: allowed
            q("b", 100.25, venue_ts=NOW + 5.5),
            q("c", 100.5),
            q("d", 100.75, venue_ts=NOW),
        ],
    )
    assert t.excluded("BTC-USD") == {("b", "future")}
    assert t.price("BTC-USD") == 100.5


# --- sanity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1.0, -100.25])
def test_non_finite_zero_or_negative_price_fails_sanity(bad: float) -> None:
    s = one_market("abcd")
    t = tick(s, [q("a", bad), q("b", 100.0), q("c", 100.25), q("d", 100.5)])
    (ex,) = t.candidates["BTC-USD"].excluded
    assert (ex.source, ex.pair, ex.reason) == ("a", "BTC-USD", Exclusion.SANITY)
    assert ex.price == bad or (math.isnan(ex.price) and math.isnan(bad))
    assert t.price("BTC-USD") == 100.25


def test_price_bounds_are_exclusive() -> None:
    s = one_market("abcde", min_price=50.0, max_price=200.0, max_deviation_bps=10_000)
    t = tick(s, [q("a", 50.0), q("b", 50.25), q("c", 100.0), q("d", 199.75), q("e", 200.0)])
    assert t.excluded("BTC-USD") == {("a", "sanity"), ("e", "sanity")}
    assert t.candidates["BTC-USD"].tiers[0].sources == ("b", "c", "d")
    assert t.price("BTC-USD") == 100.0


def test_zero_bounds_mean_none() -> None:
    s = one_market("abc", max_deviation_bps=10_000)
    t = tick(s, [q("a", 1e-9), q("b", 1.5e-9), q("c", 1.75e-9)])
    assert t.excluded("BTC-USD") == set()
    assert t.price("BTC-USD") == 1.5e-9


def test_first_failed_rule_is_the_reason() -> None:
    # stale and insane at once: stale comes first in the rule order
    s = one_market("abcd")
    t = tick(s, [q("a", math.nan, age=60), q("b", -1.0, venue_ts=NOW + 60), q("c", 100.0), q("d", 100.0)])
    assert t.excluded("BTC-USD") == {("a", "stale"), ("b", "future")}


# --- conversion --------------------------------------------------------------------------------------


def _converting(**policy: float) -> object:
    usdt = {"sources": refs("abc", "USDT-USD")}
    btc = {
        "sources": [
            {"source": "a", "pair": "BTC-USD"},
            {"source": "b", "pair": "BTC-USD"},
            {"source": "c", "pair": "BTC-USDT", "convert": "USDT-USD"},
        ]
    }
    policy.setdefault("min_sources", 2)
    return config({"BTC-USD": btc, "USDT-USD": usdt}, "abc", **policy)


USDT_QUOTES = [q("a", 0.998, pair="USDT-USD"), q("b", 0.996, pair="USDT-USD"), q("c", 1.0, pair="USDT-USD")]


def test_converted_quote_is_multiplied_by_the_convert_markets_mark_of_the_same_tick() -> None:
    s = _converting()
    btc = [q("a", 99.75), q("b", 100.0), q("c", 100.125, pair="BTC-USDT")]
    t = tick(s, [*USDT_QUOTES, *btc])  # a fresh Aggregator: no USDT-USD mark before this tick
    assert t.marks["USDT-USD"].price == 0.998
    # sorted: 99.75, 100.125 x 0.998 = 99.92475, 100.0
    assert t.price("BTC-USD") == 100.125 * 0.998
    assert t.candidates["BTC-USD"].tiers[0].sources == ("a", "b", "c")


def test_converted_quote_without_a_convert_mark_is_excluded_as_conversion() -> None:
    s = _converting()
    stale_usdt = [Quote(x.source, x.pair, x.price, NOW - 60) for x in USDT_QUOTES]
    t = tick(s, [*stale_usdt, q("a", 99.75), q("b", 100.0), q("c", 100.125, pair="BTC-USDT")])
    assert "USDT-USD" not in t.marks
    assert t.excluded("BTC-USD") == {("c", "conversion")}
    (ex,) = t.candidates["BTC-USD"].excluded
    assert (ex.pair, ex.price) == ("BTC-USDT", 100.125)  # as quoted, before conversion
    assert t.price("BTC-USD") == (99.75 + 100.0) / 2


def test_converted_quote_is_excluded_when_the_convert_candidate_is_not_validated() -> None:
    s = _converting()

    def hold_usdt(cands: list[Candidate]) -> list[Mark]:
        return [m for m in accept(cands) if m.market != "USDT-USD"]

    t = tick(s, [*USDT_QUOTES, q("a", 99.75), q("b", 100.0), q("c", 100.125, pair="BTC-USDT")], validate=hold_usdt)
    assert t.excluded("BTC-USD") == {("c", "conversion")}


def test_conversion_uses_a_validated_mark_only_while_younger_than_its_markets_max_age() -> None:
    s = _converting(max_age_ms=5000)
    book = QuoteBook.for_settings(s)
    for x in USDT_QUOTES:
        book.update(x)
    agg = Aggregator(s, book)
    agg.run(book.snapshot(), NOW, accept)  # validates USDT-USD at NOW

    def no_usdt(cands: list[Candidate]) -> list[Mark]:
        return [m for m in accept(cands) if m.market != "USDT-USD"]

    for ts, excluded in ((NOW + 5.0, False), (NOW + 5.25, True)):
        for x in (Quote("a", "BTC-USD", 99.75, ts), Quote("b", "BTC-USD", 100.0, ts)):
            book.update(x)
        book.update(Quote("c", "BTC-USDT", 100.125, ts))
        seen: list[Candidate] = []

        def spy(cands: list[Candidate], seen: list[Candidate] = seen) -> list[Mark]:
            seen.extend(cands)
            return no_usdt(cands)

        agg.run(book.snapshot(), ts, spy)
        btc = next(c for c in seen if c.market == "BTC-USD")
        reasons = {(e.source, e.reason) for e in btc.excluded}
        assert reasons == ({("c", Exclusion.CONVERSION)} if excluded else set())
        assert btc.price == ((99.75 + 100.0) / 2 if excluded else 100.125 * 0.998)


def test_price_bounds_apply_to_the_converted_price() -> None:
    s = config(
        {
            "USDT-USD": {"sources": refs("abc", "USDT-USD")},
            "BTC-USD": {
                "sources": [*refs("ab"), {"source": "c", "pair": "BTC-USDT", "convert": "USDT-USD"}],
                "min_price": 50.0,
                "max_deviation_bps": 5000,
            },
        },
        "abc",
        min_sources=2,
    )
    usdt = [q(x, 0.5, pair="USDT-USD") for x in "abc"]
    t = tick(s, [*usdt, q("a", 60.0), q("b", 60.0), q("c", 100.0, pair="BTC-USDT")])  # 100 x 0.5 = 50
    assert t.excluded("BTC-USD") == {("c", "sanity")}
    assert t.price("BTC-USD") == 60.0


# --- deviation ---------------------------------------------------------------------------------------


def test_quote_beyond_max_deviation_of_the_tier_median_is_excluded() -> None:
    s = one_market("abcd", max_deviation_bps=100)
    # tier median: (100 + 100.5) / 2 = 100.25; 101.5 is 1.25 % above it, 100 is 0.25 % below
    t = tick(s, [q("a", 100.0), q("b", 100.0), q("c", 100.5), q("d", 101.5)])
    assert t.excluded("BTC-USD") == {("d", "deviation")}
    assert t.price("BTC-USD") == 100.0


def test_deviation_is_measured_against_each_tiers_own_median() -> None:
    s = one_market("abc", fallback=refs(["p", "r"]), max_deviation_bps=100)
    t = tick(s, [q("a", 100.0), q("b", 100.0), q("c", 100.0), q("p", 150.0), q("r", 150.5)])
    assert t.excluded("BTC-USD") == set()
    assert t.candidates["BTC-USD"].tiers[1].price == 150.25


# --- quorum and tiers --------------------------------------------------------------------------------


def test_without_min_sources_a_tier_has_no_price() -> None:
    s = one_market("abcd", min_sources=3)
    t = tick(s, [q("a", 100.0), q("b", 100.25), q("c", 100.5, age=10)])  # d never quoted
    c = t.candidates["BTC-USD"]
    (tier,) = c.tiers
    assert (tier.tier, tier.quorum, tier.sources) == (1, False, ("a", "b"))
    assert math.isnan(tier.price) and math.isnan(tier.confidence)
    assert c.tier == 0 and math.isnan(c.price)
    assert t.marks == {}


def test_tier_1_without_quorum_falls_through_to_tier_2() -> None:
    s = one_market("abc", fallback=refs(["p"]), min_sources=3)
    t = tick(s, [q("a", 100.0), q("b", 100.25), q("c", 100.5, age=10), q("p", 99.5)])
    c = t.candidates["BTC-USD"]
    assert c.tier == 2
    assert c.price == 99.5
    assert [(r.tier, r.quorum, r.sources) for r in c.tiers] == [(1, False, ("a", "b")), (2, True, ("p",))]
    assert t.marks["BTC-USD"].status == Status.DEGRADED


def test_tier_1_with_quorum_is_used_even_when_tier_2_has_one() -> None:
    s = one_market("abc", fallback=refs(["p"]), min_sources=3)
    t = tick(s, [q("a", 100.0), q("b", 100.25), q("c", 100.5), q("p", 99.5)])
    c = t.candidates["BTC-USD"]
    assert (c.tier, c.price) == (1, 100.25)
    assert c.tiers[1].price == 99.5


def test_no_tier_with_quorum_gives_tier_0_and_no_price() -> None:
    s = one_market("abc", fallback=refs(["p"]), min_sources=3)
    t = tick(s, [q("a", 100.0), q("b", 100.25), q("p", 99.5, age=10)])
    c = t.candidates["BTC-USD"]
    assert c.tier == 0
    assert math.isnan(c.price)
    assert [r.quorum for r in c.tiers] == [False, False]
    assert t.excluded("BTC-USD") == {("p", "stale")}


def test_fallback_tier_quorum_is_min_of_min_sources_and_its_size() -> None:
    s = one_market("abcd", fallback=refs(["p", "r"]), min_sources=3)
    both = tick(s, [q("a", 100.0), q("p", 99.5), q("r", 99.75)])
    assert (both.candidates["BTC-USD"].tier, both.price("BTC-USD")) == (2, 99.625)  # quorum 2 of 2
    one = tick(s, [q("a", 100.0), q("p", 99.5)])
    assert one.candidates["BTC-USD"].tier == 0  # 1 of 2 is below min(3, 2)


def test_several_fallback_tiers_are_tried_in_order() -> None:
    s = one_market("abc", fallback=[refs(["p", "r"]), refs(["z"])], min_sources=2)
    t = tick(s, [q("a", 100.0), q("p", 99.5), q("z", 98.0)])
    c = t.candidates["BTC-USD"]
    assert [r.tier for r in c.tiers] == [1, 2, 3]
    assert (c.tier, c.price) == (3, 98.0)


# --- methods -----------------------------------------------------------------------------------------


def test_median_of_an_odd_count_is_the_middle_price() -> None:
    t = tick(one_market("abc"), [q("a", 101.0), q("b", 100.0), q("c", 100.5)])
    assert t.price("BTC-USD") == 100.5


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_prices() -> None:
    t = tick(one_market("abcd"), [q("a", 101.0), q("b", 100.0), q("c", 100.5), q("d", 100.25)])
    assert t.price("BTC-USD") == 100.375


def _weighted(weights: dict[str, float], **policy: object) -> object:
    sources = {n: {"kind": "coinbase", "weight": w} for n, w in weights.items()}
    return config(
        {"BTC-USD": {"sources": refs(weights)}},
        sources,
        method="weighted_median",
        min_sources=3,
        max_deviation_bps=1000,
        **policy,
    )


def test_weighted_median_uses_source_weights() -> None:
    s = _weighted({"a": 3.0, "b": 1.0, "c": 1.0})
    t = tick(s, [q("a", 100.0), q("b", 101.0), q("c", 101.5)])
    c = t.candidates["BTC-USD"]
    assert c.price == 100.0  # a alone holds 3/5 of the weight; the plain median would be 101
    # weighted nearest-rank quartiles: p25 = p50 = 100, p75 = 101
    assert c.tiers[0].confidence == 1.0


def test_weighted_median_on_exactly_half_the_weight_takes_the_midpoint() -> None:
    s = _weighted({"a": 1.0, "b": 1.0, "c": 2.0})
    t = tick(s, [q("a", 100.0), q("b", 100.5), q("c", 101.0)])
    assert t.price("BTC-USD") == 100.75


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_weighted_median_with_equal_weights_equals_median(n: int) -> None:
    names = "abcdef"[:n]
    prices = [100.0, 101.0, 100.25, 100.75, 100.5, 99.75][:n]
    quotes = [q(x, p) for x, p in zip(names, prices, strict=True)]
    weighted = tick(_weighted(dict.fromkeys(names, 2.5)), quotes).candidates["BTC-USD"].tiers[0]
    plain = tick(one_market(names, max_deviation_bps=1000), quotes).candidates["BTC-USD"].tiers[0]
    assert weighted.price == plain.price == float(np.median(prices))
    assert weighted.confidence == plain.confidence


def test_trimmed_mean_cuts_trim_of_the_quotes_from_each_end() -> None:
    s = one_market("abcde", method="trimmed_mean", trim=0.2)
    # floor(0.2 x 5) = 1 cut from each end: mean of 100.25, 100.5, 101
    t = tick(s, [q("a", 100.0), q("b", 101.25), q("c", 100.5), q("d", 101.0), q("e", 100.25)])
    assert t.price("BTC-USD") == (100.25 + 100.5 + 101.0) / 3


def test_trimmed_mean_with_zero_trim_is_the_mean() -> None:
    s = one_market("abcd", method="trimmed_mean", trim=0.0)
    t = tick(s, [q("a", 100.0), q("b", 101.25), q("c", 100.5), q("d", 101.0)])
    assert t.price("BTC-USD") == 100.6875


@pytest.mark.parametrize("n", [3, 9])
def test_trimmed_mean_of_equal_prices_is_that_price(n: int) -> None:
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004, and / 3 gives 0.10000000000000002: above every quote
    s = one_market("abcdefghi"[:n], method="trimmed_mean", trim=0.0)
    t = tick(s, [q(x, 0.1) for x in "abcdefghi"[:n]])
    assert t.price("BTC-USD") == 0.1


def test_trimmed_mean_uses_the_markets_trim_override() -> None:
    s = config({"BTC-USD": {"sources": refs("abcde"), "trim": 0.4}}, "abcde", method="trimmed_mean", trim=0.1)
    # floor(0.4 x 5) = 2 from each end leaves the middle price
    t = tick(s, [q("a", 100.0), q("b", 101.25), q("c", 100.5), q("d", 101.0), q("e", 100.25)])
    assert t.price("BTC-USD") == 100.5


def test_each_market_uses_its_own_method() -> None:
    s = config(
        {
            "A-USD": {"sources": refs("abcd", "A-USD"), "method": "trimmed_mean", "trim": 0.0},
            "B-USD": {"sources": refs("abcd", "B-USD")},
        },
        "abcd",
    )
    prices = [100.0, 101.25, 100.5, 101.0]
    quotes = [q(x, p, pair=m) for m in ("A-USD", "B-USD") for x, p in zip("abcd", prices, strict=True)]
    t = tick(s, quotes)
    assert (t.price("A-USD"), t.price("B-USD")) == (100.6875, 100.75)


# --- confidence --------------------------------------------------------------------------------------


def test_confidence_is_the_larger_nearest_rank_quartile_gap() -> None:
    four = tick(one_market("abcd"), [q("a", 100.0), q("b", 100.25), q("c", 100.5), q("d", 101.0)])
    # n = 4: p25 = 1st = 100, p50 = 2nd = 100.25, p75 = 3rd = 100.5
    assert four.candidates["BTC-USD"].tiers[0].confidence == 0.25
    five = tick(one_market("abcde"), [q("a", 100.0), q("b", 100.25), q("c", 100.5), q("d", 101.0), q("e", 101.25)])
    # n = 5: p25 = 2nd = 100.25, p50 = 3rd = 100.5, p75 = 4th = 101
    assert five.candidates["BTC-USD"].tiers[0].confidence == 0.5


def test_confidence_is_never_below_the_mean_own_half_width() -> None:
    s = one_market("abc")
    quotes = [
        Quote.from_book("a", "BTC-USD", NOW, bid=99.0, ask=101.0, last=None),  # half spread 1
        q("b", 100.0, confidence=0.5),  # Pyth-style conf
        q("c", 100.0),  # nothing of its own: 0
    ]
    t = tick(s, quotes)
    assert t.price("BTC-USD") == 100.0
    assert t.candidates["BTC-USD"].tiers[0].confidence == 0.5  # (1 + 0.5 + 0) / 3; the spread is 0


def test_spread_wins_over_a_smaller_own_half_width() -> None:
    s = one_market("abc")
    t = tick(s, [q("a", 100.0, confidence=0.25), q("b", 101.0), q("c", 102.0)])
    assert t.candidates["BTC-USD"].tiers[0].confidence == 1.0


def test_own_half_width_counts_accepted_quotes_only_and_converts() -> None:
    s = _converting(min_sources=2)
    usdt = [q(x, 0.5, pair="USDT-USD") for x in "abc"]
    btc = [
        q("a", 100.0),
        q("b", 100.0, confidence=7.0, age=60),
        q("c", 200.0, pair="BTC-USDT", confidence=3.0),
    ]
    t = tick(s, [*usdt, *btc])
    # b is stale so its conf does not count; c's conf 3 converts to 1.5: (0 + 1.5) / 2
    assert t.excluded("BTC-USD") == {("b", "stale")}
    assert t.price("BTC-USD") == 100.0
    assert t.candidates["BTC-USD"].tiers[0].confidence == 0.75


# --- exclusions listed -------------------------------------------------------------------------------


def test_every_excluded_quote_is_listed_with_its_reason() -> None:
    s = config(
        {
            "USDT-USD": {"sources": refs("ab", "USDT-USD"), "min_sources": 2},
            "BTC-USD": {
                "sources": [
                    *refs("abcdefg"),
                    {"source": "h", "pair": "BTC-USDT", "convert": "USDT-USD"},
                ],
                "fallback": refs(["p"]),
            },
        },
        "abcdefghp",
        max_deviation_bps=100,
        min_sources=3,
    )
    quotes = [
        q("a", 0.5, pair="USDT-USD", age=60),  # USDT-USD has no quorum: no mark
        q("a", 100.0, age=6),
        q("b", 100.0, venue_ts=NOW + 6),
        q("c", math.inf),
        q("d", 100.0),
        q("e", 100.25),
        q("f", 100.5),
        q("g", 110.0),
        q("h", 100.0, pair="BTC-USDT"),
        q("p", 0.0),
    ]
    c = tick(s, quotes).candidates["BTC-USD"]
    assert sorted((e.source, e.pair, str(e.reason), e.price) for e in c.excluded) == [
        ("a", "BTC-USD", "stale", 100.0),
        ("b", "BTC-USD", "future", 100.0),
        ("c", "BTC-USD", "sanity", math.inf),
        ("g", "BTC-USD", "deviation", 110.0),
        ("h", "BTC-USDT", "conversion", 100.0),
        ("p", "BTC-USD", "sanity", 0.0),
    ]
    assert c.tiers[0].sources == ("d", "e", "f")
    assert (c.tier, c.price) == (1, 100.25)


def test_a_frozen_quote_is_excluded_as_frozen_before_deviation() -> None:
    # oracle/freeze.py: d sits at 100.75 while its peers' median climbs 2 %; after freeze_ticks it is
    # reported as frozen, the first rule it fails, though it is beyond max_deviation_bps too.
    s = one_market("abcd", freeze_ticks=2, max_deviation_bps=150)
    book = QuoteBook.for_settings(s)
    agg = Aggregator(s, book)
    seen: list[Candidate] = []
    for t, p in enumerate((100.0, 101.0, 102.0, 103.0)):
        for x in (q("a", p, age=-t), q("b", p + 0.25, age=-t), q("c", p + 0.5, age=-t), q("d", 100.75, age=-t)):
            book.update(x)
        agg.run(book.snapshot(), NOW + t, lambda c: seen.extend(c) or accept(c))
    assert [[(e.source, e.reason) for e in c.excluded] for c in seen] == [
        [],
        [],
        [("d", Exclusion.FROZEN)],  # peers 1.2 % and 2.2 % away from 100.25 (above 25 bps) for two ticks
        [("d", Exclusion.FROZEN)],
    ]
    assert seen[-1].price == 103.25


# --- blocks and the raw pass ---------------------------------------------------------------------------


def test_a_level_cut_into_several_blocks_gives_the_same_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    markets = {
        f"M{i}-USD": {"sources": refs("abc", f"M{i}-USD"), "fallback": refs(["p"], f"M{i}-USD")} for i in range(5)
    }
    markets["M2-USD"]["method"] = "trimmed_mean"
    s = config(markets, "abcp", min_sources=3)
    quotes = [
        q(x, 100.0 + i + 0.25 * j, pair=f"M{i}-USD", age=10.0 if (i, x) == (3, "b") else 0.0)
        for i in range(5)
        for j, x in enumerate("abcp")
    ]
    whole = tick(s, quotes)
    monkeypatch.setattr("oracle.aggregate.BLOCK_ROWS", 3)  # 2 tiers a market: one market a block
    book = QuoteBook.for_settings(s)
    for x in quotes:
        book.update(x)
    agg = Aggregator(s, book)
    assert [len(level) for level in agg.plan.levels] == [5]
    cut = tick(s, quotes)
    assert list(cut.candidates) == list(whole.candidates) == list(markets)
    for m in markets:
        assert repr(cut.candidates[m]) == repr(whole.candidates[m])  # repr: NaN == NaN
    assert [cut.price(m) for m in markets] == [100.25, 101.25, 102.25, 103.75, 104.25]
    assert cut.candidates["M3-USD"].tier == 2


def test_run_block_reports_reason_codes_and_raw_prices() -> None:
    from oracle.aggregate import CONVERSION, DEVIATION, SANITY, STALE, run_block

    s = _converting()
    book = QuoteBook.for_settings(s)
    for x in (q("a", 100.0, age=10), q("b", -5.0), q("c", 100.0, pair="BTC-USDT")):
        book.update(x)
    agg = Aggregator(s, book)
    plan = agg.plan
    (block,) = plan.levels[1]
    no_marks = np.full(len(plan.markets), np.nan)
    res = run_block(block, book.snapshot(), NOW, no_marks, no_marks, plan.conv_max_age_s)
    assert res.reason.tolist() == [[STALE, SANITY, CONVERSION]]
    assert res.raw.tolist() == [[100.0, -5.0, 100.0]]
    assert res.accepted.tolist() == [[False, False, False]]
    assert res.quorum.tolist() == [False]
    assert DEVIATION == 6


def test_row_counts_equal_a_row_sum_for_any_width_and_layout():
    from oracle.aggregate import _row_counts

    rng = np.random.default_rng(3)
    for cols in (1, 7, 8, 16, 24, 248, 256):
        mask = rng.random((257, cols)) < 0.4
        mask[:3] = True  # full rows: the largest sums a row's bytes can reach
        for m in (mask, np.asfortranarray(mask), mask[::2]):
            assert np.array_equal(_row_counts(m), m.sum(axis=1))


_ODD = [0.0, -0.0, 5e-324, -5e-324, -1.0, 1e308, -1e308, math.inf, -math.inf, math.nan]


def _around(*points: float) -> np.ndarray:
    """Each finite point and the four doubles either side of it, with odd values and random ones."""
    out = [*_ODD, *np.exp(np.random.default_rng(5).normal(0, 1, 100)).tolist()]
    for x in points:
        if math.isfinite(x):
            for way in (-math.inf, math.inf):
                y = x
                for _ in range(4):
                    y = math.nextafter(y, way)
                    out.append(y)
            out.append(x)
    return np.array(out)


def test_deviation_cuts_answer_as_the_rule_for_every_ratio() -> None:
    from oracle.aggregate import _ratio_cuts

    d = np.array([0.0, 5e-324, 1e-9, 0.0025, 0.015, 1 / 3, 0.5, 0.999999, 1.0, 1.5, 2.0, 3.0, 1e300, math.inf])
    low, high = _ratio_cuts(d)
    for dev, lo, hi in zip(d.tolist(), low.tolist(), high.tolist(), strict=True):
        r = _around(lo, hi, 1.0 - dev, 1.0 + dev, 1.0, -dev)
        assert np.array_equal(r < lo, (r - 1.0) < -dev), dev
        assert np.array_equal(r >= hi, (r - 1.0) > dev), dev


def test_time_cuts_answer_as_the_staleness_and_future_rules_for_every_time() -> None:
    from oracle.aggregate import _time_cuts

    for now in (NOW, NOW + 0.1, NOW + 1 / 3, 0.0, 1.0, 1e300):
        for age in (0.0, 5e-324, 0.001, 5.0, 86_400.0, 1e300, math.inf):
            old, ahead = _time_cuts(now, age)
            t = _around(old, ahead, now - age, now + age, now, now + NOW)
            assert np.array_equal(t < old, (now - t) > age), (now, age)
            assert np.array_equal(t >= ahead, (t - now) > age), (now, age)


def test_the_median_quartile_is_the_lower_middle_of_any_window() -> None:
    from oracle.aggregate import _pick_table, _rank

    for cols in (1, 2, 3, 8, 16, 33, 128):
        assert np.array_equal(_rank(0.5, np.arange(cols + 1)), _pick_table(cols)[0])


def test_own_half_width_is_the_mean_of_the_counted_widths_zero_signs_included() -> None:
    from oracle.aggregate import _own_half_width, _Work

    own = np.array([[0.0, -0.0, 0.0], [-0.0, -0.0, -0.0], [0.5, math.nan, -1.0], [0.25, -0.0, 0.0], [0.0] * 3])
    ok = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1], [0, 0, 0]], dtype=bool)
    n = ok.sum(axis=1)
    got = _own_half_width(own, ok, n, _Work(own.shape, gather=False))
    # the widths >= 0 of accepted quotes (-0.0 too; NaN and negatives not), added from the left with
    # 0.0 for the others, over the accepted count: only a row of counted -0.0s sums to -0.0
    want = []
    for row, acc, k in zip(own.tolist(), ok.tolist(), n.tolist(), strict=True):
        total = functools.reduce(operator.add, [w if a and w >= 0 else 0.0 for w, a in zip(row, acc, strict=True)])
        want.append(total / k if k else 0.0)
    assert [math.copysign(1, x) for x in want] == [1, -1, 1, 1, 1]
    assert [math.copysign(1, x) for x in got] == [math.copysign(1, x) for x in want]
    assert got.tolist() == want
    only_zeros = np.zeros((4, 3))
    assert _own_half_width(only_zeros, ok[:4], n[:4], _Work((4, 3), gather=False)).tolist() == [0.0] * 4
