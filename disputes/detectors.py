"""Detectors: patterns a per-tick jump guard cannot see.

Market-level (pure functions of the tick and of the `Anchor`, used by the dispute stage):
- `anchor`: the candidate is far from the time-weighted mean of validated marks. A slow walk-up
  (Mango: every venue pumped ×13 in 20 minutes) never trips the jump guard, but it does leave the
  anchor behind. Another tier with quorum that agrees with the candidate makes the move genuine.
- `divergence`: two tiers that both have quorum disagree.

Source-level (vectorised, called by the aggregator): `FreezeDetector` flags a source whose price
stopped moving while its peers did (Venus/LUNA: a feed clamped at a floor while markets fell 90 %).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from disputes.model import deviation_bps
from oracle.models import TierResult

ANCHOR_BUCKETS = 60


class Anchor:
    """Time-weighted mean of the validated price over the last `window_s` seconds.

    The validated price is a step function of time; each tick adds the previous price times the
    time it was in force. Time is cut into `buckets` intervals so the window slides in O(1) per tick
    (amortised: a bucket's sums are dropped when it leaves the window) with bounded memory.
    """

    def __init__(self, window_s: float, buckets: int = ANCHOR_BUCKETS) -> None:
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
    live = [t for t in tiers if t.quorum]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            if deviation_bps(b.price, a.price) > max_deviation_bps:
                return a.tier, b.tier
    return None


class FreezeDetector:
    """Cells (rows = markets or pairs, cols = sources) whose price is stuck while peers move.

    A cell is frozen once its price has been unchanged for `freeze_ticks` consecutive ticks while at
    least one peer in its row changed during that run; it stays frozen until its own price moves.
    NaN cells are absent: never frozen, and their run starts over when they return.
    `freeze_ticks = 0` turns detection off for that row. `freeze_ticks_per_row` is one number, one
    per row, or one per cell (rows × cols) for sources that legitimately update rarely.
    """

    def __init__(self, n_rows: int, n_cols: int, freeze_ticks_per_row: npt.ArrayLike) -> None:
        ticks = np.asarray(freeze_ticks_per_row, dtype=np.int64)
        if ticks.ndim == 1:
            ticks = ticks.reshape(-1, 1)  # one per row, applied across its columns
        self._ticks = np.broadcast_to(ticks, (n_rows, n_cols)).copy()
        self._on = self._ticks > 0
        self._prev = np.full((n_rows, n_cols), np.nan)
        self._run = np.zeros((n_rows, n_cols), dtype=np.int64)  # consecutive unchanged ticks
        self._peer_moved = np.zeros((n_rows, n_cols), dtype=bool)  # some peer changed in the run
        self._frozen = np.zeros((n_rows, n_cols), dtype=bool)
        self.onset = np.zeros((n_rows, n_cols), dtype=bool)  # frozen this tick, not the last

    def update(self, prices: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        if prices.shape != self._prev.shape:
            raise ValueError(f"prices shape {prices.shape} != detector shape {self._prev.shape}")
        both = ~(np.isnan(prices) | np.isnan(self._prev))
        unchanged = prices == self._prev  # False wherever either side is NaN
        changed = both & ~unchanged
        peers_changed = changed.sum(axis=1, keepdims=True) - changed > 0
        self._run = np.where(unchanged, self._run + 1, 0)
        self._peer_moved = unchanged & (self._peer_moved | peers_changed)
        frozen = self._on & (self._run >= self._ticks) & self._peer_moved
        self.onset = frozen & ~self._frozen
        self._frozen = frozen
        self._prev = prices.astype(np.float64, copy=True)
        return frozen.copy()
