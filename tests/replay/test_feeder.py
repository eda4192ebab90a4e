"""The replay's bulk feeder puts the QuoteBook in the same state, tick by tick, as one `update` per
quote (the daemon's path), including several quotes of one slot between two ticks."""

from __future__ import annotations

import math

import numpy as np

from oracle.models import Quote
from oracle.quotebook import QuoteBook
from oracle.replay.run import _Feeder, tick_grid
from oracle.ticks import Ticks

FIELDS = ("price", "bid", "ask", "venue_ts", "received_ts", "confidence", "half_width")


def _random_ticks(seed: int) -> Ticks:
    rng = np.random.default_rng(seed)
    keys = (("a", "X-USD"), ("b", "X-USD"), ("c", "X-USD"))
    n = 400
    ts = np.sort(100.0 + rng.uniform(0, 40, n).round(1))  # ties and bursts within a tick
    price = rng.uniform(9, 11, n)
    spread = rng.uniform(0, 0.1, n)
    no_book = rng.random(n) < 0.3
    bid = np.where(no_book, np.nan, price - spread)
    ask = np.where(no_book | (rng.random(n) < 0.1), np.nan, price + spread)
    venue_ts = np.where(rng.random(n) < 0.5, np.nan, ts - 0.05)
    return Ticks(keys, rng.integers(0, 3, n), ts, price, bid, ask, venue_ts)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


def test_bulk_feeding_equals_one_update_per_quote():
    for seed in range(5):
        ticks = _random_ticks(seed)
        grid = tick_grid(float(ticks.ts[0]), float(ticks.ts[-1]), 0.25)
        one, bulk = QuoteBook(ticks.keys), QuoteBook(ticks.keys)
        feeder = _Feeder(ticks, bulk, grid)
        i = 0
        for k, t in enumerate(grid.tolist()):
            while i < len(ticks) and ticks.ts[i] <= t:
                source, pair = ticks.keys[ticks.feed[i]]
                one.update(
                    Quote(
                        source,
                        pair,
                        float(ticks.price[i]),
                        float(ticks.ts[i]),
                        _opt(float(ticks.bid[i])),
                        _opt(float(ticks.ask[i])),
                        _opt(float(ticks.venue_ts[i])),
                    )
                )
                i += 1
            feeder.until(k)
            a, b = one.snapshot(), bulk.snapshot()
            for name in FIELDS:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{name} at tick {k}")
