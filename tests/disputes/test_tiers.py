"""The tier state machine: fall through at once, climb back only after recover_ticks and agreement."""

from __future__ import annotations

import math

from disputes.model import EventKind
from oracle.models import Status
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import make_settings, run


def tier_events(decision):
    return [e for e in decision.events if e.kind is EventKind.TIER_CHANGED]


def test_first_candidate_with_quorum_validates_immediately():
    stage = DisputeStage(make_settings())
    d = run(stage, 100.0, 100.1, 0.0)
    assert (d.mark.status, d.mark.tier, d.mark.price, d.mark.ts) == (Status.OK, 1, 100.0, 0.0)
    assert d.publish
    assert d.mark.seq == 0
    assert [e.detail["to"] for e in tier_events(d)] == [1]


def test_nothing_validated_yet_is_stale_and_not_published():
    stage = DisputeStage(make_settings())
    d = run(stage, None, None, 0.0)
    assert d.mark.status is Status.STALE
    assert math.isnan(d.mark.price)
    assert not d.publish


def test_tier1_without_quorum_falls_to_fallback_as_degraded():
    stage = DisputeStage(make_settings())
    run(stage, 100.0, 100.1, 0.0)
    d = run(stage, None, 100.2, 1.0)
    assert (d.mark.status, d.mark.tier, d.mark.price, d.mark.ts) == (Status.DEGRADED, 2, 100.2, 1.0)
    assert [(e.detail["from"], e.detail["to"]) for e in tier_events(d)] == [(1, 2)]
    assert d.publish


def test_no_tier_with_quorum_is_stale_at_the_last_validated_price():
    stage = DisputeStage(make_settings())
    run(stage, 100.0, 100.1, 0.0)
    d = run(stage, None, None, 1.0)
    assert (d.mark.status, d.mark.tier, d.mark.price, d.mark.ts) == (Status.STALE, 0, 100.0, 0.0)
    assert [(e.detail["from"], e.detail["to"]) for e in tier_events(d)] == [(1, 0)]
    later = run(stage, None, None, 30.0)
    assert later.mark.ts == 0.0  # the price ages; nothing refreshes it


def test_returns_to_tier1_only_after_recover_ticks_of_quorum():
    stage = DisputeStage(make_settings(recover_ticks=3))
    run(stage, 100.0, 100.0, 0.0)
    run(stage, None, 100.0, 1.0)
    assert run(stage, 100.0, 100.0, 2.0).mark.tier == 2
    assert run(stage, 100.0, 100.0, 3.0).mark.tier == 2
    d = run(stage, 100.1, 100.0, 4.0)
    assert (d.mark.status, d.mark.tier, d.mark.price) == (Status.OK, 1, 100.1)
    assert [(e.detail["from"], e.detail["to"]) for e in tier_events(d)] == [(2, 1)]


def test_a_flapping_tier1_restarts_its_streak():
    stage = DisputeStage(make_settings(recover_ticks=3))
    run(stage, 100.0, 100.0, 0.0)
    t = 1.0
    for t1 in (None, 100.0, 100.0, None, 100.0, 100.0):
        assert run(stage, t1, 100.0, t).mark.tier == 2
        t += 1
    assert run(stage, 100.0, 100.0, t).mark.tier == 1


def test_tier1_that_disagrees_with_the_tier_in_use_does_not_take_over():
    stage = DisputeStage(make_settings(recover_ticks=2, max_deviation_bps=150))
    run(stage, 100.0, 100.0, 0.0)
    run(stage, None, 100.0, 1.0)
    for t in range(2, 8):
        d = run(stage, 102.0, 100.0, float(t))  # 200 bps off: not trusted back yet
        assert d.mark.tier == 2
    assert run(stage, 100.5, 100.0, 8.0).mark.tier == 1


def test_a_lost_fallback_falls_through_and_a_lone_fallback_is_used_from_stale():
    stage = DisputeStage(make_settings())
    run(stage, 100.0, 100.0, 0.0)
    assert run(stage, None, None, 1.0).mark.status is Status.STALE
    d = run(stage, None, 100.3, 2.0)
    assert (d.mark.status, d.mark.tier, d.mark.price) == (Status.DEGRADED, 2, 100.3)


def test_heartbeat_republishes_an_unchanged_mark_and_refreshes_ts():
    stage = DisputeStage(make_settings(heartbeat_ms=1000))
    assert run(stage, 100.0, None, 0.0).publish
    quiet = run(stage, 100.0, None, 0.25)
    assert not quiet.publish
    assert quiet.mark.ts == 0.25  # every validation refreshes ts, published or not
    beat = run(stage, 100.0, None, 1.0)
    assert beat.publish and beat.mark.ts == 1.0
    assert run(stage, 100.5, None, 1.25).publish  # a new price goes out at once
