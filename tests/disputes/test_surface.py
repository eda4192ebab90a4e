"""The package's public surface is what __all__ says, and the fixed code sets are the contract's."""

from __future__ import annotations

import types

import disputes
from disputes.model import Outcome, Reason


def test_public_surface_is_all_of_all():
    names = (n for n in dir(disputes) if not n.startswith("_"))
    exported = {n for n in names if not isinstance(getattr(disputes, n), types.ModuleType)}
    assert exported == set(disputes.__all__)


def test_reason_and_outcome_codes_are_the_fixed_sets():
    assert [r.value for r in Reason] == ["manual", "jump", "anchor", "divergence"]
    assert [o.value for o in Outcome] == ["upheld", "rejected", "reverted"]


def test_an_action_rules_its_outcome():
    assert (Outcome.of("uphold"), Outcome.of("reject")) == (Outcome.UPHELD, Outcome.REJECTED)
