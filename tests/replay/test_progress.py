"""The replay's progress bar: on a terminal, for a run over a few seconds; nothing on a pipe."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from oracle.replay import load_scenario, replay_loaded, scenario_ticks
from oracle.replay.run import _LateProgress, terminal_progress

from .conftest import SCENARIOS


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=100), buf


def test_nothing_on_a_pipe():
    assert terminal_progress() is None  # pytest's captured stderr is not a terminal


def test_a_long_run_shows_a_bar_with_the_time_left():
    console, buf = _terminal()
    show = _LateProgress(console, "ticks", after_s=0.0)
    show(0.0)
    show(0.5)
    show(1.0)
    show(1.0)  # a second end (the reference run after the attacked one) is harmless
    text = buf.getvalue()
    assert "replaying ticks" in text and "50%" in text and "left" in text


def test_a_quick_run_prints_nothing():
    console, buf = _terminal()
    show = _LateProgress(console, "ticks", after_s=3600.0)
    for f in (0.0, 0.5, 1.0):
        show(f)
    assert buf.getvalue() == ""


def test_the_elapsed_time_counts_from_the_start_of_the_run_not_from_the_bar():
    console, buf = _terminal()
    show = _LateProgress(console, "ticks", after_s=60.0)
    show.started -= 65.0  # the run began 65 s ago; the bar appears now, past after_s
    show(0.5)
    assert "0:01:05" in buf.getvalue()
    show(1.0)


_SPIKE = f"""config = "{SCENARIOS / "compound_dai_spike.markd.toml"}"
[synth]
markets = {{ "DAI-USD" = 1.0 }}
sources = ["coinbase", "kraken", "bitstamp", "okx"]
seconds = 2400
seed = 3
[[attack]]
kind = "spike"
sources = ["coinbase"]
pair = "DAI-USD"
start_s = 300
duration_s = 300
magnitude = 0.30
"""


@pytest.mark.parametrize("attacked", [True, False], ids=["two-runs", "one-run"])
def test_the_bar_covers_every_run_of_a_replay(tmp_path, attacked):
    """Both runs take the ticks together, a piece at a time: the bar rises with the two in many
    steps, and ends once, after both."""
    scenario = tmp_path / "s.toml"
    scenario.write_text(_SPIKE if attacked else _SPIKE.split("[[attack]]")[0])
    loaded = load_scenario(scenario)
    seen: list[float] = []
    replay_loaded(loaded, scenario_ticks(loaded), seen.append, chunk=64 if attacked else 1)
    assert seen == sorted(seen) and seen[-1] == 1.0 and seen.count(1.0) == 1  # one end, after every run
    assert len({f for f in seen if 0.0 < f < 1.0}) >= 8  # it moves along the way
    assert any(0.25 < f < 0.75 for f in seen)
