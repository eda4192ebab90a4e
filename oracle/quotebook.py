"""The QuoteBook: the latest quote per (source, pair), kept in flat numpy arrays.

Quotes come in as columns, a whole venue frame in one vectorised `write` (the daemon's feeds and the
replay harness take this one path); each tick the aggregator copies the arrays into a preallocated
`BookSnapshot` (no allocation per tick) and works on that consistent view. Slots are fixed at
construction from the config, so a quote for a pair nobody configured is refused, not stored.
Every array has one extra slot at the end that stays empty: the aggregator's padding points there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from oracle.models import Quote
from oracle.settings import Settings

_FIELDS = ("price", "bid", "ask", "venue_ts", "received_ts", "confidence", "half_width", "last")


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
    last: np.ndarray  # the last trade where the venue gave one (the perp mark's book reads it)

    @classmethod
    def empty(cls, n_slots: int) -> BookSnapshot:
        return cls(*(np.full(n_slots + 1, np.nan) for _ in _FIELDS))


@dataclass(frozen=True, slots=True, eq=False)
class QuoteColumns:
    """Quotes as columns, NaN = absent; `slot` is each row's QuoteBook slot (-1: not configured)."""

    slot: np.ndarray
    price: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    venue_ts: np.ndarray
    received_ts: np.ndarray
    confidence: np.ndarray
    last: np.ndarray

    def take(self, idx: np.ndarray) -> QuoteColumns:
        return QuoteColumns(*(getattr(self, f)[idx] for f in self.__slots__))


_SLOT_MEMO = 256  # pair lists remembered per source: a poller asks for the same list every time


class QuoteBook:
    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        self.keys: list[tuple[str, str]] = list(dict.fromkeys(keys))
        self.slot: dict[tuple[str, str], int] = {k: i for i, k in enumerate(self.keys)}
        self._live = BookSnapshot.empty(len(self.keys))
        self._by_source: dict[str, dict[str, int]] = {}
        for (source, pair), i in self.slot.items():
            self._by_source.setdefault(source, {})[pair] = i
        self._memo: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> QuoteBook:
        return cls((r.source, r.pair) for m in settings.markets.values() for r in m.feed_refs)

    def carry(self, old: QuoteBook) -> None:
        """Take `old`'s latest quotes for the (source, pair) slots both books have (a config reload
        builds a new book: the kept pairs must not look unquoted until their venues speak again)."""
        pairs = [(i, old.slot[k]) for k, i in self.slot.items() if k in old.slot]
        if not pairs:
            return
        new_slots, old_slots = (np.array(x, dtype=np.intp) for x in zip(*pairs, strict=True))
        for name in _FIELDS:
            getattr(self._live, name)[new_slots] = getattr(old._live, name)[old_slots]

    @property
    def empty_slot(self) -> int:
        return len(self.keys)

    def slots(self, source: str, pairs: tuple[str, ...]) -> np.ndarray:
        """Each pair's slot for `source` (-1: not configured), remembered per pair list."""
        key = (source, pairs)
        found = self._memo.get(key)
        if found is None:
            own = self._by_source.get(source, {})
            found = np.array([own.get(p, -1) for p in pairs], dtype=np.intp)
            if len(self._memo) >= _SLOT_MEMO * max(1, len(self._by_source)):
                self._memo.clear()  # a WebSocket's one-pair frames come in few shapes; never grow without end
            self._memo[key] = found
        return found

    def write(self, q: QuoteColumns) -> int:
        """Store a batch of quotes, each as its source's latest for its pair, exactly as one by one in
        row order; returns how many were stored. A row for a pair nobody configured is refused, and so
        is one received before the stored quote of its slot (a late REST answer overtaken by a WS
        push): the book never goes back in time. Of several rows of one slot, the latest received
        wins (the last of them on a tie), as it would row by row."""
        slots = q.slot.tolist()  # a frame or a tick's rows: Python's set is quicker than numpy's here
        if min(slots, default=0) < 0:
            q = q.take(q.slot >= 0)
            slots = q.slot.tolist()
        if len(set(slots)) < len(slots):
            order = np.lexsort((np.arange(len(q.slot)), q.received_ts, q.slot))  # by slot, time, row
            last_of_slot = np.append(q.slot[order[1:]] != q.slot[order[:-1]], True)
            q = q.take(order[last_of_slot])
        live = self._live
        fresh = ~(live.received_ts[q.slot] > q.received_ts)  # NaN (empty slot) takes anything
        if not fresh.all():
            q = q.take(fresh)
        slot = q.slot
        live.price[slot] = q.price
        live.bid[slot] = q.bid
        live.ask[slot] = q.ask
        live.venue_ts[slot] = q.venue_ts
        live.received_ts[slot] = q.received_ts
        live.confidence[slot] = q.confidence
        live.half_width[slot] = half_width(q.bid, q.ask, q.confidence)
        live.last[slot] = q.last
        return len(slot)

    def write_frame(
        self,
        source: str,
        pairs: tuple[str, ...],
        received_ts: float,
        price: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        venue_ts: np.ndarray,
        confidence: np.ndarray,
        last: np.ndarray,
    ) -> int:
        """One venue frame's quotes (one source, one receive time), as `write` stores them."""
        slot = self.slots(source, pairs)
        received = np.full(len(pairs), received_ts)
        return self.write(QuoteColumns(slot, price, bid, ask, venue_ts, received, confidence, last))

    def update(self, quote: Quote) -> bool:
        """One Quote object through `write`; False if it was refused (for tests and one-off quotes)."""
        fields = (quote.price, quote.bid, quote.ask, quote.venue_ts, quote.confidence, quote.last)
        price, bid, ask, venue_ts, confidence, last = (np.array([_num(x)]) for x in fields)
        slot = np.array([self.slot.get((quote.source, quote.pair), -1)], dtype=np.intp)
        received = np.array([quote.received_ts])
        return self.write(QuoteColumns(slot, price, bid, ask, venue_ts, received, confidence, last)) == 1

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
            _opt(live.last[i]),
        )


def half_width(bid: np.ndarray, ask: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """A quote's own uncertainty: its confidence, else half its bid/ask spread, else 0."""
    spread = (ask - bid) / 2.0
    return np.where(np.isnan(confidence), np.where(np.isnan(spread), 0.0, spread), confidence)


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)
