"""The daemon's event loop: uvloop when installed (the `fast` extra, in the dev venv and the image),
asyncio's own otherwise or when MARKD_LOOP=asyncio says so; a bad MARKD_LOOP is a one-line error."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from oracle import loop
from oracle.cli import main
from oracle.service import Service

CONFIG = Path(__file__).resolve().parents[2] / "config" / "markd.toml"


def _kind(monkeypatch: pytest.MonkeyPatch, env: str | None) -> str:
    if env is None:
        monkeypatch.delenv("MARKD_LOOP", raising=False)
    else:
        monkeypatch.setenv("MARKD_LOOP", env)
    made = loop.new_event_loop()
    try:
        return loop.name(made)
    finally:
        made.close()


def test_uvloop_runs_the_daemon_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    assert _kind(monkeypatch, None) == "uvloop"
    assert _kind(monkeypatch, "uvloop") == "uvloop"
    assert _kind(monkeypatch, "asyncio") == "asyncio"


def test_without_uvloop_the_daemon_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert _kind(monkeypatch, None) == "asyncio"
    assert _kind(monkeypatch, "auto") == "asyncio"
    with pytest.raises(loop.LoopError, match="not installed"):
        _kind(monkeypatch, "uvloop")


def test_markd_run_serves_on_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def record_loop(self: Service) -> None:  # the service itself is tested elsewhere
        seen.append(loop.name(asyncio.get_running_loop()))

    monkeypatch.setattr(Service, "run", record_loop)
    monkeypatch.setenv("MARKD_LOOP", "asyncio")
    assert main(["run", "--config", str(CONFIG)]) == 0
    monkeypatch.delenv("MARKD_LOOP")
    assert main(["run", "--config", str(CONFIG)]) == 0
    expected = "asyncio" if _missing("uvloop") else "uvloop"
    assert seen == ["asyncio", expected]


def test_after_markd_run_in_process_a_child_still_stops_on_sigterm() -> None:
    """Runs after the test above (file order): its `markd run` blocked SIGTERM in this thread, and a
    child inherits the mask. tests/conftest.py restores it; without that, this child ignores SIGTERM."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.terminate()
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_a_bad_markd_loop_exits_2_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("MARKD_LOOP", "tokio")
    assert main(["run", "--config", str(CONFIG)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MARKD_LOOP='tokio'" in err


def _missing(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return True
    return False
