"""The jump guard and dispute window, and manual disputes resolved either way."""

from __future__ import annotations

import pytest

from disputes.model import DisputeClosed, EventKind, Outcome, Reason, UnknownDispute, UnknownMarket
from oracle.models import Status
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run


def kinds(decision):
    return [e.kind for e in decision.events]


@pytest.fixture
def stage() -> DisputeStage:
    # The anchor detector is off here so only the guard speaks (see test_detectors for both).
    policy = {"max_jump_bps": 1000, "dispute_window_ms": 10_000, "max_deviation_bps": 150}
    s = DisputeStage(make_settings(**policy, anchor_deviation_bps=0))
    run(s, 100.0, None, 0.0)
    return s


def test_an_ordinary_move_validates_immediately(stage):
    d = run(stage, 109.0, None, 1.0)  # 900 bps < max_jump_bps
    assert (d.mark.status, d.mark.price, d.mark.ts) == (Status.OK, 109.0, 1.0)


def test_a_jump_is_held_for_the_window_then_validates(stage):
    d = run(stage, 120.0, None, 1.0)
    assert (d.mark.status, d.mark.price, d.mark.candidate) == (Status.HELD, 100.0, 120.0)
    assert kinds(d) == [EventKind.JUMP_HELD]
    assert d.publish  # the status change goes out at once
    for t in range(2, 11):
        assert run(stage, 120.5, None, float(t)).mark.status is Status.HELD
    d = run(stage, 120.5, None, 11.0)  # 10 s after the window opened, within 150 bps of 120
    assert (d.mark.status, d.mark.price, d.mark.ts) == (Status.OK, 120.5, 11.0)
    assert kinds(d) == [EventKind.JUMP_VALIDATED]


def test_a_candidate_that_keeps_moving_restarts_the_window(stage):
    run(stage, 120.0, None, 1.0)
    d = run(stage, 125.0, None, 11.0)  # 400 bps from where the window opened
    assert d.mark.status is Status.HELD
    assert kinds(d) == [EventKind.WINDOW_RESTARTED]
    assert run(stage, 125.0, None, 20.0).mark.status is Status.HELD
    assert run(stage, 125.0, None, 21.0).mark.status is Status.OK


def test_a_spike_that_reverts_validates_the_ordinary_price_at_once(stage):
    run(stage, 200.0, None, 1.0)  # bZx: one source set doubles for a tick
    d = run(stage, 100.2, None, 2.0)
    assert (d.mark.status, d.mark.price) == (Status.OK, 100.2)


def test_a_jump_disputed_and_upheld_holds_until_sources_return(stage):
    run(stage, 130.0, None, 1.0)
    dispute = stage.open_dispute(MARKET, "jump", 2.0, note="one venue only")
    assert (dispute.reason, dispute.status, dispute.candidate) == (Reason.JUMP, "open", 130.0)
    for t in range(3, 30):  # the window ends at 11 s, but a dispute is open
        assert run(stage, 130.0, None, float(t)).mark.status is Status.HELD
    closed = stage.resolve(dispute.id, "uphold", 30.0)
    assert (closed.outcome, closed.closed_ts) == (Outcome.UPHELD, 30.0)
    for t in range(31, 60):  # no new window: a bad price must not validate by persisting
        d = run(stage, 130.0, None, float(t))
        assert (d.mark.status, d.mark.price) == (Status.HELD, 100.0)
    d = run(stage, 101.0, None, 60.0)  # back within max_jump_bps of the last validated price
    assert (d.mark.status, d.mark.price) == (Status.OK, 101.0)


def test_a_jump_disputed_and_rejected_validates_the_candidate_now(stage):
    run(stage, 130.0, None, 1.0)
    dispute = stage.open_dispute(MARKET, "jump", 2.0)
    run(stage, 130.0, None, 3.0)
    stage.resolve(dispute.id, "reject", 4.0)
    d = run(stage, 130.1, None, 5.0)
    assert (d.mark.status, d.mark.price, d.mark.ts) == (Status.OK, 130.1, 5.0)


def test_an_open_dispute_holds_even_an_ordinary_move(stage):
    stage.open_dispute(MARKET, "manual", 1.0)
    d = run(stage, 100.1, None, 2.0)
    assert (d.mark.status, d.mark.price, d.mark.ts) == (Status.HELD, 100.0, 0.0)


def test_resolve_errors_are_typed(stage):
    with pytest.raises(UnknownDispute):
        stage.resolve("nope", "uphold", 1.0)
    d = stage.open_dispute(MARKET, "manual", 1.0)
    stage.resolve(d.id, "reject", 2.0)
    with pytest.raises(DisputeClosed):
        stage.resolve(d.id, "uphold", 3.0)
    with pytest.raises(UnknownMarket):
        stage.open_dispute("DOGE-USD", "manual", 1.0)


def test_stage_is_deterministic():
    def replay():
        s = DisputeStage(make_settings())
        out = []
        for t, p in enumerate([100.0, 100.5, 130.0, 130.0, 99.0, None, 101.0]):
            d = run(s, p, 100.0, float(t))
            out.append((d.mark, d.publish, [e.to_json() for e in d.events]))
        return out

    assert replay() == replay()


def test_a_window_interrupted_by_a_stale_gap_starts_over(stage):
    run(stage, 115.0, None, 1.0)
    for t in range(2, 12):
        assert run(stage, None, None, float(t)).mark.status is Status.STALE
    d = run(stage, 115.0, None, 12.0)  # 11 s after the jump, but nobody watched it in between
    assert (d.mark.status, kinds(d)) == (Status.HELD, [EventKind.TIER_CHANGED, EventKind.JUMP_HELD])
    assert run(stage, 115.0, None, 22.0).mark.status is Status.OK
