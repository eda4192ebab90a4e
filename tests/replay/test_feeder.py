"""The replay's bulk feeder puts the QuoteBook in the same state, tick by tick, as one `update` per
quote (the daemon's path), including several quotes of one slot between two ticks."""

from __future__ import annotations

import math

import numpy as np

from oracle.models import Quote
from oracle.quotebook import QuoteBook
from oracle.replay.run import _Feeder, checked, quote_rows, replay, tick_grid
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
        feeder = _Feeder(quote_rows(ticks, bulk), bulk, grid)
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


def _settings_with_heartbeat():
    from oracle.settings import parse_settings

    sources = {"a": {"kind": "coinbase"}, "b": {"kind": "coinbase"}, "c": {"kind": "coinbase"}}
    sources["link"] = {"kind": "chainlink", "base_url": "http://127.0.0.1:1/rpc"}
    link = {"source": "link", "pair": "X-USD", "address": "0x" + "1" * 40, "decimals": 8, "heartbeat_s": 60}
    tier = [{"source": s, "pair": "X-USD"} for s in "abc"]
    return parse_settings(
        {"policy": {"min_sources": 2}, "sources": sources, "markets": {"X-USD": {"sources": tier, "fallback": [link]}}}
    )


def test_replay_drops_the_rows_the_live_parser_refuses_crossed_books_and_stale_venue_times():
    keys = (("a", "X-USD"), ("b", "X-USD"), ("link", "X-USD"))
    nan = np.nan
    ticks = Ticks(
        keys,
        np.array([0, 0, 1, 2, 2]),
        np.array([100.0, 101.0, 102.0, 103.0, 104.0]),
        np.array([10.0, 10.0, 10.0, 10.0, 10.0]),
        np.array([9.9, 10.2, 9.9, nan, nan]),  # row 1: bid above ask
        np.array([10.1, 9.8, nan, nan, nan]),  # row 2: a one-sided book
        np.array([nan, nan, nan, 103.0 - 61, 104.0 - 59]),  # row 3: older than link's heartbeat_s = 60
    )
    out = checked(ticks, _settings_with_heartbeat())
    assert out.ts.tolist() == [100.0, 102.0, 104.0]
    assert np.isnan(out.bid[1]) and np.isnan(out.ask[1])  # no side of a one-sided book is kept
    assert out.price.tolist() == [10.0, 10.0, 10.0]


def test_a_crossed_quote_never_reaches_the_book_of_a_replay():
    keys = (("a", "X-USD"), ("b", "X-USD"), ("c", "X-USD"))
    n = 30
    ts = 100.0 + np.arange(n) * 0.5
    feed = np.arange(n) % 3
    price = np.where(feed == 0, 1000.0, 10.0)  # source a: a wild price on a crossed book
    bid = np.where(feed == 0, 1001.0, np.nan)
    ask = np.where(feed == 0, 999.0, np.nan)
    result = replay(_settings_with_heartbeat(), Ticks(keys, feed, ts, price, bid, ask, np.full(n, np.nan)))
    assert result.published and all(m.sources == ("b", "c") for m in result.published)
    assert all(price != 1000.0 for _, _, price in result.excluded["X-USD"])  # not even as an outlier


def test_a_ticks_files_confidence_and_last_reach_the_replays_book(tmp_path):
    from oracle.ticks import read_ticks, write_ticks

    keys = (("a", "X-USD"), ("b", "X-USD"), ("c", "X-USD"))
    nan = np.full(3, np.nan)
    ticks = Ticks(keys, np.arange(3), np.array([99.8, 99.9, 100.0]), np.array([10.0, 10.1, 9.9]), nan, nan, nan)
    ticks = Ticks(*(getattr(ticks, f) for f in ("keys", "feed", "ts", "price", "bid", "ask", "venue_ts")),
                  confidence=np.array([0.25, np.nan, 0.5]), last=np.array([np.nan, 10.2, np.nan]))  # fmt: skip
    write_ticks(tmp_path / "t.csv", ticks)
    back = read_ticks(tmp_path / "t.csv")  # a Pyth row's conf, a book row's last trade: both kept
    assert np.array_equal(back.confidence, ticks.confidence, equal_nan=True)
    assert np.array_equal(back.last, ticks.last, equal_nan=True)
    book = QuoteBook(keys)
    feeder = _Feeder(quote_rows(back, book), book, tick_grid(99.8, 100.0, 1.0))  # one tick, at 100.0
    feeder.until(0)
    assert book.latest("a", "X-USD") == Quote("a", "X-USD", 10.0, 99.8, confidence=0.25)
    assert book.latest("b", "X-USD") == Quote("b", "X-USD", 10.1, 99.9, last=10.2)
    assert book.snapshot().half_width.tolist()[:3] == [0.25, 0.0, 0.5]  # the conf is the quote's own band
