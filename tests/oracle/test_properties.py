"""Properties of the aggregation core and the config, on generated inputs (hypothesis)."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracle.models import Quote
from oracle.settings import ConfigError, parse_settings

from .helpers import NOW, config, refs, tick

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

prices = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
methods = st.sampled_from(["median", "weighted_median", "trimmed_mean"])
# dyadic own half-widths and weights: their sums are exact whatever the order
half_widths = st.sampled_from([None, 0.0, 0.25, 0.5, 2.0])
weights = st.sampled_from([0.5, 1.0, 2.0, 3.0])


@st.composite
def one_tier(draw: st.DrawFn) -> tuple[dict[str, Any], list[Quote]]:
    """A market of 3..8 sources with random policy, and a quote (maybe stale, maybe odd) from each."""
    n = draw(st.integers(3, 8))
    names = [f"s{i}" for i in range(n)]
    base = draw(prices)
    flat = draw(st.booleans())  # a quiet market: every fresh quote at the same price
    quotes = []
    for name in names:
        kind = draw(st.sampled_from(["same"] if flat else ["near", "near", "same", "far", "stale"]))
        if kind == "same":
            price = base  # equal prices: the mean of n equal floats must still be that float
        elif kind == "far":
            price = base * draw(st.floats(0.5, 2.0))
        else:
            price = base * (1 + draw(st.floats(-0.02, 0.02)))
        age = draw(st.floats(6.0, 60.0)) if kind == "stale" else draw(st.floats(0.0, 5.0))
        quotes.append(Quote(name, "X-USD", price, NOW - age, confidence=draw(half_widths)))
    policy = {
        "method": draw(methods),
        "trim": draw(st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.4])),
        "max_deviation_bps": draw(st.sampled_from([50, 150, 400, 10_000])),
        "min_sources": draw(st.integers(1, n)),
        "max_age_ms": 5000,
    }
    sources = {name: {"kind": "coinbase", "weight": draw(weights)} for name in names}
    return {"sources": sources, "names": names, "policy": policy}, quotes


def _settings(spec: dict[str, Any], order: list[str] | None = None) -> Any:
    names = order or spec["names"]
    return config({"X-USD": {"sources": refs(names, "X-USD")}}, spec["sources"], **spec["policy"])


@FAST
@given(one_tier())
def test_result_lies_within_the_accepted_prices(case: tuple[dict[str, Any], list[Quote]]) -> None:
    spec, quotes = case
    t = tick(_settings(spec), quotes)
    tier = t.candidates["X-USD"].tiers[0]
    if tier.quorum:
        accepted = [x.price for x in quotes if x.source in tier.sources]
        assert min(accepted) <= tier.price <= max(accepted)
        assert tier.confidence >= 0
    else:
        assert math.isnan(tier.price)


@FAST
@given(one_tier(), st.randoms(use_true_random=False))
def test_result_is_invariant_to_source_order(case: tuple[dict[str, Any], list[Quote]], rnd: Any) -> None:
    spec, quotes = case
    shuffled = list(spec["names"])
    rnd.shuffle(shuffled)
    a = tick(_settings(spec), quotes).candidates["X-USD"]
    b = tick(_settings(spec, shuffled), quotes).candidates["X-USD"]
    ta, tb = a.tiers[0], b.tiers[0]
    assert ta.quorum == tb.quorum
    assert set(ta.sources) == set(tb.sources)
    assert {(e.source, e.reason) for e in a.excluded} == {(e.source, e.reason) for e in b.excluded}
    if ta.quorum:
        assert ta.price == tb.price
        assert ta.confidence == tb.confidence


CORRUPTIONS = ["x1000", "zero", "nan", "minus_one", "inf"]


@FAST
@given(
    st.integers(3, 12).flatmap(
        lambda n: st.tuples(
            st.just(n),
            prices,
            st.lists(st.floats(-0.005, 0.005), min_size=n, max_size=n),
            st.lists(st.sampled_from(CORRUPTIONS), min_size=0, max_size=(n - 1) // 2),
        )
    ),
    st.randoms(use_true_random=False),
)
def test_median_with_fewer_than_half_corrupted_stays_within_the_honest_range(
    case: tuple[int, float, list[float], list[str]], rnd: Any
) -> None:
    n, base, noise, corruptions = case
    honest = [base * (1 + e) for e in noise]
    quoted = list(honest)
    victims = rnd.sample(range(n), len(corruptions))
    for i, kind in zip(victims, corruptions, strict=True):
        quoted[i] = {
            "x1000": honest[i] * 1000,
            "zero": 0.0,
            "nan": math.nan,
            "minus_one": -1.0,
            "inf": math.inf,
        }[kind]
    names = [f"s{i}" for i in range(n)]
    s = config({"X-USD": {"sources": refs(names, "X-USD")}}, names, min_sources=n - len(corruptions))
    t = tick(s, [Quote(name, "X-USD", p, NOW) for name, p in zip(names, quoted, strict=True)])
    kept = [honest[i] for i in range(n) if i not in victims]
    price = t.price("X-USD")
    assert min(kept) <= price <= max(kept)
    assert price == statistics.median(kept)
    assert {e.source for e in t.candidates["X-USD"].excluded} == {names[i] for i in victims}


@FAST
@given(st.data())
def test_a_conversion_cycle_is_refused_at_load_time(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 7), label="markets in the cycle")
    extra = data.draw(st.integers(0, 4), label="markets outside it")
    names = data.draw(st.permutations([f"M{i}-USD" for i in range(n + extra)]))
    cycle = names[:n]
    markets: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(cycle):
        ref = {"source": "a", "pair": "P-Q", "convert": cycle[(i + 1) % n]}
        in_fallback = data.draw(st.booleans())
        plain = {"source": "b", "pair": "P-Q"}
        markets[m] = {"sources": [plain], "fallback": [ref]} if in_fallback else {"sources": [ref]}
    for m in names[n:]:  # acyclic markets, possibly converting into the cycle
        conv = data.draw(st.sampled_from([None, *cycle]))
        markets[m] = {"sources": [{"source": "a", "pair": "P-Q", **({"convert": conv} if conv else {})}]}
    order = data.draw(st.permutations(list(markets)))
    raw = {
        "policy": {"min_sources": 1},
        "sources": {"a": {"kind": "okx"}, "b": {"kind": "kraken"}},
        "markets": {m: markets[m] for m in order},
    }
    with pytest.raises(ConfigError) as err:
        parse_settings(raw)
    (problem,) = err.value.problems
    head, _, path = problem.partition(": convert cycle ")
    hops = path.split(" -> ")
    assert head == f"markets.{hops[0]}"
    assert hops[0] == hops[-1] and sorted(hops[:-1]) == sorted(cycle)
    assert all(cycle[(cycle.index(a) + 1) % n] == b for a, b in itertools.pairwise(hops))


# --- the vectorised core against a per-market Python reference ------------------------------------------


@dataclass
class Ref:
    """One (market, tier) computed the obvious way."""

    price: float
    confidence: float
    accepted: tuple[str, ...]
    excluded: set[tuple[str, str, str]]


def _nearest_rank(values: list[float], q: float) -> float:
    return values[max(math.ceil(q * len(values) - 1e-9) - 1, 0)]


def _weighted_quantile(pairs: list[tuple[float, float]], q: float) -> float:
    total = sum(w for _, w in pairs)
    tol = 1e-12 * max(total, 1.0)
    cum = 0.0
    for p, w in pairs:
        cum += w
        if cum >= q * total - tol:
            return p
    raise AssertionError("unreachable")


def reference_tier(
    tier: list[dict[str, Any]],
    tier_no: int,
    pol: dict[str, Any],
    book: dict[tuple[str, str], Quote],
    rates: dict[str, float],
    weight: dict[str, float],
) -> Ref:
    max_age = pol["max_age_ms"] / 1000
    lo_bound = pol["min_price"]
    hi_bound = pol["max_price"] or math.inf
    ok: list[tuple[str, float, float]] = []  # name, converted price, converted half-width
    excluded: set[tuple[str, str, str]] = set()
    for r in tier:
        quote = book.get((r["source"], r["pair"]))
        if quote is None:
            continue
        rate = rates.get(r["convert"], math.nan) if r.get("convert") else 1.0
        price = quote.price * rate
        if NOW - quote.received_ts > max_age:
            why = "stale"
        elif quote.venue_ts is not None and quote.venue_ts - NOW > max_age:
            why = "future"
        elif not (math.isfinite(quote.price) and quote.price > 0):
            why = "sanity"
        elif math.isnan(rate):
            why = "conversion"
        elif price <= lo_bound or price >= hi_bound:
            why = "sanity"
        else:
            if quote.confidence is not None:
                hw = quote.confidence
            elif quote.bid is not None and quote.ask is not None:
                hw = (quote.ask - quote.bid) / 2
            else:
                hw = 0.0
            ok.append((r["source"], price, hw * rate))
            continue
        excluded.add((r["source"], r["pair"], why))
    if ok:
        centre = statistics.median([p for _, p, _ in ok])
        dev = pol["max_deviation_bps"] / 1e4
        for name, p, _ in ok:
            if abs(p / centre - 1.0) > dev:
                pair = next(r["pair"] for r in tier if r["source"] == name)
                excluded.add((name, pair, "deviation"))
        ok = [x for x in ok if abs(x[1] / centre - 1.0) <= dev]
    quorum = pol["min_sources"] if tier_no == 1 else min(pol["min_sources"], len(tier))
    accepted = tuple(name for r in tier for name, _, _ in ok if name == r["source"])
    if len(ok) < quorum or not ok:
        return Ref(math.nan, math.nan, accepted, excluded)
    values = sorted(p for _, p, _ in ok)
    n = len(values)
    if pol["method"] == "weighted_median":
        pairs = sorted((p, weight[name]) for name, p, _ in ok)
        total = sum(w for _, w in pairs)
        cum, price = 0.0, math.nan
        for i, (p, w) in enumerate(pairs):
            cum += w
            if cum >= total / 2 - 1e-12 * max(total, 1.0):
                on_half = abs(cum - total / 2) <= 1e-12 * max(total, 1.0)
                price = (p + pairs[i + 1][0]) / 2 if on_half and i + 1 < len(pairs) else p
                break
        q25, q50, q75 = (_weighted_quantile(pairs, q) for q in (0.25, 0.5, 0.75))
    else:
        if pol["method"] == "median":
            price = statistics.median(values)
        else:
            k = math.floor(pol["trim"] * n)
            price = statistics.fmean(values[k : n - k])
        q25, q50, q75 = (_nearest_rank(values, q) for q in (0.25, 0.5, 0.75))
    own = sum(max(hw, 0.0) for _, _, hw in ok) / n
    return Ref(price, max(q50 - q25, q75 - q50, own), accepted, excluded)


@st.composite
def random_world(draw: st.DrawFn) -> tuple[dict[str, Any], list[Quote]]:
    """1..4 markets; M0 is a quote market the others may convert through; odd quotes everywhere."""
    n_markets = draw(st.integers(1, 4))
    sources = [f"s{i}" for i in range(7)]
    fallbacks = ["p0", "p1", "p2"]
    weight = {s: draw(weights) for s in sources + fallbacks}
    markets: dict[str, dict[str, Any]] = {}
    quotes: list[Quote] = []
    for m in range(n_markets):
        name = f"M{m}-USD"
        base = 1.0 if m == 0 else draw(prices)
        size = draw(st.integers(1, 6))
        tier1 = []
        for s in draw(st.permutations(sources))[:size]:
            convert = m > 0 and draw(st.booleans())
            tier1.append(
                {"source": s, "pair": f"M{m}-USDT", "convert": "M0-USD"} if convert else {"source": s, "pair": name}
            )
        market: dict[str, Any] = {"sources": tier1}
        if draw(st.booleans()):
            market["fallback"] = [{"source": s, "pair": name} for s in fallbacks[: draw(st.integers(1, 3))]]
        if draw(st.booleans()):
            market["method"] = draw(methods)
        if draw(st.booleans()):
            market["max_deviation_bps"] = draw(st.sampled_from([25, 100, 300]))
        market["min_sources"] = draw(st.integers(1, size))
        if draw(st.booleans()):
            market["min_price"] = base * 0.9
            market["max_price"] = base * 1.1
        markets[name] = market
        for tier in (tier1, market.get("fallback", [])):
            for r in tier:
                if draw(st.integers(0, 9)) == 0:
                    continue  # this source has nothing for the pair
                kind = draw(st.sampled_from(["ok"] * 6 + ["outlier", "stale", "future", "bad", "book"]))
                p = base * (1 + draw(st.floats(-0.004, 0.004)))
                extra: dict[str, Any] = {"confidence": draw(half_widths)}
                age = draw(st.floats(0.0, 4.0))
                if kind == "outlier":
                    p *= draw(st.sampled_from([0.5, 0.95, 1.03, 1.2]))
                elif kind == "stale":
                    age = draw(st.floats(5.5, 100.0))
                elif kind == "future":
                    extra["venue_ts"] = NOW + draw(st.floats(5.5, 100.0))
                elif kind == "bad":
                    p = draw(st.sampled_from([math.nan, math.inf, 0.0, -1.0]))
                elif kind == "book":
                    spread = p * draw(st.floats(0.0, 0.001))
                    extra = {"bid": p - spread, "ask": p + spread}
                quotes.append(Quote(r["source"], r["pair"], p, NOW - age, **extra))
    raw = {
        "policy": {
            "method": draw(methods),
            "trim": draw(st.sampled_from([0.0, 0.2, 0.3])),
            "max_age_ms": 5000,
        },
        "sources": {s: {"kind": "coinbase", "weight": w} for s, w in weight.items()},
        "markets": dict(reversed(list(markets.items()))),  # defined after the markets that use it
    }
    return raw, quotes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_world())
def test_vectorised_core_equals_a_per_market_python_reference(
    world: tuple[dict[str, Any], list[Quote]],
) -> None:
    raw, quotes = world
    s = parse_settings(raw)
    t = tick(s, quotes)
    book = {(x.source, x.pair): x for x in quotes}
    weight = {n: src.weight for n, src in s.sources.items()}
    rates: dict[str, float] = {}
    for name in s.market_order():
        pol = s.policy_for(name).model_dump()
        tiers = [[r.model_dump() for r in tier] for tier in s.markets[name].tiers]
        expected = [reference_tier(tier, i + 1, pol, book, rates, weight) for i, tier in enumerate(tiers)]
        cand = t.candidates[name]
        assert cand.ts == NOW
        assert {(e.source, e.pair, str(e.reason)) for e in cand.excluded} == set().union(
            *(e.excluded for e in expected)
        )
        for got, want in zip(cand.tiers, expected, strict=True):
            assert got.sources == want.accepted
            assert got.quorum == (not math.isnan(want.price))
            if got.quorum:
                assert math.isclose(got.price, want.price, rel_tol=1e-12), (got, want)
                assert math.isclose(got.confidence, want.confidence, rel_tol=1e-9, abs_tol=1e-12), (got, want)
            else:
                assert math.isnan(got.price) and math.isnan(got.confidence)
        tier_no = cand.tier
        if tier_no:
            rates[name] = expected[tier_no - 1].price


# --- any config document: a Settings or a ConfigError, never another exception ---------------------------

_scalars = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.booleans(),
    st.sampled_from(["median", "coinbase", "pyth", "A-USD", "B-USD", "a", "X-Y", "redis://h"]),
)
_values = st.recursive(
    _scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=3),
        st.dictionaries(st.sampled_from(["source", "pair", "convert", "kind"]), c, max_size=3),
    ),
    max_leaves=6,
)
_ref = st.fixed_dictionaries(
    {"source": st.sampled_from(["a", "b", "zz"]), "pair": st.sampled_from(["X-Y", "bad"])},
    optional={"convert": st.sampled_from(["A-USD", "B-USD", "Q"]), "id": st.text(max_size=2)},
)
_tier = st.lists(st.one_of(_ref, _values), max_size=3)
_market = st.fixed_dictionaries(
    {},
    optional={
        "sources": _tier,
        "fallback": st.one_of(_tier, st.lists(_tier, max_size=2), _values),
        "min_sources": st.one_of(st.integers(-1, 5), _values),
        "trim": st.floats(-1, 1),
        "max_age_ms": _values,
        "typo": _values,
    },
)
_policy_keys = st.sampled_from(["min_sources", "trim", "max_age_ms", "method", "min_price", "max_price", "typo"])
_document = st.fixed_dictionaries(
    {},
    optional={
        "policy": st.one_of(st.dictionaries(_policy_keys, _values, max_size=4), _values),
        "sources": st.one_of(
            st.dictionaries(
                st.sampled_from(["a", "b"]),
                st.one_of(st.just({"kind": "pyth"}), st.just({"kind": "okx"}), _values),
                max_size=2,
            ),
            _values,
        ),
        "markets": st.one_of(
            st.dictionaries(st.sampled_from(["A-USD", "B-USD", "C-USD"]), st.one_of(_market, _values), max_size=3),
            _values,
        ),
        "redis": _values,
        "typo": _values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_document)
def test_any_document_gives_settings_or_a_config_error(doc: dict[str, Any]) -> None:
    try:
        parse_settings(doc)
    except ConfigError as err:
        assert err.problems
        assert all(isinstance(p, str) and ": " in p for p in err.problems), err.problems
