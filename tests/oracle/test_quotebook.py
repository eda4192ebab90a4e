"""The QuoteBook: fixed slots from the config, never back in time, snapshots without allocation."""

from __future__ import annotations

import math

import numpy as np

from oracle.models import Quote
from oracle.quotebook import QuoteBook, QuoteColumns

from .helpers import NOW, config, refs


def _book() -> QuoteBook:
    s = config(
        {
            "BTC-USD": {"sources": refs("ab"), "fallback": refs(["c"])},
            "ETH-USD": {"sources": refs("ab", "ETH-USD")},
        },
        "abc",
        min_sources=2,
    )
    return QuoteBook.for_settings(s)


def test_slots_come_from_the_config_once_each() -> None:
    book = _book()
    assert book.keys == [
        ("a", "BTC-USD"),
        ("b", "BTC-USD"),
        ("c", "BTC-USD"),
        ("a", "ETH-USD"),
        ("b", "ETH-USD"),
    ]
    assert book.empty_slot == 5


def test_unknown_source_or_pair_is_refused() -> None:
    book = _book()
    before = book.snapshot()
    assert book.update(Quote("c", "ETH-USD", 100.0, NOW)) is False  # known source, unconfigured pair
    assert book.update(Quote("z", "BTC-USD", 100.0, NOW)) is False  # unknown source
    assert book.latest("c", "ETH-USD") is None
    assert book.latest("z", "BTC-USD") is None
    after = book.snapshot()
    assert np.isnan(after.price).all() and np.isnan(before.price).all()
    assert len(after.price) == 6


def test_older_quote_never_overwrites_a_newer_one() -> None:
    book = _book()
    assert book.update(Quote("a", "BTC-USD", 101.0, NOW, bid=100.5, ask=101.5)) is True
    assert book.update(Quote("a", "BTC-USD", 99.0, NOW - 0.001)) is False
    assert book.latest("a", "BTC-USD") == Quote("a", "BTC-USD", 101.0, NOW, bid=100.5, ask=101.5)
    assert book.update(Quote("a", "BTC-USD", 102.0, NOW + 1, confidence=0.5)) is True
    assert book.latest("a", "BTC-USD") == Quote("a", "BTC-USD", 102.0, NOW + 1, confidence=0.5)


def test_a_newer_quote_replaces_every_field() -> None:
    book = _book()
    book.update(Quote("b", "ETH-USD", 10.0, NOW, bid=9.0, ask=11.0, venue_ts=NOW - 1, confidence=0.25))
    book.update(Quote("b", "ETH-USD", 12.0, NOW + 1))
    assert book.latest("b", "ETH-USD") == Quote("b", "ETH-USD", 12.0, NOW + 1)
    snap = book.snapshot()
    i = book.slot[("b", "ETH-USD")]
    assert (snap.price[i], snap.received_ts[i], snap.half_width[i]) == (12.0, NOW + 1, 0.0)
    assert math.isnan(snap.bid[i]) and math.isnan(snap.venue_ts[i]) and math.isnan(snap.confidence[i])


def test_half_width_is_the_confidence_else_half_the_spread() -> None:
    book = _book()
    book.update(Quote("a", "BTC-USD", 100.0, NOW, bid=99.0, ask=101.0, confidence=0.25))
    book.update(Quote("b", "BTC-USD", 100.0, NOW, bid=99.5, ask=100.5))
    book.update(Quote("c", "BTC-USD", 100.0, NOW))
    assert book.snapshot().half_width[:3].tolist() == [0.25, 0.5, 0.0]


def test_snapshot_reuses_the_out_buffers() -> None:
    book = _book()
    snap = book.snapshot()
    arrays = [(name, id(getattr(snap, name))) for name in snap.__slots__]
    book.update(Quote("a", "BTC-USD", 100.0, NOW))
    assert book.snapshot(snap) is snap
    assert snap.price[0] == 100.0
    book.update(Quote("b", "ETH-USD", 3000.0, NOW))
    book.snapshot(snap)
    assert [(name, id(getattr(snap, name))) for name in snap.__slots__] == arrays
    assert all(getattr(snap, name).shape == (6,) for name in snap.__slots__)
    assert snap.price[4] == 3000.0
    assert math.isnan(snap.price[book.empty_slot])  # the padding slot stays empty


def test_snapshot_is_a_copy_not_a_view() -> None:
    book = _book()
    book.update(Quote("a", "BTC-USD", 100.0, NOW))
    snap = book.snapshot()
    book.update(Quote("a", "BTC-USD", 200.0, NOW + 1))
    assert snap.price[0] == 100.0
    assert book.snapshot().price[0] == 200.0


def _row_by_row(book: QuoteBook, cols: QuoteColumns) -> dict[int, tuple[float, float]]:
    """The book's rule applied one row at a time, independently of `write`: slot -> (price, received)."""
    stored: dict[int, tuple[float, float]] = {}
    for slot, price, ts in zip(cols.slot.tolist(), cols.price.tolist(), cols.received_ts.tolist(), strict=True):
        if slot >= 0 and not (slot in stored and stored[slot][1] > ts):
            stored[slot] = (price, ts)
    return stored


def test_one_write_of_a_batch_stores_what_row_by_row_updates_would() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        book = _book()
        n = int(rng.integers(1, 30))
        slot = rng.integers(-1, 5, n)  # -1: a pair nobody configured; repeats of one slot; out of order
        received = NOW + rng.integers(0, 4, n).astype(float)
        nan = np.full(n, np.nan)
        cols = QuoteColumns(slot, np.arange(n, dtype=float) + 1.0, nan, nan, nan, received, nan, nan)
        want = _row_by_row(book, cols)
        assert book.write(cols) == len(want)
        snap = book.snapshot()
        got = {i: (snap.price[i], snap.received_ts[i]) for i in range(5) if not math.isnan(snap.received_ts[i])}
        assert got == want


def test_a_write_never_takes_a_row_older_than_the_book() -> None:
    book = _book()
    book.update(Quote("a", "BTC-USD", 101.0, NOW))
    one = np.array([np.nan])
    older = QuoteColumns(np.array([0]), np.array([99.0]), one, one, one, np.array([NOW - 1]), one, one)
    assert book.write(older) == 0
    assert book.latest("a", "BTC-USD") == Quote("a", "BTC-USD", 101.0, NOW)


def test_a_frame_goes_in_by_source_and_pair_names_and_keeps_its_confidence() -> None:
    book = _book()
    nan = np.full(3, np.nan)
    pairs = ("BTC-USD", "XRP-USD", "ETH-USD")  # XRP-USD: not configured for source b
    stored = book.write_frame("b", pairs, NOW, np.array([100.0, 1.0, 10.0]), nan, nan, nan, np.array([0.5, 1, 2]), nan)
    assert stored == 2
    assert book.latest("b", "BTC-USD") == Quote("b", "BTC-USD", 100.0, NOW, confidence=0.5)
    assert book.latest("b", "ETH-USD") == Quote("b", "ETH-USD", 10.0, NOW, confidence=2.0)
    assert book.snapshot().half_width[book.slot[("b", "ETH-USD")]] == 2.0
