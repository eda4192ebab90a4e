"""Small builders shared by the foundation's tests: configs, quotes, and one aggregation tick."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from oracle.aggregate import Aggregator
from oracle.models import Candidate, Mark, Quote, Status
from oracle.quotebook import QuoteBook
from oracle.settings import Settings, parse_settings

NOW = 1_700_000_000.0


def refs(names: Iterable[str], pair: str = "BTC-USD", **extra: Any) -> list[dict[str, Any]]:
    return [{"source": n, "pair": pair, **extra} for n in names]


def config(
    markets: dict[str, dict[str, Any]],
    sources: Iterable[str] | dict[str, dict[str, Any]] = ("a", "b", "c", "d", "e"),
    **policy: Any,
) -> Settings:
    """A Settings from plain dicts: `sources` names become coinbase-kind sources."""
    if not isinstance(sources, dict):
        sources = {n: {"kind": "coinbase"} for n in sources}
    return parse_settings({"policy": policy, "sources": sources, "markets": markets})


def one_market(names: Sequence[str], pair: str = "BTC-USD", fallback: Any = None, **policy: Any) -> Settings:
    """One market `pair` whose tier 1 is `names` (each a coinbase-kind source), policy keys in [policy]."""
    market: dict[str, Any] = {"sources": refs(names, pair)}
    every = list(names)
    if fallback is not None:
        market["fallback"] = fallback
        tiers = fallback if fallback and isinstance(fallback[0], list) else [fallback]
        every += [r["source"] for t in tiers for r in t]
    policy.setdefault("min_sources", min(3, len(names)))
    return config({pair: market}, {n: {"kind": "coinbase"} for n in every}, **policy)


def q(source: str, price: float, age: float = 0.0, pair: str = "BTC-USD", **kw: Any) -> Quote:
    """A quote received `age` seconds before NOW."""
    return Quote(source, pair, price, NOW - age, **kw)


def accept(cands: list[Candidate]) -> list[Mark]:
    """The test's dispute stage: every candidate with a tier validates at once."""
    out = []
    for c in cands:
        if c.tier:
            r = c.result(c.tier)
            assert r is not None
            status = Status.OK if c.tier == 1 else Status.DEGRADED
            out.append(Mark(c.market, r.price, r.confidence, c.ts, 1, status, c.tier, r.sources))
    return out


@dataclass
class Tick:
    candidates: dict[str, Candidate]
    marks: dict[str, Mark]

    def price(self, market: str) -> float:
        return self.candidates[market].price

    def excluded(self, market: str) -> set[tuple[str, str]]:
        return {(e.source, str(e.reason)) for e in self.candidates[market].excluded}


def tick(
    settings: Settings,
    quotes: Iterable[Quote],
    now: float = NOW,
    validate: Callable[[list[Candidate]], Sequence[Mark]] = accept,
) -> Tick:
    """Feed the quotes into a fresh QuoteBook and run one aggregation tick through the public API."""
    book = QuoteBook.for_settings(settings)
    for quote in quotes:
        assert book.update(quote), quote
    seen: dict[str, Candidate] = {}

    def spy(cands: list[Candidate]) -> Sequence[Mark]:
        seen.update((c.market, c) for c in cands)
        return validate(cands)

    marks = Aggregator(settings, book).run(book.snapshot(), now, spy)
    return Tick(seen, {m.market: m for m in marks})


def nan_eq(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
