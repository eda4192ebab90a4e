"""The perpetual mark price (DESIGN.md "Perpetual mark price"): pure numpy maths, time passed in.

A market with a `[markets.M.perp]` table gets a perp mark on top of its index `I` (the validated
mark, usable when `ok` or `degraded`). Each tick, for every perp market at once:

    mid = (bid + ask) / 2 of the own book, both sides present and younger than max_age_ms
    c1  = I + E, E the EMA of (mid - I) over irregular gaps: E += (1 - exp(-dt / ema_s)) (mid - I - E)
    c2  = median of the fresh bid, ask (only as a pair) and last; none: I
    c3  = weighted median of the external perps, ruled exactly like a weighted_median tier with a
          quorum of 1 (oracle.aggregate.run_block); none: I
    price = median(c1, c2, c3) clamped to I (1 +- max_premium_bps / 1e4)

Why a median of three: the own book can be pumped by whoever trades on it, so it may move at most
one of c1 (and then only through the slow EMA) and c2; the outside venues' c3 and the index-anchored
c1 then out-vote it. Where the index is not usable the perp keeps its last price (the caller gives
it the index's status), E is left alone so its next update's dt spans the gap, and c1..c3 are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from oracle.aggregate import Block, Lane, build_block, run_block
from oracle.models import Mark, PerpMark, Status
from oracle.quotebook import BookSnapshot, QuoteBook
from oracle.settings import Settings

USABLE = (Status.OK, Status.DEGRADED)


@dataclass(frozen=True)
class PerpPlan:
    """The perp markets compiled once: row i of every array is `markets[i]`."""

    markets: tuple[str, ...]
    market_index: np.ndarray  # (n,) each market's position in the aggregator's market list
    book_slot: np.ndarray  # (n,) QuoteBook slot of the market's own book
    max_age_s: np.ndarray  # (n,) the market's max_age_ms, in seconds
    ema_s: np.ndarray  # (n,)
    max_premium: np.ndarray  # (n,) max_premium_bps / 1e4
    external: Block | None  # one weighted_median row per market, quorum 1; None: no market has any

    @classmethod
    def build(cls, settings: Settings, book: QuoteBook, index: dict[str, int]) -> PerpPlan | None:
        """The plan of every market with a perp table, in `index` order; None when there is none."""
        markets = [m for m in sorted(index, key=index.__getitem__) if settings.markets[m].perp]
        if not markets:
            return None
        perps = [p for m in markets if (p := settings.markets[m].perp)]
        lanes = [Lane(m, 1, p.external, 1, "weighted_median") for m, p in zip(markets, perps, strict=True)]
        return cls(
            markets=tuple(markets),
            market_index=np.array([index[m] for m in markets], dtype=np.intp),
            book_slot=np.array([book.slot[(p.book.source, p.book.pair)] for p in perps], dtype=np.intp),
            max_age_s=np.array([settings.policy_for(m).max_age_ms / 1000 for m in markets]),
            ema_s=np.array([p.ema_s for p in perps]),
            max_premium=np.array([p.max_premium_bps / 1e4 for p in perps]),
            external=build_block(lanes, settings, index, book) if any(p.external for p in perps) else None,
        )


@dataclass
class PerpState:
    """What carries from tick to tick: the basis EMA and the last perp price (NaN: none yet)."""

    basis: np.ndarray  # E
    basis_ts: np.ndarray  # when E was last updated
    price: np.ndarray
    ts: np.ndarray  # when `price` was computed

    @classmethod
    def start(cls, n: int) -> PerpState:
        return cls(*(np.full(n, np.nan) for _ in range(4)))


@dataclass(frozen=True)
class PerpResult:
    """One tick of every perp market; c1..c3 are NaN where the index was not usable."""

    price: np.ndarray  # the perp mark: this tick's where usable, else the last one (NaN: none yet)
    index: np.ndarray  # the index it was computed against (the market's mark price)
    c1: np.ndarray
    c2: np.ndarray
    c3: np.ndarray
    usable: np.ndarray  # bool: the index was usable, so the price is this tick's
    ts: np.ndarray  # when `price` was computed
    c3_fallback: np.ndarray  # bool: usable, and no external perp counted, so c3 is the index


def perp_tick(
    plan: PerpPlan,
    state: PerpState,
    book: BookSnapshot,
    now: float,
    index_price: np.ndarray,
    usable: np.ndarray,
    rates: np.ndarray,
    rate_ts: np.ndarray,
    conv_max_age_s: np.ndarray,
) -> PerpResult:
    """Advance every perp market by one tick. `index_price`/`usable` are per perp market; `rates`,
    `rate_ts` and `conv_max_age_s` are the aggregator's (every market's mark of this tick), which
    convert the external quotes exactly as they convert a tier's."""
    index = np.where(usable, index_price, np.nan)
    fresh = now - book.received_ts[plan.book_slot] <= plan.max_age_s  # NaN (no quote) is not fresh
    bid, ask, last = (_fresh(col[plan.book_slot], fresh) for col in (book.bid, book.ask, book.last))
    two_sided = ~np.isnan(bid) & ~np.isnan(ask)
    bid, ask = np.where(two_sided, bid, np.nan), np.where(two_sided, ask, np.nan)

    c1 = index + _advance_basis(state, (bid + ask) / 2.0 - index, usable & two_sided, now, plan.ema_s)
    c2 = _or(_median_of(np.stack([bid, ask, last], axis=1)), index)
    c3, fallback = index, usable.copy()
    if plan.external is not None:
        ext = run_block(plan.external, book, now, rates, rate_ts, conv_max_age_s)
        c3, fallback = _or(ext.price, index), usable & np.isnan(ext.price)

    c2, c3 = np.where(usable, c2, np.nan), np.where(usable, c3, np.nan)  # c1 is NaN there already
    median = _median_of(np.stack([c1, c2, c3], axis=1))
    price = np.clip(median, index * (1 - plan.max_premium), index * (1 + plan.max_premium))
    state.price = np.where(usable, price, state.price)
    state.ts = np.where(usable, now, state.ts)
    index_price = np.asarray(index_price, dtype=float)
    return PerpResult(state.price.copy(), index_price, c1, c2, c3, usable, state.ts.copy(), fallback)


def _fresh(values: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """The values that count: from a fresh quote, finite and positive; NaN otherwise."""
    with np.errstate(invalid="ignore"):
        return np.where(fresh & (values > 0) & np.isfinite(values), values, np.nan)


def _or(values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), fallback, values)


def _median_of(values: np.ndarray) -> np.ndarray:
    """Median of each row's non-NaN values (mean of the middle two when even); NaN for none."""
    s = np.sort(values, axis=1)  # NaN sort last
    n = (~np.isnan(s)).sum(axis=1)
    rows = np.arange(len(s))
    a = s[rows, np.maximum((n - 1) // 2, 0)]
    b = s[rows, n // 2]
    out = (a + b) / 2.0
    out[n == 0] = np.nan
    return out


def _expm1(x: np.ndarray) -> np.ndarray:
    """exp(x) - 1 through the C library, element by element. numpy's vectorised expm1 differs in the
    last bit between CPUs (AVX-512 builds use another implementation), and the EMA carries that bit
    from tick to tick; the perp markets are few, so the loop is cheap. Capped below the overflow."""
    return np.fromiter(map(math.expm1, np.minimum(x, 700.0).tolist()), dtype=float, count=len(x))


def _advance_basis(
    state: PerpState, basis: np.ndarray, update: np.ndarray, now: float, ema_s: np.ndarray
) -> np.ndarray:
    """Step E where `update` (the index usable and a mid present) and return E, 0 before any mid."""
    started = ~np.isnan(state.basis)
    with np.errstate(invalid="ignore"):
        alpha = -_expm1(-(now - state.basis_ts) / ema_s)  # 1 - exp(-dt / ema_s), exact for small dt
        stepped = np.where(started, state.basis + alpha * (basis - state.basis), basis)
    state.basis = np.where(update, stepped, state.basis)
    state.basis_ts = np.where(update, now, state.basis_ts)
    return np.where(np.isnan(state.basis), 0.0, state.basis)


class PerpStage:
    """The perp mark inside the tick pipeline: after the index marks of the tick, every perp market
    in one vectorised pass. Holds the plan and the EMA state across ticks."""

    def __init__(self, plan: PerpPlan) -> None:
        self.plan = plan
        self.state = PerpState.start(len(plan.markets))
        self._last_index = np.full(len(plan.markets), np.nan)
        self._published: dict[str, tuple[float, Status]] = {}

    def tick(
        self,
        book: BookSnapshot,
        now: float,
        marks: dict[str, Mark],
        rates: np.ndarray,
        rate_ts: np.ndarray,
        conv_max_age_s: np.ndarray,
    ) -> list[PerpMark]:
        """The perp marks of this tick (seq 0: the sink assigns it); none for a market whose perp
        has never had a price."""
        plan = self.plan
        of = [marks.get(m) for m in plan.markets]
        status = [mk.status if mk else Status.STALE for mk in of]
        usable = np.array([s in USABLE for s in status])
        index = np.array([mk.price if mk else np.nan for mk in of], dtype=float)
        self._last_index = np.where(usable, index, self._last_index)
        r = perp_tick(plan, self.state, book, now, index, usable, rates, rate_ts, conv_max_age_s)
        out = []
        rows = zip(
            plan.markets, r.price.tolist(), self._last_index.tolist(), r.c1.tolist(), r.c2.tolist(),
            r.c3.tolist(), r.ts.tolist(), status, r.c3_fallback.tolist(), strict=True,
        )  # fmt: skip
        for market, price, idx, c1, c2, c3, ts, st, fallback in rows:
            if price == price:  # not NaN: the perp has had a price
                out.append(PerpMark(market, price, idx, c1, c2, c3, ts, 0, st, fallback))
        return out

    def carry(self, old: PerpStage) -> None:
        """Take over `old`'s state for the perp markets both have (a config reload): the basis EMA
        goes on, and an unchanged perp mark is not published again just for the reload."""
        was = {m: i for i, m in enumerate(old.plan.markets)}
        for j, market in enumerate(self.plan.markets):
            i = was.get(market)
            if i is None:
                continue
            for name in ("basis", "basis_ts", "price", "ts"):
                getattr(self.state, name)[j] = getattr(old.state, name)[i]
            self._last_index[j] = old._last_index[i]
        self._published = {m: v for m, v in old._published.items() if m in self.plan.markets}

    def due(self, perps: list[PerpMark], published_markets: set[str]) -> list[PerpMark]:
        """The perp marks to publish: a new price or status, or its index being published (the
        index's heartbeat carries the perp's)."""
        out = []
        for p in perps:
            if p.market in published_markets or self._published.get(p.market) != (p.price, p.status):
                self._published[p.market] = (p.price, p.status)
                out.append(p)
        return out
