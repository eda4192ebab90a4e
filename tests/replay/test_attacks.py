"""Each attack kind of DESIGN.md on a tiny ticks table: the exact rows before and after."""

from __future__ import annotations

import math

import numpy as np

from oracle.replay.attacks import Attack, apply_attacks
from oracle.ticks import Ticks

NAN = math.nan


def tiny() -> Ticks:
    """Two venues quoting X-USD every second from t=100 to 103; venue b also quotes Y-USD once."""
    keys = (("a", "X-USD"), ("b", "X-USD"), ("b", "Y-USD"))
    feed = np.array([0, 1, 0, 1, 0, 1, 2, 0, 1])
    ts = np.array([100.0, 100.5, 101.0, 101.5, 102.0, 102.5, 102.6, 103.0, 103.5])
    price = np.array([10.0, 10.1, 11.0, 11.1, 12.0, 12.1, 5.0, 13.0, 13.1])
    bid = price - 0.05
    ask = price + 0.05
    venue_ts = np.array([99.9, NAN, 100.9, NAN, 101.9, NAN, NAN, 102.9, NAN])
    return Ticks(keys, feed, ts, price, bid, ask, venue_ts)


def rows(t: Ticks) -> list[tuple]:
    out = []
    for i in range(len(t)):
        s, p = t.keys[t.feed[i]]
        vts = None if math.isnan(t.venue_ts[i]) else round(float(t.venue_ts[i]), 9)
        out.append((round(float(t.ts[i]), 9), s, p, round(float(t.price[i]), 9), vts))
    return out


def attack(kind: str, sources: list[str], start_s: float, duration_s: float, magnitude: float = 0.0) -> Attack:
    return Attack(kind=kind, sources=sources, pair="X-USD", start_s=start_s, duration_s=duration_s, magnitude=magnitude)


def test_no_attack_keeps_every_row():
    assert rows(apply_attacks(tiny(), [])) == rows(tiny())


def test_spike_steps_the_window_of_the_named_source_only():
    out = apply_attacks(tiny(), [attack("spike", ["a"], 1, 2, 0.5)])  # a's rows at 101 and 102
    assert rows(out) == [
        (100.0, "a", "X-USD", 10.0, 99.9),
        (100.5, "b", "X-USD", 10.1, None),
        (101.0, "a", "X-USD", 16.5, 100.9),
        (101.5, "b", "X-USD", 11.1, None),
        (102.0, "a", "X-USD", 18.0, 101.9),
        (102.5, "b", "X-USD", 12.1, None),
        (102.6, "b", "Y-USD", 5.0, None),
        (103.0, "a", "X-USD", 13.0, 102.9),
        (103.5, "b", "X-USD", 13.1, None),
    ]
    assert out.bid[2] == 1.5 * (11.0 - 0.05) and out.ask[2] == 1.5 * (11.0 + 0.05)


def test_ramp_grows_linearly_to_the_magnitude_at_the_end_of_the_window():
    out = apply_attacks(tiny(), [attack("ramp", ["a", "b"], 0, 4, 1.0)])  # x(1 + (ts - 100) / 4)
    assert [p for _, _, pair, p, _ in rows(out) if pair == "X-USD"] == [
        10.0,
        round(10.1 * 1.125, 9),
        11.0 * 1.25,
        round(11.1 * 1.375, 9),
        12.0 * 1.5,
        round(12.1 * 1.625, 9),
        13.0 * 1.75,
        round(13.1 * 1.875, 9),
    ]
    assert rows(out)[6] == (102.6, "b", "Y-USD", 5.0, None)  # another pair is untouched


def test_freeze_repeats_the_last_price_before_the_window():
    out = apply_attacks(tiny(), [attack("freeze", ["b"], 1, 10)])
    assert [(ts, s, p) for ts, s, pair, p, _ in rows(out) if pair == "X-USD"] == [
        (100.0, "a", 10.0),
        (100.5, "b", 10.1),
        (101.0, "a", 11.0),
        (101.5, "b", 10.1),
        (102.0, "a", 12.0),
        (102.5, "b", 10.1),
        (103.0, "a", 13.0),
        (103.5, "b", 10.1),
    ]


def test_dropout_removes_the_window():
    out = apply_attacks(tiny(), [attack("dropout", ["a"], 1, 2)])
    assert [(ts, s) for ts, s, *_ in rows(out)] == [
        (100.0, "a"),
        (100.5, "b"),
        (101.5, "b"),
        (102.5, "b"),
        (102.6, "b"),
        (103.0, "a"),
        (103.5, "b"),
    ]


def test_delay_moves_receive_time_and_keeps_venue_time():
    out = apply_attacks(tiny(), [attack("delay", ["b"], 0, 2, 3.0)])  # b's rows at 100.5 and 101.5
    assert rows(out) == [
        (100.0, "a", "X-USD", 10.0, 99.9),
        (101.0, "a", "X-USD", 11.0, 100.9),
        (102.0, "a", "X-USD", 12.0, 101.9),
        (102.5, "b", "X-USD", 12.1, None),
        (102.6, "b", "Y-USD", 5.0, None),
        (103.0, "a", "X-USD", 13.0, 102.9),
        (103.5, "b", "X-USD", 10.1, 100.5),
        (103.5, "b", "X-USD", 13.1, None),
        (104.5, "b", "X-USD", 11.1, 101.5),
    ]


def test_skew_shifts_venue_time_only():
    out = apply_attacks(tiny(), [attack("skew", ["a", "b"], 2, 1, 7.0)])  # rows at 102 and 102.5
    assert [(ts, s, vts) for ts, s, pair, _, vts in rows(out) if pair == "X-USD"] == [
        (100.0, "a", 99.9),
        (100.5, "b", None),
        (101.0, "a", 100.9),
        (101.5, "b", None),
        (102.0, "a", 108.9),
        (102.5, "b", 109.5),
        (103.0, "a", 102.9),
        (103.5, "b", None),
    ]


def test_duplicate_copies_the_origin_under_new_names():
    out = apply_attacks(tiny(), [attack("duplicate", ["a", "c", "d"], 1, 2, 0.01)])
    assert out.keys == (("a", "X-USD"), ("b", "X-USD"), ("b", "Y-USD"), ("c", "X-USD"), ("d", "X-USD"))
    assert [(ts, s, p) for ts, s, pair, p, _ in rows(out) if s in ("c", "d")] == [
        (101.0, "c", 11.11),
        (101.0, "d", 11.11),
        (102.0, "c", 12.12),
        (102.0, "d", 12.12),
    ]
    assert len(out) == len(tiny()) + 4


def test_attacks_apply_in_order_timed_from_the_first_tick():
    both = [attack("spike", ["a"], 0, 10, 1.0), attack("freeze", ["a"], 2, 10)]
    out = apply_attacks(tiny(), both)
    assert [p for _, s, _, p, _ in rows(out) if s == "a"] == [20.0, 22.0, 22.0, 22.0]


def test_a_spike_pumps_an_own_books_bid_ask_and_last_together():
    """The perp scenarios' own-book pump: every price of the book's rows moves, the last trade too
    (the perp's c2 reads bid, ask and last), and nothing outside the window or the source."""
    t = tiny()
    last = np.where(t.feed == 1, t.price + 0.02, NAN)
    t = Ticks(t.keys, t.feed, t.ts, t.price, t.bid, t.ask, t.venue_ts, last=last)
    out = apply_attacks(t, [attack("spike", ["b"], 0.5, 2.0, 0.05)])  # b's rows at 100.5 and 101.5
    hit = np.isin(out.ts, [100.5, 101.5])
    for name in ("price", "bid", "ask", "last"):
        np.testing.assert_allclose(getattr(out, name)[hit], getattr(t, name)[hit] * 1.05)
        np.testing.assert_array_equal(getattr(out, name)[~hit], getattr(t, name)[~hit])
