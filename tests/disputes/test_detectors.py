"""Detectors on the patterns of INCIDENTS.md, and silence on clean noisy data."""

from __future__ import annotations

import numpy as np
import pytest

from disputes.model import EventKind, Outcome, Reason
from oracle.models import Excluded, Exclusion, Status
from oracle.validation.detectors import Anchor
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run

P0 = 0.035  # MNGO before the pump


def opened(decision, reason):
    return [e for e in decision.events if e.kind is EventKind.DISPUTE_OPENED and e.dispute.reason is reason]


def warm_up(stage: DisputeStage, price: float, seconds: int, tier2: bool = False) -> None:
    for t in range(seconds):
        run(stage, price, price if tier2 else None, float(t))


def test_anchor_is_the_time_weighted_mean_of_validated_prices():
    a = Anchor(window_s=100)
    a.observe(10.0, 0.0)
    a.observe(20.0, 30.0)  # 10 held for 30 s
    a.observe(20.0, 40.0)  # 20 held for 10 s
    assert a.mean() == pytest.approx((10 * 30 + 20 * 10) / 40)
    for t in range(41, 400):
        a.observe(20.0, float(t))
    assert a.mean() == pytest.approx(20.0)  # the old level has left the window


@pytest.mark.parametrize(
    ("factor", "ramp_s"),
    [(13, 1200), (30, 600), (5, 3600)],  # Mango ×13 in 20 min, ×30 in 10 min; JELLY ×5 in an hour
    ids=["mango-13x-20min", "mango-30x-10min", "jelly-5x-60min"],
)
def test_slow_walk_up_on_every_source_opens_an_anchor_dispute_before_the_price_doubles(factor, ramp_s):
    stage = DisputeStage(make_settings())
    warm_up(stage, P0, 600)
    held_at = None
    end = 600 + ramp_s
    for t in range(600, end):  # every venue together: no single tick is a jump
        price = P0 * (1 + (factor - 1) * (t - 600) / ramp_s)
        d = run(stage, price, None, float(t))
        if opened(d, Reason.ANCHOR):
            held_at = d.mark.price
        if held_at is not None:
            assert (d.mark.status, d.mark.price) == (Status.HELD, held_at)
    assert held_at is not None and held_at < 1.25 * P0  # never validated anywhere near double
    # The attack ends: the venues fall back, the detector's dispute closes itself, the market resumes.
    d = run(stage, P0 * 1.01, None, float(end))
    closed = [e.dispute for e in d.events if e.kind is EventKind.DISPUTE_CLOSED]
    assert [(c.reason, c.outcome) for c in closed] == [(Reason.ANCHOR, Outcome.REVERTED)]
    assert not [x for x in stage.disputes() if x.is_open]
    # Back down from the last validated level is itself a jump: the window the pump kept restarting
    # ends on a different price and restarts once more, then validates. No operator needed.
    assert d.mark.status is Status.HELD
    statuses = {t: run(stage, P0 * 1.01, None, float(t)).mark.status for t in range(end + 1, end + 30)}
    assert min(t for t, status in statuses.items() if status is Status.OK) <= end + 2 * 10
    assert statuses[end + 29] is Status.OK


def test_a_move_far_from_the_anchor_confirmed_by_another_tier_is_genuine():
    stage = DisputeStage(make_settings())
    warm_up(stage, 100.0, 600, tier2=True)
    events = []
    for s in range(600):  # both tiers walk up 50 % together
        price = 100.0 * (1 + 0.5 * s / 600)
        d = run(stage, price, price * 1.001, 600.0 + s)
        events += d.events
        assert d.mark.status is Status.OK
    assert [e.kind for e in events] == [EventKind.ANCHOR_CONFIRMED]


def test_rejecting_an_anchor_dispute_validates_and_resets_the_anchor():
    stage = DisputeStage(make_settings())
    warm_up(stage, 100.0, 600)
    for s in range(60):
        d = run(stage, 100.0 + s * 0.5, None, 600.0 + s)
    dispute = next(x for x in stage.disputes() if x.reason is Reason.ANCHOR)
    assert d.mark.status is Status.HELD
    stage.resolve(dispute.id, "reject", 660.0)
    for s in range(661, 700):
        d = run(stage, 129.5, None, float(s))
        assert (d.mark.status, d.mark.price) == (Status.OK, 129.5)
        assert not d.events


def test_upholding_an_anchor_dispute_does_not_reopen_it_while_the_attack_lasts():
    stage = DisputeStage(make_settings())
    warm_up(stage, 100.0, 600)
    for s in range(60):
        d = run(stage, 100.0 + s * 0.5, None, 600.0 + s)
    last_validated = d.mark.price
    dispute = next(x for x in stage.disputes() if x.is_open)
    stage.resolve(dispute.id, "uphold", 660.0)
    for s in range(661, 700):
        d = run(stage, 140.0, None, float(s))
        assert (d.mark.status, d.mark.price) == (Status.HELD, last_validated)
        assert not opened(d, Reason.ANCHOR)
    assert run(stage, last_validated * 1.01, None, 700.0).mark.status is Status.OK


def test_tiers_that_disagree_open_a_divergence_dispute_that_reverts_when_they_agree():
    stage = DisputeStage(make_settings(max_deviation_bps=150))
    warm_up(stage, 100.0, 10, tier2=True)
    d = run(stage, 100.0, 103.0, 10.0)
    assert len(opened(d, Reason.DIVERGENCE)) == 1
    assert d.mark.status is Status.HELD
    assert not opened(run(stage, 100.0, 103.0, 11.0), Reason.DIVERGENCE)  # one dispute, not one a tick
    d = run(stage, 100.0, 100.5, 12.0)
    closed = [e.dispute for e in d.events if e.kind is EventKind.DISPUTE_CLOSED]
    assert [(c.reason, c.outcome) for c in closed] == [(Reason.DIVERGENCE, Outcome.REVERTED)]
    assert d.mark.status is Status.OK


def test_detectors_stay_silent_on_clean_noisy_data():
    rng = np.random.default_rng(7)
    stage = DisputeStage(make_settings())
    walk = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.0005, 7200)))  # 5 bps a second: a busy market
    noise = rng.normal(0, 0.0015, (7200, 2))  # venues and tiers disagree by up to ~50 bps
    for t in range(7200):
        d = run(stage, walk[t] * (1 + noise[t, 0]), walk[t] * (1 + noise[t, 1]), float(t))
        assert d.mark.status is Status.OK, t
        assert not [e for e in d.events if e.kind is not EventKind.TIER_CHANGED]
    assert stage.disputes() == []


def test_the_stage_reports_frozen_sources_without_holding():
    stage = DisputeStage(make_settings())
    run(stage, 100.0, None, 0.0)
    frozen = (Excluded("kraken", MARKET, Exclusion.FROZEN, 100.0),)
    d = run(stage, 100.1, None, 1.0, excluded=frozen)
    assert [(e.kind, e.detail["source"]) for e in d.events] == [(EventKind.SOURCE_FROZEN, "kraken")]
    assert d.mark.status is Status.OK
    d = run(stage, 100.1, None, 2.0)
    assert [(e.kind, e.detail["source"]) for e in d.events] == [(EventKind.SOURCE_THAWED, "kraken")]


def test_an_anchor_dispute_reverts_once_another_tier_confirms_the_move():
    stage = DisputeStage(make_settings())
    warm_up(stage, 100.0, 600)
    d = run(stage, 125.0, None, 600.0)  # no other tier to confirm: dispute
    assert len(opened(d, Reason.ANCHOR)) == 1
    d = run(stage, 125.0, 125.1, 601.0)  # the fallback tier regains quorum and agrees
    kinds = [(e.kind, e.dispute.outcome if e.dispute else None) for e in d.events]
    assert kinds == [(EventKind.DISPUTE_CLOSED, Outcome.REVERTED), (EventKind.ANCHOR_CONFIRMED, None)]
    assert d.mark.status is Status.HELD  # still a jump: it waits out the window opened at 600 s
    assert run(stage, 125.0, 125.1, 609.0).mark.status is Status.HELD
    assert run(stage, 125.0, 125.1, 610.0).mark.status is Status.OK


def test_the_anchor_window_slides_with_bounded_memory():
    a = Anchor(window_s=60, buckets=6)
    for t in range(0, 600):
        a.observe(100.0 if t < 300 else 200.0, float(t))
    assert a.mean() == pytest.approx(200.0)
    assert len(a._closed) <= 6
