"""No work twice: without attacks and with the reference config equal to the config, the reference run
is the run (a replay is deterministic, so a second run of the same ticks could only repeat it)."""

from __future__ import annotations

from pathlib import Path

import oracle.replay as replay_module
from oracle.replay import load_scenario, run_scenario, scenario_ticks
from oracle.replay.report import build_report
from oracle.replay.run import Run, replay

from .conftest import SCENARIOS
from .golden import TIMINGS

NO_ATTACK = f"""config = "{SCENARIOS / "compound_dai_spike.markd.toml"}"
[synth]
markets = {{ "DAI-USD" = 1.0 }}
sources = ["coinbase", "kraken", "bitstamp", "okx"]
seconds = 600
seed = 3
"""


def _counting(monkeypatch) -> list[int]:
    """Counts the runs a replay makes (each a `Run` of the pipeline over the ticks)."""
    calls: list[int] = []

    class Counted(Run):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(replay_module, "Run", Counted)
    return calls


def _untimed(report: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk not in TIMINGS} if k in ("run", "reference") else v)
            for k, v in report.items() if k != "scenario"}  # fmt: skip


def test_a_scenario_without_attacks_replays_once_and_reports_as_two_runs_would(tmp_path: Path, monkeypatch):
    path = tmp_path / "calm.toml"
    path.write_text(NO_ATTACK)
    calls = _counting(monkeypatch)
    outcome = run_scenario(path, tmp_path / "out", html=False)
    assert len(calls) == 1
    assert outcome.reference is outcome.run
    # what the two runs gave before: the same report, figure for figure
    loaded = load_scenario(path)
    ticks = scenario_ticks(loaded)
    run, ref = replay(loaded.settings, ticks), replay(loaded.settings, ticks)
    want = build_report(run, ref, loaded.settings, [], float(ticks.ts.min()), [])
    assert _untimed(outcome.report) == _untimed(want)
    assert outcome.report["markets"]["DAI-USD"]["max_error_bps"] == 0.0


def test_an_attacked_scenario_still_replays_twice(tmp_path: Path, monkeypatch):
    calls = _counting(monkeypatch)
    run_scenario(SCENARIOS / "bzx_one_tick_double.toml", tmp_path, html=False)
    assert len(calls) == 2
