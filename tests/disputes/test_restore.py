"""After a restart the open disputes come back and hold their markets."""

from __future__ import annotations

import math

import pytest

import oracle.validation.stage as stage_module
from disputes.model import Reason, UnknownDispute
from oracle.models import Status
from oracle.validation.stage import DisputeStage
from tests.disputes.helpers import MARKET, make_settings, run


def test_restore_with_an_open_dispute_comes_back_held_at_the_last_validated_price():
    before = DisputeStage(make_settings())
    last = run(before, 100.0, None, 0.0).mark
    open_one = before.open_dispute(MARKET, "manual", 1.0, note="looks wrong")
    closed_one = before.open_dispute("ETH-USD", "jump", 1.0)
    before.resolve(closed_one.id, "reject", 2.0)

    after = DisputeStage(make_settings())
    after.restore(before.disputes(), marks=[last])
    assert after.disputes() == [open_one]
    d = run(after, 100.2, None, 10.0)
    assert (d.mark.status, d.mark.price, d.mark.ts) == (Status.HELD, 100.0, 0.0)
    assert d.publish
    # New ids never collide with restored ones.
    assert after.open_dispute(MARKET, "manual", 1.0).id != open_one.id
    after.resolve(open_one.id, "reject", 11.0)
    assert run(after, 100.2, None, 12.0).mark.status is Status.HELD  # the new dispute still holds


def test_restore_without_marks_holds_at_no_price_and_publishes_nothing():
    before = DisputeStage(make_settings())
    d0 = before.open_dispute(MARKET, "anchor", 1.0)
    after = DisputeStage(make_settings())
    after.restore([d0])
    d = run(after, 100.0, None, 5.0)
    assert d.mark.status is Status.HELD and math.isnan(d.mark.price)
    assert not d.publish
    assert after.disputes()[0].reason is Reason.ANCHOR


def test_memory_keeps_only_the_latest_closed_disputes(monkeypatch):
    monkeypatch.setattr(stage_module, "KEEP_CLOSED", 2)
    stage = DisputeStage(make_settings())
    ids = [stage.open_dispute(MARKET, "manual", float(t)).id for t in range(3)]
    for t, i in enumerate(ids):
        stage.resolve(i, "reject", 10.0 + t)
    assert [d.id for d in stage.disputes()] == ids[1:]
    with pytest.raises(UnknownDispute):
        stage.dispute(ids[0])
