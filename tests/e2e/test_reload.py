"""Reloading the config (SIGHUP) of a running `markd run`, end to end: simulated venues, the daemon as
a subprocess, a private Redis read back as the margin engine would (DESIGN.md "Reloading the config").

One daemon serves the module; each test rewrites its config file, sends SIGHUP, checks, and puts the
starting config back (by another reload) before it ends.
"""

from __future__ import annotations

import copy
import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_py

from oracle.sim.demo import demo_config, to_toml
from oracle.testing import RedisServer
from tests.e2e.stack import PREFIX, TOKEN, Daemon, VenueThread, get_json, request, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
START_MARKETS = ("USDT-USD", "BTC-USD", "ETH-USD")  # SOL-USD is the one a reload adds


@pytest.fixture(scope="module")
def venues() -> Iterator[VenueThread]:
    v = VenueThread(seed=11).start()
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="module")
def base(venues: VenueThread, redis: RedisServer) -> dict[str, Any]:
    config = demo_config(venues.urls, redis.url, http_port=0)
    config["markets"] = {m: config["markets"][m] for m in START_MARKETS}
    return config


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, base: dict[str, Any]) -> Iterator[Daemon]:
    path = tmp_path_factory.mktemp("reload") / "markd.toml"
    path.write_text(to_toml(base), encoding="utf-8")
    d = Daemon(path, MARKD_DISPUTE_TOKEN=TOKEN).start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.fixture
def store(redis: RedisServer) -> redis_py.Redis:
    return redis_py.Redis.from_url(redis.url, decode_responses=True, socket_timeout=2)


@pytest.fixture
def restore(daemon: Daemon, base: dict[str, Any]) -> Iterator[None]:
    """Each test leaves the daemon on the starting config, whatever it did."""
    yield
    assert reload(daemon, to_toml(base)) == "ok", daemon.stderr()[-3000:]


def mark(store: redis_py.Redis, market: str) -> dict[str, str]:
    return store.hgetall(f"{PREFIX}:{{{market}}}:mark")


def perp(store: redis_py.Redis, market: str) -> dict[str, str]:
    return store.hgetall(f"{PREFIX}:{{{market}}}:perp")


def seq(store: redis_py.Redis, market: str) -> int:
    return int(mark(store, market).get("seq") or 0)


def reloads(daemon: Daemon) -> dict[str, float]:
    return {r: daemon.sample("markd_config_reloads", result=r) or 0.0 for r in ("ok", "error")}


def reload(daemon: Daemon, text: str) -> str:
    """Write `text` as the config, SIGHUP, and return the result the reload counted: ok or error."""
    before = reloads(daemon)
    daemon.config.write_text(text, encoding="utf-8")
    daemon.signal(signal.SIGHUP)

    def counted() -> str | None:
        after = reloads(daemon)
        return next((r for r in after if after[r] > before[r]), None)

    return wait_for("the reload to be counted", counted, 15)


def rises(store: redis_py.Redis, market: str, timeout_s: float = 10) -> int:
    """Wait for `market`'s seq in Redis to rise above what it is now; the new seq."""
    start = seq(store, market)
    return wait_for(f"{market}'s seq to rise above {start}", lambda: (s := seq(store, market)) > start and s, timeout_s)


def log_events(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon.stderr().splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            doc = json.loads(line)
            if doc.get("event") == event:
                out.append(doc)
    return out


def edited(base: dict[str, Any], edit: Callable[[dict[str, Any]], None]) -> str:
    config = copy.deepcopy(base)
    edit(config)
    return to_toml(config)


@pytest.mark.timeout(90)
def test_markets_added_and_removed_while_the_others_keep_their_seq(
    daemon: Daemon, store: redis_py.Redis, base: dict[str, Any], venues: VenueThread, restore: None
) -> None:
    btc_before = rises(store, "BTC-USD")
    eth_before = seq(store, "ETH-USD")
    assert not mark(store, "SOL-USD")
    wait_for("ETH-USD's perp mark ok", lambda: perp(store, "ETH-USD").get("status") == "ok", 10)
    eth_perp_before = int(perp(store, "ETH-USD")["seq"])

    def swap(config: dict[str, Any]) -> None:
        full = demo_config(venues.urls, config["redis"]["url"], http_port=0)
        config["markets"]["SOL-USD"] = full["markets"]["SOL-USD"]
        del config["markets"]["ETH-USD"]

    assert reload(daemon, edited(base, swap)) == "ok", daemon.stderr()[-3000:]
    # The added market publishes once its sources quote, like any market at start.
    wait_for("SOL-USD's first ok mark", lambda: mark(store, "SOL-USD").get("status") == "ok", 15)
    # The removed one got one last write saying it is stale, then nothing more.
    eth = wait_for("ETH-USD's last write", lambda: (m := mark(store, "ETH-USD")).get("status") == "stale" and m, 5)
    assert int(eth["seq"]) == eth_before + 1 or int(eth["seq"]) > eth_before
    # ... and so did its perp mark: its last price, no candidates (as for an index not usable)
    eth_perp = wait_for(
        "ETH-USD's last perp write", lambda: (p := perp(store, "ETH-USD"))["status"] == "stale" and p, 5
    )
    assert int(eth_perp["seq"]) > eth_perp_before and (eth_perp["c1"], eth_perp["c2"], eth_perp["c3"]) == ("", "", "")
    rises(store, "BTC-USD")
    rises(store, "BTC-USD")
    assert mark(store, "ETH-USD") == eth, "a removed market must not be written again"
    assert perp(store, "ETH-USD") == eth_perp, "nor its perp mark"
    # A kept market's seq went on from where it was: no reset, no gap back.
    assert seq(store, "BTC-USD") > btc_before
    marks = get_json(f"{daemon.url}/v1/marks")
    assert "SOL-USD" in json.dumps(marks) and "ETH-USD" not in json.dumps(marks)
    assert daemon.sample("markd_mark_price", market="ETH-USD") is None
    assert daemon.sample("markd_mark_price", market="SOL-USD") is not None
    done = log_events(daemon, "config_reloaded")[-1]
    assert done["added"] == ["SOL-USD"] and done["removed"] == ["ETH-USD"]

    # Added again (the restore fixture's reload): its seq continues above the stale write's.
    assert reload(daemon, to_toml(base)) == "ok"
    wait_for("ETH-USD back to ok", lambda: mark(store, "ETH-USD").get("status") == "ok", 15)
    assert seq(store, "ETH-USD") > int(eth["seq"])
    wait_for("ETH-USD's perp mark back", lambda: int(perp(store, "ETH-USD")["seq"]) > int(eth_perp["seq"]), 15)


@pytest.mark.timeout(60)
def test_a_perp_table_removed_gets_one_last_stale_write_and_its_market_goes_on(
    daemon: Daemon, store: redis_py.Redis, base: dict[str, Any], restore: None
) -> None:
    wait_for("BTC-USD's perp mark ok", lambda: perp(store, "BTC-USD").get("status") == "ok", 10)

    def no_perp(config: dict[str, Any]) -> None:
        del config["markets"]["BTC-USD"]["perp"]

    assert reload(daemon, edited(base, no_perp)) == "ok", daemon.stderr()[-3000:]
    last = wait_for("BTC-USD's last perp write", lambda: (p := perp(store, "BTC-USD"))["status"] == "stale" and p, 5)
    rises(store, "BTC-USD")
    rises(store, "BTC-USD")
    assert mark(store, "BTC-USD")["status"] == "ok"  # the index goes on
    assert perp(store, "BTC-USD") == last, "a perp mark no longer computed must not be written again"
    assert "perp" not in get_json(f"{daemon.url}/v1/marks")["BTC-USD"]


@pytest.mark.timeout(60)
def test_a_bad_file_changes_nothing_and_names_each_problem(
    daemon: Daemon, store: redis_py.Redis, base: dict[str, Any], restore: None
) -> None:
    def break_it(config: dict[str, Any]) -> None:
        config["markets"]["BTC-USD"]["max_deviation_bps"] = -5
        config["policy"]["max_age_msec"] = 100  # a typo: unknown keys are errors
        del config["markets"]["ETH-USD"]  # a valid change in the same file must not apply either

    errors_before = len(log_events(daemon, "config_reload_problem"))
    assert reload(daemon, edited(base, break_it)) == "error"
    problems = [e["problem"] for e in log_events(daemon, "config_reload_problem")[errors_before:]]
    assert any(p.startswith("markets.BTC-USD.max_deviation_bps:") for p in problems), problems
    assert any(p.startswith("policy.max_age_msec:") for p in problems), problems
    assert log_events(daemon, "config_reload_refused")
    # The old config keeps running: ETH-USD (removed in the bad file) still publishes.
    rises(store, "ETH-USD")
    assert mark(store, "ETH-USD")["status"] == "ok"

    assert reload(daemon, "this is [not toml") == "error"
    assert "not valid TOML" in log_events(daemon, "config_reload_problem")[-1]["problem"]

    def move_redis(config: dict[str, Any]) -> None:
        config["redis"]["prefix"] = "elsewhere"
        config["service"]["http_max_connections"] = 7

    assert reload(daemon, edited(base, move_redis)) == "error"
    problems = [e["problem"] for e in log_events(daemon, "config_reload_problem")[-2:]]
    assert any(p.startswith("redis.prefix:") and "restart" in p for p in problems), problems
    assert any(p.startswith("service.http_max_connections:") and "restart" in p for p in problems), problems
    rises(store, "ETH-USD")
    assert daemon.proc is not None and daemon.proc.poll() is None


@pytest.mark.timeout(60)
def test_a_policy_change_applies_from_the_next_tick_and_keeps_the_market_state(
    daemon: Daemon, store: redis_py.Redis, base: dict[str, Any], restore: None
) -> None:
    rises(store, "BTC-USD")
    price = float(mark(store, "BTC-USD")["price"])
    status, body = request(
        "POST", f"{daemon.url}/v1/disputes", json.dumps({"market": "ETH-USD", "reason": "manual"}).encode(), AUTH
    )
    assert status == 201, body
    dispute = json.loads(body)["id"]

    def floor_above(config: dict[str, Any]) -> None:
        # Every BTC quote now fails the bounds: no tier has quorum, the market goes stale at its
        # last validated price. Nothing else about the market changes.
        config["markets"]["BTC-USD"]["min_price"] = price * 10

    assert reload(daemon, edited(base, floor_above)) == "ok"
    stale = wait_for("BTC-USD stale", lambda: (m := mark(store, "BTC-USD")).get("status") == "stale" and m, 5)
    assert float(stale["price"]) == pytest.approx(price, rel=0.02)
    # The open dispute on a kept market is still open, and still holds its market.
    listed = get_json(f"{daemon.url}/v1/disputes?status=open")
    assert dispute in json.dumps(listed)
    assert mark(store, "ETH-USD")["status"] == "held"

    assert reload(daemon, to_toml(base)) == "ok"
    wait_for("BTC-USD ok again", lambda: mark(store, "BTC-USD").get("status") == "ok", 10)
    status, body = request("POST", f"{daemon.url}/v1/disputes/{dispute}/resolve", b'{"action": "reject"}', AUTH)
    assert status == 200, body


@pytest.mark.timeout(60)
def test_only_the_changed_sources_reconnect(
    daemon: Daemon, store: redis_py.Redis, base: dict[str, Any], venues: VenueThread, restore: None
) -> None:
    ws = ("coinbase", "kraken", "binance", "okx")
    before = {v: venues.connections(v) for v in ws}
    assert all(before.values()), before

    def slower(config: dict[str, Any]) -> None:
        config["sources"]["kraken"]["timeout_ms"] = 4321

    assert reload(daemon, edited(base, slower)) == "ok"
    done = log_events(daemon, "config_reloaded")[-1]
    assert done["sources_restarted"] == ["kraken"] and not done["sources_started"] and not done["sources_stopped"]
    wait_for("kraken to reconnect", lambda: (c := venues.connections("kraken")) and not c & before["kraken"], 10)
    time.sleep(0.5)
    for v in ("coinbase", "binance", "okx"):
        assert venues.connections(v) == before[v], f"{v} must keep its connection"
    rises(store, "BTC-USD")
