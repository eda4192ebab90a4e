"""Shutdown is idempotent: however many SIGTERMs and SIGINTs `markd run` receives, and whenever,
it stops once and exits 0 (a supervisor that signals twice, or an operator's Ctrl-C after a
`kill`, must not turn a clean stop into a death by signal)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.stack import Daemon


def signal_until_exit(own: Daemon, first: int, then: int, timeout_s: float = 10.0) -> tuple[int, int]:
    """Send `first`, then `then` every couple of milliseconds until the process is gone, so that
    signals land in every phase of shutdown, the loop's teardown and the interpreter's exit included.
    Returns (exit code, signals sent)."""
    assert own.proc is not None
    own.signal(first)
    sent = 1
    deadline = time.monotonic() + timeout_s
    while own.proc.poll() is None and time.monotonic() < deadline:
        own.proc.send_signal(then)  # a no-op once Popen has reaped the process
        sent += 1
        time.sleep(0.002)
    code = own.proc.wait(1)
    return code, sent


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("first", "then"),
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGTERM)],
    ids=["term-then-int", "term-repeated", "int-then-term"],
)
def test_any_number_of_stop_signals_give_one_clean_exit_0(config: Path, first: int, then: int) -> None:
    own = Daemon(config).start()
    try:
        own.wait_ready()
        code, sent = signal_until_exit(own, first, then)
    finally:
        own.stop()
    log = own.stderr()
    assert code == 0, f"exit {code} after {sent} signals:\n{log[-3000:]}"
    assert sent >= 3, "the process must have been signalled during its shutdown, not only before it"
    assert "Traceback" not in log, log[-3000:]
    events = [json.loads(line)["event"] for line in log.splitlines()]
    assert events.count("stopped") == 1, events
    assert "Traceback" not in log
