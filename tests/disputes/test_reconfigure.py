"""A config reload as the dispute stage sees it (DisputeStage.reconfigure): kept markets keep their
state under the new thresholds, removed ones are forgotten, added ones start afresh."""

from __future__ import annotations

import math

import pytest

from disputes.model import EventKind, UnknownMarket
from oracle.models import Status
from oracle.settings import Settings
from oracle.validation.detectors import Anchor
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run


def without(settings: Settings, market: str) -> Settings:
    return settings.model_copy(update={"markets": {m: v for m, v in settings.markets.items() if m != market}})


def test_a_kept_market_keeps_its_tier_and_streak_and_climbs_back_by_the_new_recover_ticks() -> None:
    stage = DisputeStage(make_settings(recover_ticks=3))
    run(stage, 100.0, 100.0, 0.0)
    run(stage, None, 100.0, 1.0)  # tier 1 lost: on the fallback
    run(stage, 100.0, 100.0, 2.0)  # tier 1 back: streak 1
    run(stage, 100.0, 100.0, 3.0)  # streak 2; the old policy would climb back at the next tick
    stage.reconfigure(make_settings(recover_ticks=5))
    decision = run(stage, 100.0, 100.0, 4.0)
    assert decision.mark.status is Status.DEGRADED and decision.mark.tier == 2
    assert not decision.events, "a reset tier machine would report a tier change from none"
    assert run(stage, 100.0, 100.0, 5.0).mark.tier == 2
    assert run(stage, 100.0, 100.0, 6.0).mark.tier == 1  # streak 5: the new recover_ticks


def test_an_open_dispute_and_the_last_validated_price_survive_a_reload() -> None:
    stage = DisputeStage(make_settings())
    run(stage, 100.0, 100.0, 0.0)
    dispute = stage.open_dispute(MARKET, "manual", 1.0)
    stage.reconfigure(make_settings(max_deviation_bps=50))
    decision = run(stage, 101.0, 101.0, 2.0)
    assert decision.mark.status is Status.HELD and decision.mark.price == 100.0
    assert stage.dispute(dispute.id).is_open
    assert stage.open_counts()[MARKET] == 1


def test_a_jump_window_keeps_running_and_ends_by_the_new_length() -> None:
    stage = DisputeStage(make_settings(max_jump_bps=100, dispute_window_ms=10_000))
    run(stage, 100.0, 100.0, 0.0)
    opened = run(stage, 110.0, 110.0, 1.0)
    assert opened.mark.status is Status.HELD
    assert [e.kind for e in opened.events] == [EventKind.JUMP_HELD]
    stage.reconfigure(make_settings(max_jump_bps=100, dispute_window_ms=2_000))
    passed = run(stage, 110.0, 110.0, 3.0)  # 2 s after the window opened: over by the new length
    assert passed.mark.price == 110.0
    assert EventKind.JUMP_VALIDATED in [e.kind for e in passed.events]


def test_a_removed_market_is_forgotten_and_an_added_one_starts_afresh() -> None:
    full = make_settings()
    stage = DisputeStage(full)
    run(stage, 100.0, 100.0, 0.0, market="ETH-USD")
    stage.open_dispute("ETH-USD", "manual", 0.5)
    stage.reconfigure(without(full, "ETH-USD"))
    with pytest.raises(UnknownMarket):
        run(stage, 100.0, 100.0, 1.0, market="ETH-USD")
    assert "ETH-USD" not in stage.open_counts()
    stage.reconfigure(full)
    first = run(stage, 200.0, 200.0, 2.0, market="ETH-USD")
    assert first.mark.price == 200.0 and first.mark.status is Status.OK  # no jump from a forgotten 100


def test_the_anchor_keeps_its_history_through_a_longer_window_and_restarts_from_off() -> None:
    anchor = Anchor(60.0)
    for t in range(0, 60):
        anchor.observe(100.0 if t < 30 else 110.0, float(t))
    before = anchor.mean()
    assert 100.0 < before < 110.0
    anchor.rewindow(120.0)
    anchor.observe(110.0, 60.0)
    assert anchor.mean() == pytest.approx(before, rel=1e-3)
    anchor.rewindow(0.0)
    assert not anchor.enabled
    anchor.rewindow(60.0)
    anchor.observe(120.0, 61.0)
    assert anchor.mean() == pytest.approx(110.0), "from off, only the price since is history"
    assert math.isfinite(anchor.mean())
