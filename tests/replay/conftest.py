from __future__ import annotations

from pathlib import Path

import pytest

from oracle.replay import ReplayOutcome, run_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
INCIDENTS = [
    "compound_dai_spike",
    "mango_pump",
    "synthetix_skrw_x1000",
    "venus_luna_freeze",
    "bzx_one_tick_double",
    "pyth_two_publishers_zero",
    "jelly_thin_ramp",
    "svb_usdc_depeg",
    "svb_usdc_depeg_real",
    "chainlink_quiet_exchanges_down",
]
# The perp mark's scenarios (DESIGN.md "Perpetual mark price"): an own-book pump, a basis regime,
# the outside perps silent, a squeeze against the clamp.
PERPS = ["perp_own_book_pump", "perp_basis_regime", "perp_externals_silent", "perp_squeeze"]
LIBRARY = INCIDENTS + PERPS  # every scenario of scenarios/


class _Replays(dict[str, tuple[ReplayOutcome, Path]]):
    """Each scenario replayed on first use, then kept for the session: a test waits (and its timeout
    counts) only for the scenarios it reads, not for the whole library at once."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self._factory = factory

    def __missing__(self, name: str) -> tuple[ReplayOutcome, Path]:
        folder = self._factory.mktemp(name)
        self[name] = (run_scenario(SCENARIOS / f"{name}.toml", folder, html=False), folder)
        return self[name]


@pytest.fixture(scope="session")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[ReplayOutcome, Path]]:
    """Every scenario of the library, replayed once per test session (report.html skipped)."""
    return _Replays(tmp_path_factory)
