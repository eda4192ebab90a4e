"""`markd run` end to end: simulated venues (real wire formats, REST and WebSocket) > the daemon as a
real subprocess > a private Redis, read back as the margin engine would, plus its HTTP face.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis as redis_py

from oracle.sim.demo import DEMO_MARKETS, PERP_MARKETS
from oracle.testing import RedisServer
from tests.e2e.stack import (
    PREFIX,
    TOKEN,
    Daemon,
    Prometheus,
    VenueThread,
    clean_env,
    get,
    get_json,
    post_chunked,
    request,
    run_cli,
    wait_for,
)

MARK_FIELDS = {"price", "confidence", "ts_ms", "seq", "status", "tier", "sources"}
VENUES = {"coinbase", "kraken", "bitstamp", "binance", "okx", "bybit", "pyth", "chainlink"}
PERP_VENUES = {"binance_perp", "okx_perp", "bybit_perp", "own_book"}  # BTC-USD's and ETH-USD's perp marks
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

# Every metric of DESIGN.md with its labels (the parser names counters without `_total`).
CONTRACT_METRICS: dict[str, set[str]] = {
    "markd_source_up": {"source"},
    "markd_quotes": {"source"},
    "markd_source_errors": {"source", "code"},
    "markd_quote_age_seconds": {"source", "pair"},
    "markd_quote_excluded": {"market", "source", "reason"},
    "markd_mark_price": {"market"},
    "markd_mark_confidence": {"market"},
    "markd_mark_age_seconds": {"market"},
    "markd_mark_sources": {"market"},
    "markd_mark_status": {"market", "status"},
    "markd_mark_seq": {"market"},
    "markd_aggregation_seconds": set(),
    "markd_publish_seconds": set(),
    "markd_publish_errors": set(),
    "markd_disputes_open": {"market"},
    "markd_disputes": {"market", "reason"},
    "markd_leader": set(),
    "markd_build_info": {"version"},
}


def key(market: str, kind: str) -> str:
    return f"{PREFIX}:{{{market}}}:{kind}"


@pytest.fixture
def store(redis: RedisServer) -> redis_py.Redis:
    return redis_py.Redis.from_url(redis.url, decode_responses=True, socket_timeout=2)


def stored_seq(store: redis_py.Redis, market: str) -> int:
    return int(store.hget(key(market, "mark"), "seq") or 0)


def mark_status(store: redis_py.Redis, market: str) -> str | None:
    return store.hget(key(market, "mark"), "status")


@pytest.mark.timeout(30)
def test_every_market_gets_a_mark_with_every_contract_field(daemon: Daemon, store: redis_py.Redis) -> None:
    # Ready may come first from the fallback tier (REST), before tier 1's WebSockets all quote.
    wait_for("every market ok", lambda: all(mark_status(store, m) == "ok" for m in DEMO_MARKETS), 15)
    now_ms = time.time() * 1000
    for market in DEMO_MARKETS:
        mark = store.hgetall(key(market, "mark"))
        assert set(mark) == MARK_FIELDS, market
        assert mark["status"] == "ok" and mark["tier"] == "1", (market, mark)
        assert float(mark["price"]) > 0 and float(mark["confidence"]) >= 0
        assert now_ms - 5000 <= int(mark["ts_ms"]) <= now_ms + 1000
        assert int(mark["seq"]) >= 1
        assert set(mark["sources"].split(",")) <= VENUES - {"bitstamp"}  # the deviant one is excluded
        history = store.xrevrange(key(market, "history"), count=1)
        assert history and set(history[0][1]) == MARK_FIELDS
        assert int(history[0][1]["seq"]) <= stored_seq(store, market)
        provisional = store.hgetall(key(market, "provisional"))
        assert {"price", "ts_ms", "seq"} <= set(provisional), (market, provisional)
    btc = store.hget(key("BTC-USD", "mark"), "sources") or ""
    assert {"binance", "okx", "bybit"} & set(btc.split(",")), "converted USDT quotes count for BTC-USD"


@pytest.mark.timeout(30)
def test_each_publish_goes_out_as_json_on_the_updates_channel(daemon: Daemon, store: redis_py.Redis) -> None:
    pubsub = store.pubsub()
    try:
        pubsub.subscribe(key("ETH-USD", "updates"))
        message = wait_for(
            "a message on ETH-USD's updates channel",
            lambda: (m := pubsub.get_message(timeout=0.5)) and m["type"] == "message" and m,
            timeout_s=10,
        )
    finally:
        pubsub.close()
    update = json.loads(message["data"])
    assert set(update) == MARK_FIELDS
    assert update["status"] == "ok" and isinstance(update["seq"], int) and float(update["price"]) > 0


@pytest.mark.timeout(30)
def test_v1_marks_answers_every_market_with_every_field(daemon: Daemon) -> None:
    marks = get_json(f"{daemon.url}/v1/marks")
    assert sorted(marks) == sorted(DEMO_MARKETS)
    for market, mark in marks.items():
        perp = mark.pop("perp", None)  # a perp market's perp mark (tests/e2e/test_perp_daemon.py)
        assert (perp is not None) == (market in PERP_MARKETS), market
        assert set(mark) == MARK_FIELDS, market
        assert mark["status"] == "ok" and mark["tier"] == 1 and mark["seq"] >= 1
        assert isinstance(mark["sources"], list) and "bitstamp" not in mark["sources"]


@pytest.mark.timeout(30)
def test_healthz_answers_200_while_the_loop_ticks(daemon: Daemon) -> None:
    status, body = get(f"{daemon.url}/healthz")
    assert status == 200
    assert json.loads(body) == {"ok": True, "reason": "ticking"}


@pytest.mark.timeout(45)
def test_readyz_is_503_with_reasons_while_redis_is_down_and_200_when_it_returns(
    daemon: Daemon, redis: RedisServer, store: redis_py.Redis
) -> None:
    seq_before = stored_seq(store, "BTC-USD")
    redis.stop()
    try:
        _, body = wait_for("/readyz to answer 503", lambda: (r := get(f"{daemon.url}/readyz"))[0] == 503 and r, 10)
        answer = json.loads(body)
        assert (answer["ready"], answer["reasons"]) == (False, ["redis: unreachable"])
    finally:
        redis.start()
    wait_for("/readyz to answer 200 again", lambda: get(f"{daemon.url}/readyz")[0] == 200, 15)
    # The restarted Redis lost its data; the publisher goes on above its own last seq.
    wait_for("a new BTC-USD mark", lambda: stored_seq(store, "BTC-USD") > seq_before, 10)


@pytest.mark.timeout(60)
def test_metrics_hold_every_metric_of_the_contract(
    daemon: Daemon, venues: VenueThread, redis: RedisServer, store: redis_py.Redis
) -> None:
    venues.outage("bybit", "503", 2.0)  # markd_source_errors_total{code="http_5xx"}
    status, body = request(
        "POST", f"{daemon.url}/v1/disputes", json.dumps({"market": "SOL-USD", "reason": "manual"}).encode(), AUTH
    )
    assert status == 201, body
    dispute = json.loads(body)
    redis.stop()  # markd_publish_errors_total
    try:
        wait_for("a failed publish", lambda: (daemon.sample("markd_publish_errors") or 0) > 0, 10)
    finally:
        redis.start()
    # It leads again once it has retaken the lease on the emptied Redis (writes under its old token
    # are refused there, so a mark in it proves that); until then markd_leader may dip to 0 for a tick.
    wait_for("a mark in the restarted Redis", lambda: stored_seq(store, "BTC-USD") > 0, 10)
    wait_for("markd_leader back to 1", lambda: daemon.sample("markd_leader") == 1, 10)
    wait_for(
        "an http_5xx error from bybit",
        lambda: (daemon.sample("markd_source_errors", source="bybit", code="http_5xx") or 0) > 0,
        10,
    )
    families = daemon.metrics()
    assert set(CONTRACT_METRICS) <= set(families)
    for name, labels in CONTRACT_METRICS.items():
        samples = families[name].samples
        assert samples, f"{name} has no sample"
        sample_labels = {k for s in samples for k in s.labels if k not in ("le",)}
        assert sample_labels == labels, (name, sample_labels)
    value = {name: {tuple(sorted(s.labels.items())): s.value for s in f.samples} for name, f in families.items()}
    assert value["markd_disputes_open"][(("market", "SOL-USD"),)] == 1
    assert value["markd_disputes"][(("market", "SOL-USD"), ("reason", "manual"))] == 1
    assert value["markd_mark_status"][(("market", "SOL-USD"), ("status", "held"))] == 1
    assert value["markd_leader"][()] == 1
    assert {
        s.labels["reason"] for s in families["markd_quote_excluded"].samples if s.labels["source"] == "bitstamp"
    } == {"deviation"}
    assert {s.labels["source"] for s in families["markd_source_up"].samples} == VENUES | PERP_VENUES
    assert families["markd_build_info"].samples[0].value == 1
    # Ages are as of the scrape: every mark validated within max_age_ms, every live quote recent.
    assert all(0 <= s.value <= 5 for s in families["markd_mark_age_seconds"].samples if s.labels["market"] != "SOL-USD")
    assert all(s.value <= 5 for s in families["markd_quote_age_seconds"].samples if s.labels["source"] != "bybit")

    status, body = request("POST", f"{daemon.url}/v1/disputes/{dispute['id']}/resolve", b'{"action": "reject"}', AUTH)
    assert status == 200, body
    wait_for("SOL-USD back to ok", lambda: mark_status(store, "SOL-USD") == "ok", 10)
    assert daemon.sample("markd_disputes_open", market="SOL-USD") == 0


@pytest.mark.timeout(60)
def test_a_real_prometheus_server_scrapes_every_markets_price(daemon: Daemon) -> None:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("the prometheus server is not installed (apt-get install prometheus; .ci/run does it)")
    prometheus = Prometheus([f"127.0.0.1:{daemon.port}"], exe).start()
    try:

        def scraped() -> list[dict[str, object]] | None:
            result = prometheus.query("markd_mark_price")
            return result if len(result) == len(DEMO_MARKETS) else None

        result = wait_for("Prometheus to hold markd_mark_price for every market", scraped, 30, every_s=0.25)
        assert {r["metric"]["market"] for r in result} == set(DEMO_MARKETS)  # type: ignore[index]
        assert all(r["metric"]["job"] == "markd" and float(r["value"][1]) > 0 for r in result)  # type: ignore[index]
        up = prometheus.query("up")
        assert [u["value"][1] for u in up] == ["1"]  # type: ignore[index]
    finally:
        prometheus.stop()


@pytest.mark.timeout(60)
def test_dispute_cli_holds_a_market_and_reject_releases_it(daemon: Daemon, store: redis_py.Redis) -> None:
    env = clean_env(MARKD_DISPUTE_TOKEN=TOKEN)
    base = ["dispute", "--url", daemon.url]
    opened = run_cli(*base, "open", "ETH-USD", "--reason", "manual", "--note", "e2e", env=env)
    assert opened.returncode == 0, opened.stderr
    dispute = json.loads(opened.stdout)
    assert (dispute["market"], dispute["reason"], dispute["status"]) == ("ETH-USD", "manual", "open")
    wait_for("ETH-USD held in Redis", lambda: mark_status(store, "ETH-USD") == "held", 10)

    listed = run_cli(*base, "list", "--status", "open", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)["disputes"]] == [dispute["id"]]

    resolved = run_cli(*base, "resolve", dispute["id"], "--action", "reject", env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["status"] == "closed"
    wait_for("ETH-USD ok again in Redis", lambda: mark_status(store, "ETH-USD") == "ok", 10)

    refused = run_cli(*base, "open", "ETH-USD", env=clean_env())
    assert refused.returncode == 2
    assert "MARKD_DISPUTE_TOKEN" in refused.stderr
    assert mark_status(store, "ETH-USD") == "ok"


@pytest.mark.timeout(45)
def test_hostile_requests_get_4xx_and_the_daemon_keeps_ticking(daemon: Daemon, store: redis_py.Redis) -> None:
    seq = stored_seq(store, "BTC-USD")
    url = f"{daemon.url}/v1/disputes"
    huge = json.dumps({"market": "BTC-USD", "reason": "manual", "note": "x" * 100_000}).encode()
    assert request("POST", url, huge, AUTH)[0] == 413
    assert post_chunked("127.0.0.1", daemon.port, "/v1/disputes", [b"{" + b" " * 8192] * 4, AUTH) == 413
    assert request("POST", url, b"{not json", AUTH)[0] == 400
    assert request("POST", url, b"\xff\xfe\x00", AUTH)[0] == 400
    assert request("POST", url, b"[1, 2]", AUTH)[0] == 400
    assert request("POST", url, b'{"market": "NOPE-USD", "reason": "manual"}', AUTH)[0] == 400
    assert request("POST", f"{url}/nope/resolve", b"{", AUTH)[0] == 400
    assert request("POST", url, b'{"market": "BTC-USD", "reason": "manual"}')[0] == 401
    assert request("GET", f"{daemon.url}/no/such/path")[0] == 404
    assert request("GET", f"{daemon.url}/v1/disputes?status=maybe")[0] == 400
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01\x00\xa5garbage that is no HTTP\r\n\r\n")
        assert raw.recv(64).split(b"\r\n")[0] == b"HTTP/1.0 400 Bad Request"
    assert get(f"{daemon.url}/healthz")[0] == 200
    wait_for("BTC-USD marks still advancing", lambda: stored_seq(store, "BTC-USD") > seq, 5)
    assert [d for d in get_json(url)["disputes"] if d["market"] == "BTC-USD"] == []  # nothing hostile opened one


def sigterm_exits_0_within_5_seconds(own: Daemon) -> None:
    own.signal(signal.SIGTERM)
    started = time.monotonic()
    assert own.proc is not None
    try:
        code = own.proc.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"markd still running 5 s after SIGTERM:\n{own.stderr()}")
    assert code == 0, own.stderr()
    assert time.monotonic() - started < 5


@pytest.mark.timeout(45)
def test_sigterm_exits_0_within_5_seconds_and_logs_are_json_lines(config: Path) -> None:
    own = Daemon(config).start()
    try:
        own.wait_ready()
        sigterm_exits_0_within_5_seconds(own)
    finally:
        own.stop()
    lines = own.stderr().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "event"} <= set(e) for e in events)
    names = [e["event"] for e in events]
    assert names[:3] == ["http_listening", "restored", "started"] and names[-1] == "stopped", names


@pytest.mark.timeout(45)
def test_sigterm_exits_0_within_5_seconds_while_redis_is_down_and_a_venue_hangs(
    config: Path, venues: VenueThread
) -> None:
    own_redis = RedisServer().start()
    own = Daemon(config, MARKD_REDIS_URL=own_redis.url).start()
    try:
        own.wait_ready()
        own_redis.stop()
        venues.outage("bybit", "silent", 10.0)  # its REST poll hangs until the outage ends
        wait_for("/readyz to notice Redis is down", lambda: get(f"{own.url}/readyz")[0] == 503, 10)
        sigterm_exits_0_within_5_seconds(own)
    finally:
        venues.outage("bybit", "silent", 0)
        own.stop()
        own_redis.stop()
