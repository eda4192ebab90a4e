"""Promises that must hold for any price path, checked on generated ones."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from disputes.model import deviation_bps
from oracle.models import Status
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import make_settings, run

WINDOW_S = 10.0
MAX_JUMP_BPS = 1000

# A path is segments: one move (None: tier 1 loses quorum) held for a run of ticks.
moves = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.12, -0.12]),  # flat runs and clean jumps
    st.floats(min_value=-0.3, max_value=0.3),
)
steps = st.lists(st.tuples(moves, st.integers(min_value=1, max_value=15)), min_size=1, max_size=30).map(
    lambda segments: [m if i == 0 or m is None else 0.0 for m, n in segments for i in range(n)]
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_jump_never_validates_before_a_full_quiet_window(moves):
    stage = DisputeStage(make_settings(max_jump_bps=MAX_JUMP_BPS, dispute_window_ms=int(WINDOW_S * 1000)))
    price, last, held_since = 100.0, math.nan, None
    for t, move in enumerate(moves):
        if move is not None:
            price = max(1e-6, price * (1 + move))
        d = run(stage, None if move is None else price, None, float(t))
        mark = d.mark
        if mark.status is Status.OK:
            assert mark.price == price and mark.ts == t  # ok means validated now, at the candidate
            if not math.isnan(last) and deviation_bps(mark.price, last) > MAX_JUMP_BPS:
                assert held_since is not None and t - held_since >= WINDOW_S
            last = mark.price
        if mark.status is Status.HELD:
            held_since = t if held_since is None else held_since
            assert mark.price == last or math.isnan(last)  # held shows the last validated price
        else:
            held_since = None
        if d.publish:
            assert math.isfinite(mark.price)


@settings(max_examples=50, deadline=None)
@given(steps)
def test_the_stage_is_deterministic(moves):
    def once() -> list[tuple[object, ...]]:
        stage = DisputeStage(make_settings())
        price, out = 100.0, []
        for t, move in enumerate(moves):
            price = price * (1 + (move or 0.0))
            d = run(stage, None if move is None else price, price * 1.001, float(t))
            out.append((d.mark, d.publish, tuple(e.to_json() for e in d.events)))
        return out

    assert once() == once()
