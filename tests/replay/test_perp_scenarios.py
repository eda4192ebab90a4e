"""The perp scenarios of scenarios/, tick by tick: what their [[expect]]s sum up, seen in the marks.

Each test reads the attacked run's perp marks (perp.csv's rows) and checks the stated outcome at
every tick of the window it is about, against the formula of DESIGN.md "Perpetual mark price".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from oracle.replay.scenario import load_scenario

from .conftest import SCENARIOS


def _perps(replayed, name: str, run: str = "run") -> dict[str, np.ndarray]:
    outcome, _ = replayed[name]
    rows = [(t, p.price, p.index, p.c1, p.c2, p.c3, p.c3_fallback) for t, p in getattr(outcome, run).perps]
    return dict(zip(("ts", "price", "index", "c1", "c2", "c3", "fallback"), np.array(rows).T, strict=True))


def _window(replayed, name: str, attack: int = 0) -> tuple[float, float]:
    """The attack's window in Unix time (t0 is the first quote, as apply_attacks takes it)."""
    outcome, _ = replayed[name]
    a = load_scenario(SCENARIOS / f"{name}.toml").scenario.attack[attack]
    return a.window(float(outcome.reference.grid[0]) - 1.0)  # the grid starts within a tick of t0


def _premium(p: dict[str, np.ndarray]) -> np.ndarray:
    return p["price"] / p["index"] - 1.0


def test_own_book_pump_moves_the_mark_by_the_emas_share_and_never_by_the_pump(replayed):
    p, ref = _perps(replayed, "perp_own_book_pump"), _perps(replayed, "perp_own_book_pump", "reference")
    start, end = _window(replayed, "perp_own_book_pump")
    pumped = (p["ts"] >= start + 2) & (p["ts"] < end)  # the book's pumped quotes are in
    assert np.all(p["c2"][pumped] / p["index"][pumped] > 1.045)  # c2 is the pump itself
    assert np.all(p["price"][pumped] == p["c1"][pumped])  # the median is the EMA's c1
    bound = 0.05 * (1 - math.exp(-30 / 150))
    assert _premium(p).max() < bound
    after = p["ts"] >= end + 2
    assert np.all(np.abs(p["price"][after] / ref["price"][after] - 1) < 0.005)  # back as the book is


def test_basis_regime_c1_follows_the_premium_at_the_emas_pace(replayed):
    p = _perps(replayed, "perp_basis_regime")
    start, _ = _window(replayed, "perp_basis_regime")
    basis = p["c1"] / p["index"] - 1.0
    before = basis[p["ts"] < start].mean()  # the venues' own few bps of bias
    for dt in (75, 150, 300, 450):
        k = np.searchsorted(p["ts"], start + dt)
        want = before + (0.003 - 0) * (1 - math.exp(-dt / 150))
        assert basis[k] == pytest.approx(want, abs=4e-4), dt  # within 4 bps of the EMA's curve
    late = p["ts"] >= start + 2
    assert np.all(np.abs(_premium(p)[late] - 0.003) < 8e-4)  # at the premium at once, give or take the venues


def test_externals_silent_c3_is_the_index_exactly_while_they_are_silent(replayed):
    p = _perps(replayed, "perp_externals_silent")
    start, end = _window(replayed, "perp_externals_silent")
    max_age = 3.0
    silent = (p["ts"] > start + max_age) & (p["ts"] < end)
    assert silent.sum() >= 230 and np.all(p["c3"][silent] == p["index"][silent])
    assert np.all(p["fallback"][silent] == 1)
    speaking = (p["ts"] < start) | (p["ts"] >= end + 2)
    assert not np.any(p["fallback"][speaking]) and not np.any(p["c3"][speaking] == p["index"][speaking])
    assert np.all(np.abs(_premium(p)[silent] - 0.003) < 8e-4)  # c1 and c2 keep the book's premium


def test_squeeze_holds_the_mark_on_the_clamp_exactly(replayed):
    p = _perps(replayed, "perp_squeeze")
    start, end = _window(replayed, "perp_squeeze")
    squeezed = (p["ts"] >= start + 2) & (p["ts"] < end)
    assert np.all(p["c2"][squeezed] / p["index"][squeezed] > 1.14)
    np.testing.assert_allclose(p["price"][squeezed], p["index"][squeezed] * 1.1, rtol=1e-12)
    assert _premium(p).max() <= 0.1 + 1e-12
