"""The replay's progress bar: on a terminal, for a run over a few seconds; nothing on a pipe."""

from __future__ import annotations

import io

from rich.console import Console

from oracle.replay.run import _LateProgress, terminal_progress


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
