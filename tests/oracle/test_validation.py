"""The validation stage over arrays (oracle.validation) against the per-market stage it replaces.

`Pipeline.tick` advances the markets nothing happens to in a few array steps and sends only the
others through `DisputeStage.process`. The reference here is the tick as it was: every candidate
through `process`, one by one. Over generated paths (tier flaps, jumps and windows, outliers and
stale sources, tiers that disagree, anchor breaches, manual disputes opened and ruled between ticks)
both must give the same marks, publish decisions, events and disputes, tick by tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disputes.model import DisputeError, Event
from oracle.aggregate import Aggregator
from oracle.metrics import Metrics
from oracle.models import Candidate, Mark, Quote
from oracle.pipeline import Pipeline
from oracle.quotebook import QuoteBook
from oracle.settings import Settings, parse_settings
from oracle.validation.stage import DisputeStage

T0 = 1_700_000_000.0
TICK_S = 1.0
NAMES = ("a", "b", "c", "d", "e", "f")
# Three markets: three tiers (a b c | d e | f), two tiers (a b c | d e), one tier (a b c).
LAYOUT = {
    "X-USD": (("a", "b", "c"), ("d", "e"), ("f",)),
    "Y-USD": (("a", "b", "c"), ("d", "e")),
    "Z-USD": (("a", "b", "c"),),
}
POLICY = {
    "min_sources": 3,
    "max_age_ms": 2500,  # a source that stops quoting goes stale on the third tick
    "max_deviation_bps": 150,
    "max_jump_bps": 500,
    "dispute_window_ms": 3000,
    "heartbeat_ms": 2000,
    "recover_ticks": 2,
    "anchor_window_s": 120,  # 2 s buckets: one closes every other tick
    "anchor_deviation_bps": 800,
    "freeze_ticks": 3,
}


def _settings(**policy: Any) -> Settings:
    markets: dict[str, Any] = {}
    for m, tiers in LAYOUT.items():
        refs = [[{"source": s, "pair": m} for s in tier] for tier in tiers]
        markets[m] = {"sources": refs[0], **({"fallback": refs[1:]} if len(refs) > 1 else {})}
    return parse_settings(
        {"policy": {**POLICY, **policy}, "sources": {n: {"kind": "coinbase"} for n in NAMES}, "markets": markets}
    )


@dataclass
class Tick:
    marks: list[str]
    publish: list[str]
    events: list[str]


class Reference:
    """The tick before the array stage: every candidate through DisputeStage.process."""

    def __init__(self, s: Settings, book: QuoteBook) -> None:
        self.book, self.stage, self.aggregator = book, DisputeStage(s), Aggregator(s, book)

    def tick(self, now: float) -> Tick:
        publish: list[Mark] = []
        events: list[Event] = []

        def validate(cands: list[Candidate]) -> list[Mark]:
            marks = []
            for cand in cands:
                d = self.stage.process(cand, now)
                marks.append(d.mark)
                publish.extend([d.mark] if d.publish else [])
                events.extend(d.events)
            return marks

        marks = self.aggregator.run(self.book.snapshot(), now, validate)
        return Tick([repr(m) for m in marks], [repr(m) for m in publish], [repr(e) for e in events])


class Arrays:
    def __init__(self, s: Settings, book: QuoteBook) -> None:
        self.stage = DisputeStage(s)
        self.pipeline = Pipeline(s, book, Metrics(), self.stage)
        self.pipeline.array_min_markets = 0  # the array path for these few markets too

    def tick(self, now: float) -> Tick:
        out = self.pipeline.tick(now)
        return Tick([repr(m) for m in out.marks], [repr(m) for m in out.publish], [repr(e) for e in out.events])


# One tick of the path: each market's move, each source's fate, the fallback tiers' offset, and an
# operator's action before the tick.
moves = st.sampled_from([0.0, 0.0, 0.0, 0.001, -0.001, 0.02, -0.02, 0.08, -0.08, 0.3])
fates = st.sampled_from(["quote"] * 8 + ["silent", "outlier", "stuck"])
ops = st.sampled_from([None] * 6 + ["open", "uphold", "reject"])
ticks = st.lists(
    st.tuples(
        st.tuples(*(moves for _ in LAYOUT)),
        st.tuples(*(fates for _ in NAMES)),
        st.sampled_from([0.0, 0.0, 0.0, 0.05]),  # the fallback tiers quote 5 % off: tiers disagree
        ops,
        st.integers(0, len(LAYOUT) - 1),
    ),
    min_size=5,
    max_size=40,
)


def _quotes(levels: dict[str, float], fates: tuple[str, ...], offset: float, now: float) -> list[Quote]:
    out = []
    for m, tiers in LAYOUT.items():
        for t, tier in enumerate(tiers):
            for s in tier:
                fate = fates[NAMES.index(s)]
                price = levels[m] * (1 + (offset if t else 0.0)) * (1 + 1e-5 * NAMES.index(s))
                if fate == "silent":
                    continue
                if fate == "outlier":
                    price *= 1.1
                if fate == "stuck":
                    price = 100.0
                out.append(Quote(s, m, price, now))
    return out


def _operate(stages: list[DisputeStage], op: str | None, market: str, now: float) -> None:
    """The same manual action on both stages (their dispute ids match: same counter, same clock)."""
    if op is None:
        return
    for stage in stages:
        try:
            if op == "open":
                stage.open_dispute(market, "manual", now, note="test")
                continue
            open_ = [d for d in stage.disputes() if d.is_open and d.market == market]
            if open_:
                stage.resolve(open_[0].id, "uphold" if op == "uphold" else "reject", now)
        except DisputeError:
            pass


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks)
def test_the_array_stage_gives_what_the_per_market_stage_gives(path):
    _compare(_settings(), path)


def _compare(s: Settings, path: list[Any]) -> list[str]:
    """Run `path` through both; returns the events (the reference's, equal to the array stage's)."""
    seen = []
    books = QuoteBook.for_settings(s), QuoteBook.for_settings(s)
    ref, arr = Reference(s, books[0]), Arrays(s, books[1])
    levels = {m: 100.0 + 10 * i for i, m in enumerate(LAYOUT)}
    for k, (market_moves, fates, offset, op, at) in enumerate(path):
        now = T0 + k * TICK_S
        _operate([ref.stage, arr.stage], op, list(LAYOUT)[at], now - TICK_S / 2)
        for m, move in zip(LAYOUT, market_moves, strict=True):
            levels[m] *= 1 + move
        for book in books:
            for quote in _quotes(levels, fates, offset, now):
                book.update(quote)
        want, got = ref.tick(now), arr.tick(now)
        assert got.marks == want.marks, k
        assert got.publish == want.publish, k
        assert got.events == want.events, k
        seen += want.events
    assert [repr(d) for d in arr.stage.disputes()] == [repr(d) for d in ref.stage.disputes()]
    return seen


def test_a_confirmed_anchor_breach_is_confirmed_again_after_quiet_ticks():
    """`anchor_confirmed` is reset by the quiet path when the anchor catches up, so the next genuine
    breach is announced again (a short anchor window so that it catches up within the path)."""
    calm, up = (
        ((0.0, 0.0, 0.0), ("quote",) * len(NAMES), 0.0, None, 0),
        ((0.3, 0.0, 0.0), ("quote",) * len(NAMES), 0.0, None, 0),
    )
    path = [calm] * 3 + [up] + [calm] * 12 + [up] + [calm] * 6
    events = _compare(_settings(anchor_window_s=6, anchor_deviation_bps=800), path)
    assert sum("ANCHOR_CONFIRMED" in e for e in events) == 2


def test_a_quiet_tick_validates_without_building_a_candidate():
    """The point of the array stage: once the markets are settled, a tick that changes nothing but
    prices sends no market through the per-market stage (no Candidate is built)."""
    s = _settings()
    book = QuoteBook.for_settings(s)
    arr = Arrays(s, book)
    calm = ("quote",) * len(NAMES)
    levels = {m: 100.0 + 10 * i for i, m in enumerate(LAYOUT)}
    for k in range(6):
        for quote in _quotes(levels, calm, 0.0, T0 + k):
            book.update(quote)
        out = arr.pipeline.tick(T0 + k)
    assert out.candidates == [] and len(out.marks) == len(LAYOUT)
    assert [m.status.value for m in out.marks] == ["ok"] * len(LAYOUT)


def test_a_reloaded_stage_keeps_each_market_state_in_its_new_row():
    """A reload renumbers the stage's rows (a market added before the others): the kept markets'
    state (tier, streaks, last price, anchor, open disputes) follows them to their new rows."""
    s = _settings()
    book = QuoteBook.for_settings(s)
    arr = Arrays(s, book)
    levels = {m: 100.0 + 10 * i for i, m in enumerate(LAYOUT)}
    calm = ("quote",) * len(NAMES)
    for k in range(4):
        for quote in _quotes(levels, calm, 0.0, T0 + k):
            book.update(quote)
        arr.pipeline.tick(T0 + k)
    d = arr.stage.open_dispute("Y-USD", "manual", T0 + 4)
    raw = {"policy": POLICY, "sources": {n: {"kind": "coinbase"} for n in NAMES}}
    markets = {"A-USD": {"sources": [{"source": n, "pair": "A-USD"} for n in "abc"]}}
    markets.update({m: {"sources": [{"source": n, "pair": m} for n in "abc"]} for m in LAYOUT})
    new = parse_settings({**raw, "markets": markets})
    arr.stage.reconfigure(new)
    new_book = QuoteBook.for_settings(new)
    new_book.carry(book)
    pipeline = Pipeline(new, new_book, Metrics(), arr.stage)
    pipeline.array_min_markets = 0
    pipeline.carry(arr.pipeline)
    for quote in _quotes(levels, calm, 0.0, T0 + 5):
        new_book.update(quote)
    marks = pipeline.tick(T0 + 5).marks.by_market()
    assert marks["Y-USD"].status.value == "held" and marks["Y-USD"].ts == T0 + 3  # still disputed
    assert marks["X-USD"].status.value == "ok" and marks["X-USD"].ts == T0 + 5
    assert "A-USD" not in {m for m, _ in arr.stage.open_counts().items() if _}
    assert arr.stage.dispute(d.id).is_open
