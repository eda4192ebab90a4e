"""`markd sim` serves the simulated venues on config/demo.toml's ports, so the shipped demo config
runs as it is: `markd sim` in one terminal, `markd run --config config/demo.toml` in another."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from oracle.sim.demo import DEMO_MARKETS
from oracle.sim.serve import demo_ports
from oracle.testing import RedisServer
from tests.e2e.stack import ROOT, Daemon, clean_env, get_json, wait_for


@pytest.fixture
def sim() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "oracle", "sim", "--seconds", "120", "--seed", "3"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


@pytest.mark.timeout(90)
def test_markd_run_on_config_demo_toml_validates_every_market_over_markd_sim(sim: subprocess.Popen[str]) -> None:
    assert sim.stdout is not None
    printed: list[str] = []
    while not (printed and printed[-1].startswith("ready:")) and len(printed) < 40:
        printed.append(sim.stdout.readline())  # one line per venue, then the ready line
    assert printed[-1].startswith("ready: markd run --config config/demo.toml"), printed
    venues = {line.split()[0]: line.split()[1] for line in printed[:-1]}
    assert venues == {v: f"http://127.0.0.1:{port}" for v, port in demo_ports().items()}  # config/demo.toml's
    redis = RedisServer().start()
    daemon = Daemon(ROOT / "config" / "demo.toml", MARKD_REDIS_URL=redis.url)
    try:
        daemon.start().wait_ready(timeout_s=45)

        def all_ok() -> bool:
            marks = get_json(f"{daemon.url}/v1/marks")
            return all(marks.get(m, {}).get("status") == "ok" for m in DEMO_MARKETS)

        wait_for("every market of config/demo.toml ok", all_ok, 20)
    finally:
        daemon.stop()
        redis.stop()
    sim.send_signal(signal.SIGTERM)
    _, err = sim.communicate(timeout=10)
    assert sim.returncode == 0 and err == ""
