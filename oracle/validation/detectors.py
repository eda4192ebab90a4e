"""Detectors: patterns a per-tick jump guard cannot see.

Market-level (pure functions of the tick and of the `Anchor`, used by the dispute stage):
- `anchor`: the candidate is far from the time-weighted mean of validated marks. A slow walk-up
  (Mango: every venue pumped ×13 in 20 minutes) never trips the jump guard, but it does leave the
  anchor behind. Another tier with quorum that agrees with the candidate makes the move genuine.
- `divergence`: two tiers that both have quorum disagree.

The source-level freeze rule (Venus/LUNA: a feed clamped at a floor while markets fell 90 %) is part
of the aggregation itself: oracle/freeze.py.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from disputes.model import deviation_bps
from oracle.models import TierResult
from oracle.validation.state import Column, StateArrays

ANCHOR_BUCKETS = 60


class Anchor:
    """Time-weighted mean of the validated price over the last `window_s` seconds.

    The validated price is a step function of time; each tick adds the previous price times the
    time it was in force. Time is cut into `buckets` intervals so the window slides in O(1) per tick
    (amortised: a bucket's sums are dropped when it leaves the window) with bounded memory.
    """

    window_s = Column("a_window_s", float)
    buckets = Column("a_buckets", int)
    width = Column("a_width", float)
    _closed_pw = Column("a_closed_pw", float)
    _closed_w = Column("a_closed_w", float)
    _bucket = Column("a_bucket", int)
    _pw = Column("a_pw", float)
    _w = Column("a_w", float)
    _price = Column("a_price", float)
    _ts = Column("a_ts", float)

    def __init__(
        self, window_s: float, buckets: int = ANCHOR_BUCKETS, cols: StateArrays | None = None, row: int = 0
    ) -> None:
        # The sums live in a row of a StateArrays (oracle.validation), its own unless one is given;
        # the closed buckets' deque is only touched when a bucket closes, so it stays here.
        self._cols, self._row = cols if cols is not None else StateArrays(1), row
        self.window_s = window_s
        self.buckets = buckets
        self.width = window_s / buckets if window_s > 0 else math.inf
        self._closed: deque[tuple[int, float, float]] = deque()  # (bucket index, Σ price·dt, Σ dt)
        self._closed_pw = 0.0
        self._closed_w = 0.0
        self._bucket = 0
        self._pw = 0.0
        self._w = 0.0
        self._price = math.nan
        self._ts = math.nan

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def observe(self, price: float, now: float) -> None:
        """The validated price is `price` from `now` on."""
        if math.isfinite(self._price) and now > self._ts:
            self._accumulate(self._price, self._ts, now)
        self._price, self._ts = price, now

    def rewindow(self, window_s: float) -> None:
        """A new window length (a config reload), keeping the history that fits in it: the buckets
        keep their width, so a longer window keeps more of them and a shorter one drops the oldest
        at the next bucket change. From or to 0 (off) there is no bucket width to keep: it restarts."""
        if window_s == self.window_s:
            return
        if not (self.enabled and window_s > 0):
            self.window_s, self.buckets = window_s, ANCHOR_BUCKETS
            self.width = window_s / ANCHOR_BUCKETS if window_s > 0 else math.inf
            self._closed.clear()
            self._closed_pw = self._closed_w = self._pw = self._w = 0.0
            self._bucket = self._index(self._ts) if math.isfinite(self._ts) else 0
            return
        self.window_s = window_s
        self.buckets = max(1, math.ceil(window_s / self.width))

    def reset(self, price: float, now: float) -> None:
        """Forget the history: an operator ruled that `price` is the market's level now."""
        self._closed.clear()
        self._closed_pw = self._closed_w = self._pw = self._w = 0.0
        self._price, self._ts = price, now
        self._bucket = self._index(now)

    def mean(self) -> float:
        w = self._closed_w + self._w
        if w <= 0:
            return self._price  # no elapsed history yet: the anchor is the price itself
        return (self._closed_pw + self._pw) / w

    def _index(self, t: float) -> int:
        return math.floor(t / self.width) if math.isfinite(self.width) else 0

    def _accumulate(self, price: float, start: float, end: float) -> None:
        # Attribute the whole interval to the bucket of its end: ticks are far shorter than a
        # bucket, so the error is below one tick's weight.
        index = self._index(end)
        if index != self._bucket:
            self._close_bucket(index)
        dt = end - start
        self._pw += price * dt
        self._w += dt

    def _close_bucket(self, index: int) -> None:
        if self._w > 0:
            self._closed.append((self._bucket, self._pw, self._w))
        self._bucket, self._pw, self._w = index, 0.0, 0.0
        oldest = index - self.buckets + 1
        while self._closed and self._closed[0][0] < oldest:
            self._closed.popleft()
        # Re-summing the few kept buckets (instead of subtracting) keeps float drift from
        # accumulating over days of ticks.
        self._closed_pw = math.fsum(pw for _, pw, _ in self._closed)
        self._closed_w = math.fsum(w for _, _, w in self._closed)


def anchor_breached(price: float, anchor: float, anchor_deviation_bps: float) -> bool:
    """`anchor_deviation_bps = 0` turns the detector off; with no anchor yet there is no verdict."""
    if not anchor_deviation_bps or not math.isfinite(anchor):
        return False
    return deviation_bps(price, anchor) > anchor_deviation_bps


def confirming_tier(price: float, in_use: int, tiers: Sequence[TierResult], max_deviation_bps: float) -> int | None:
    """Another tier with quorum that agrees with `price`: evidence that a large move is genuine."""
    for t in tiers:
        if t.tier != in_use and t.quorum and deviation_bps(t.price, price) <= max_deviation_bps:
            return t.tier
    return None


def divergent_tiers(tiers: Sequence[TierResult], max_deviation_bps: float) -> tuple[int, int] | None:
    """The first pair of tiers with quorum that disagree by more than `max_deviation_bps`."""
    if len(tiers) < 2:
        return None  # a market of one tier has no pair to compare
    live = [t for t in tiers if t.quorum]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            if deviation_bps(b.price, a.price) > max_deviation_bps:
                return a.tier, b.tier
    return None
