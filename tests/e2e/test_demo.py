"""`markd demo` as a user runs it, in a pipe rather than a terminal."""

from __future__ import annotations

import pytest

from oracle.sim.demo import DEMO_MARKETS
from tests.e2e.stack import clean_env, run_cli

EXCHANGES = {"coinbase", "kraken", "bitstamp", "binance", "okx", "bybit"}


@pytest.mark.timeout(60)
def test_demo_for_10_seconds_exits_0_with_an_ok_mark_for_every_market_from_all_six_exchanges() -> None:
    done = run_cli("demo", "--seconds", "10", env=clean_env(), timeout_s=45)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.split()}
    header = rows.pop("market")
    assert header[:6] == ["market", "price", "confidence", "status", "tier", "sources"], header
    for market in DEMO_MARKETS:
        assert market in rows, done.stdout
        assert rows[market][3] == "ok", rows[market]
        assert float(rows[market][1]) > 0
    printed = {s for market in DEMO_MARKETS for s in rows[market][5].split(",")}
    assert printed >= EXCHANGES, done.stdout
