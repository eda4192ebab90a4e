"""The QuoteBook: the latest quote per (source, pair), kept in flat numpy arrays.

Adapters write quotes in as they arrive; each tick the aggregator copies the arrays into a
preallocated `BookSnapshot` (no allocation per tick) and works on that consistent view. Slots are
fixed at construction from the config, so a quote for a pair nobody configured is refused, not stored.
Every array has one extra slot at the end that stays empty: the aggregator's padding points there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from oracle.models import Quote
from oracle.settings import Settings

_FIELDS = ("price", "bid", "ask", "venue_ts", "received_ts", "confidence", "half_width")


@dataclass(slots=True)
class BookSnapshot:
    """One consistent view of the book: arrays of length `slots + 1` (the last slot is always empty)."""

    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    venue_ts: np.ndarray
    received_ts: np.ndarray
    confidence: np.ndarray
    half_width: np.ndarray  # the quote's own uncertainty: its confidence, else half its bid/ask spread

    @classmethod
    def empty(cls, n_slots: int) -> BookSnapshot:
        return cls(*(np.full(n_slots + 1, np.nan) for _ in _FIELDS))


class QuoteBook:
    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        self.keys: list[tuple[str, str]] = list(dict.fromkeys(keys))
        self.slot: dict[tuple[str, str], int] = {k: i for i, k in enumerate(self.keys)}
        self._live = BookSnapshot.empty(len(self.keys))

    @classmethod
    def for_settings(cls, settings: Settings) -> QuoteBook:
        return cls((r.source, r.pair) for m in settings.markets.values() for t in m.tiers for r in t)

    @property
    def empty_slot(self) -> int:
        return len(self.keys)

    def update(self, quote: Quote) -> bool:
        """Store the quote as its source's latest for the pair; False if nobody configured that pair.

        A quote received before the stored one (a late REST answer overtaken by a WS push) is dropped,
        so the book never goes back in time.
        """
        i = self.slot.get((quote.source, quote.pair))
        if i is None:
            return False
        live = self._live
        if live.received_ts[i] > quote.received_ts:
            return False
        live.price[i] = quote.price
        live.bid[i] = _num(quote.bid)
        live.ask[i] = _num(quote.ask)
        live.venue_ts[i] = _num(quote.venue_ts)
        live.received_ts[i] = quote.received_ts
        live.confidence[i] = _num(quote.confidence)
        live.half_width[i] = _half_width(quote)
        return True

    def update_rows(
        self,
        slot: np.ndarray,
        price: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        venue_ts: np.ndarray,
        received_ts: np.ndarray,
    ) -> None:
        """Store a batch of quotes (columns, NaN = absent, no confidence) exactly as `update` would
        one by one, for a batch that names each slot at most once and holds nothing older than the
        book: what a replay feeds between two ticks, read in time order. The replay's bulk path."""
        live = self._live
        live.price[slot] = price
        live.bid[slot] = bid
        live.ask[slot] = ask
        live.venue_ts[slot] = venue_ts
        live.received_ts[slot] = received_ts
        live.confidence[slot] = np.nan
        spread = (ask - bid) / 2.0
        live.half_width[slot] = np.where(np.isnan(spread), 0.0, spread)

    def snapshot(self, out: BookSnapshot | None = None) -> BookSnapshot:
        """Copy the live arrays into `out` (reused across ticks) and return it."""
        out = out or BookSnapshot.empty(len(self.keys))
        for name in _FIELDS:
            np.copyto(getattr(out, name), getattr(self._live, name))
        return out

    def received_ts(self) -> np.ndarray:
        """Receive time of each slot's latest quote (NaN: none yet), a read-only view."""
        view = self._live.received_ts[:-1]
        view.flags.writeable = False
        return view

    def latest(self, source: str, pair: str) -> Quote | None:
        i = self.slot.get((source, pair))
        if i is None or math.isnan(self._live.received_ts[i]):
            return None
        live = self._live
        return Quote(
            source,
            pair,
            float(live.price[i]),
            float(live.received_ts[i]),
            _opt(live.bid[i]),
            _opt(live.ask[i]),
            _opt(live.venue_ts[i]),
            _opt(live.confidence[i]),
        )


def _half_width(q: Quote) -> float:
    if q.confidence is not None:
        return q.confidence
    if q.bid is not None and q.ask is not None:
        return (q.ask - q.bid) / 2.0
    return 0.0


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
