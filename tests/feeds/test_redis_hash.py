"""The redis_hash source: the operator's matching engine writes one hash per pair (`bid`, `ask`,
`last`, `ts_ms`) into a Redis of its own, and markd polls it.

The pure parse of a poll's answer first (what the transport hands on: a JSON list, one entry per key,
the key's four values or the error Redis answered), then the config's rules, then the runner end
to end against a real private redis-server: into the QuoteBook as the daemon writes it, each fault
counted against its own pair, a Redis that goes down and comes back, a password that never shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from feeds.adapter import QuoteBatch
from feeds.redis_hash import RedisHash
from feeds.runner import FeedRunner, source_signatures
from oracle.metrics import SOURCE_ERROR_CODES, Metrics
from oracle.quotebook import QuoteBook
from oracle.settings import ConfigError, Settings, SourceRef, parse_settings
from oracle.sim.demo import to_toml
from oracle.testing import MissingBinary, RedisServer
from tests.feeds.conftest import RUNNER_OPTIONS, Feed, until
from tests.feeds.fakes import FastClock

pytestmark = pytest.mark.timeout(30)

NOW = 1_700_000_000.0
NOW_MS = str(int(NOW * 1000))
PAIRS = ("BTC-PERP", "ETH-PERP")


def adapter(heartbeat_s: float = 5.0) -> RedisHash:
    refs = [SourceRef(source="engine", pair=p, key=f"book:{p}", heartbeat_s=heartbeat_s) for p in PAIRS]
    return RedisHash("engine", refs, "redis://127.0.0.1:1/0")


def parse(btc: Any, eth: Any = ("1999.5", "2000.5", None, NOW_MS), *, received: float = NOW) -> dict[str, Any]:
    """What one poll's answer gives, by pair: (bid, ask, last, price, venue_ts), or the error code."""
    result = adapter().parse(json.dumps([btc, eth]), received, PAIRS)
    out: dict[str, Any] = {e.pair: e.code for e in result.errors}
    for q in result.quotes:
        out[q.pair] = (q.bid, q.ask, q.last, q.price, q.venue_ts)
    return out


# --- the pure parse ---


def test_a_hash_gives_the_book_its_last_trade_and_the_engine_time() -> None:
    got = parse(["29999.5", "30000.5", "30000.1", NOW_MS], received=NOW + 0.25)
    assert got["BTC-PERP"] == (29999.5, 30000.5, 30000.1, 30000.0, NOW)
    assert got["ETH-PERP"] == (1999.5, 2000.5, None, 2000.0, NOW)  # no last trade: still a book


def test_a_last_trade_alone_is_a_price_and_one_side_alone_is_no_book() -> None:
    assert parse([None, None, "30000.1", NOW_MS])["BTC-PERP"] == (None, None, 30000.1, 30000.1, NOW)
    assert parse(["29999.5", None, "30000.1", NOW_MS])["BTC-PERP"] == (None, None, 30000.1, 30000.1, NOW)
    assert parse(["29999.5", None, None, NOW_MS])["BTC-PERP"] == "schema"  # neither a book nor a last


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ([None, None, None, None], "unknown_pair"),  # no such hash
        (["29999.5", "30000.5", "30000.1", None], "schema"),  # no ts_ms
        (["abc", "30000.5", "30000.1", NOW_MS], "schema"),
        (["", "30000.5", "30000.1", NOW_MS], "schema"),
        (["29999.5", "30000.5", "30000.1", "soon"], "schema"),
        (["nan", "30000.5", "30000.1", NOW_MS], "bad_price"),
        (["29999.5", "30000.5", "-1", NOW_MS], "bad_price"),
        (["30001", "30000.5", "30000.1", NOW_MS], "bad_price"),  # crossed
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "wrong_type"),
        ("NOPERM this user has no permissions to access the 'book:BTC-PERP' key", "http_4xx"),
        (["1", "2", "3"], "schema"),  # not the four fields asked for
        ({"bid": "1"}, "schema"),
    ],
)
def test_a_bad_hash_fails_its_own_pair_with_a_clear_code(reply: Any, code: str) -> None:
    got = parse(reply)
    assert got["BTC-PERP"] == code
    assert got["ETH-PERP"] == (1999.5, 2000.5, None, 2000.0, NOW)  # the other pair is untouched


def test_the_error_names_the_key_and_what_is_wrong() -> None:
    result = adapter().parse(json.dumps(["WRONGTYPE Operation", [None, None, None, None]]), NOW, PAIRS)
    assert [(e.code, e.pair, e.detail) for e in result.errors] == [
        ("wrong_type", "BTC-PERP", "key 'book:BTC-PERP': WRONGTYPE Operation"),
        ("unknown_pair", "ETH-PERP", "key 'book:ETH-PERP': no such hash (or none of bid, ask, last, ts_ms)"),
    ]


def test_ts_ms_is_held_against_the_heartbeat_both_ways() -> None:
    """Every poll re-reads the hash: only its ts_ms tells a live engine from one that stopped."""
    book = ["29999.5", "30000.5", None]
    assert parse([*book, str(int((NOW - 4.9) * 1000))])["BTC-PERP"][4] == pytest.approx(NOW - 4.9)
    assert parse([*book, str(int((NOW - 5.1) * 1000))])["BTC-PERP"] == "stale_venue_time"
    assert parse([*book, str(int((NOW + 4.9) * 1000))])["BTC-PERP"][4] == pytest.approx(NOW + 4.9)
    assert parse([*book, str(int((NOW + 5.1) * 1000))])["BTC-PERP"] == "future_venue_time"


def test_an_answer_that_is_not_one_entry_per_key_fails_the_frame() -> None:
    result = adapter().parse(json.dumps([["1", "2", "3", NOW_MS]]), NOW, PAIRS)
    assert [(e.code, e.pair) for e in result.errors] == [("schema", None)]
    assert result.batch is None


# --- the config ---


def config(source: dict[str, Any] | None = None, book: dict[str, Any] | None = None) -> dict[str, Any]:
    """A perp market whose book is a redis_hash source; a key given as None is left out."""
    engine = {"kind": "redis_hash", "base_url": "redis://engine:6379/0", **(source or {})}
    ref = {"source": "engine", "pair": "BTC-PERP", "key": "book:BTC-PERP", "heartbeat_s": 5, **(book or {})}
    perp = {"book": {k: v for k, v in ref.items() if v is not None}}
    return {
        "sources": {"engine": {k: v for k, v in engine.items() if v is not None}, "a": {"kind": "coinbase"}},
        "markets": {"BTC-USD": {"sources": [{"source": "a", "pair": "BTC-USD"}], "min_sources": 1, "perp": perp}},
    }


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw)
    return caught.value.problems


def test_a_redis_hash_book_is_a_valid_config() -> None:
    s = parse_settings(config())
    assert s.markets["BTC-USD"].perp is not None
    assert s.markets["BTC-USD"].perp.book.key == "book:BTC-PERP"


def test_a_ref_needs_its_key_and_heartbeat() -> None:
    assert problems(config(book={"key": None, "heartbeat_s": None})) == [
        "markets.BTC-USD.perp.book.key: required for a redis_hash source",
        "markets.BTC-USD.perp.book.heartbeat_s: required for a redis_hash source",
    ]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"base_url": None}, "sources.engine.base_url: redis_hash needs base_url: the engine's Redis URL"),
        (
            {"base_url": "http://u:pw@engine/"},
            "sources.engine.base_url: must start with redis://, rediss:// or unix://",
        ),
        ({"transport": "ws"}, "sources.engine.transport: redis_hash is polled"),
        ({"product": "perp"}, "sources.engine.product: redis_hash reads the hash it is given"),
        ({"db": 1}, "sources.engine.db: unknown key (typo?)"),
    ],
)
def test_a_bad_source_is_one_clear_problem(source: dict[str, Any], problem: str) -> None:
    [got] = problems(config(source))
    assert got.startswith(problem), got
    assert "pw" not in got


def test_a_key_on_another_kind_and_a_typo_in_the_ref_are_errors() -> None:
    raw = config(book={"keys": "book:BTC-PERP"})
    raw["markets"]["BTC-USD"]["sources"][0]["key"] = "x"
    assert problems(raw) == [
        "markets.BTC-USD.perp.book.keys: unknown key (typo?)",
        "markets.BTC-USD.sources[0].key: only a redis_hash source reads a key (this source is coinbase)",
    ]


def test_changing_a_key_restarts_the_source() -> None:
    before = source_signatures(parse_settings(config()))
    after = source_signatures(parse_settings(config(book={"key": "book:other"})))
    assert before["engine"] != after["engine"] and before["a"] == after["a"]


# --- the runner, against a real redis-server ---


@pytest.fixture(scope="module")
def engine_redis() -> Iterator[RedisServer]:
    """The matching engine's own Redis (not markd's): tests write its hashes and stop it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def engine(engine_redis: RedisServer) -> Iterator[redis.Redis]:
    engine_redis.flush()
    client = redis.Redis.from_url(engine_redis.url, decode_responses=True)
    yield client
    client.close()


def feed_settings(url: str, pairs: tuple[str, ...] = PAIRS, heartbeat_s: float = 60.0) -> Settings:
    """One redis_hash source polled every 20 ms, serving `pairs` as perp books of spot markets."""
    markets = {
        f"M{i}-USD": {
            "sources": [{"source": "spot", "pair": f"M{i}-USD"}],
            "min_sources": 1,
            "perp": {"book": {"source": "engine", "pair": p, "key": f"book:{p}", "heartbeat_s": heartbeat_s}},
        }
        for i, p in enumerate(pairs)
    }
    sources = {
        "engine": {"kind": "redis_hash", "base_url": url, "poll_ms": 20, "timeout_ms": 200},
        "spot": {"kind": "coinbase", "base_url": "http://127.0.0.1:1"},
    }
    return Settings.model_validate({"sources": sources, "markets": markets})


def write(engine: redis.Redis, pair: str, **fields: Any) -> None:
    engine.hset(f"book:{pair}", mapping={k: str(v) for k, v in fields.items()})


def now_ms() -> int:
    return int(FastClock().now() * 1000)


async def test_the_engine_hashes_reach_the_quote_book(engine: redis.Redis, engine_redis: RedisServer) -> None:
    """As the daemon wires it: the runner's frames written into the QuoteBook, one write a frame."""
    settings = feed_settings(engine_redis.url)
    book = QuoteBook.for_settings(settings)

    def into_book(b: QuoteBatch) -> None:
        book.write_frame(b.source, b.pair, b.received_ts, b.price, b.bid, b.ask, b.venue_ts, b.confidence, b.last)

    write(engine, "BTC-PERP", bid=29999.5, ask=30000.5, last=30000.1, ts_ms=now_ms())
    write(engine, "ETH-PERP", bid=1999.5, ask=2000.5, ts_ms=now_ms())
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        runner = FeedRunner(settings, session, FastClock(), metrics, into_book, **RUNNER_OPTIONS)
        task = asyncio.create_task(runner.run())
        try:
            await until(lambda: book.latest("engine", "ETH-PERP") is not None)
            q = book.latest("engine", "BTC-PERP")
            assert q is not None and (q.bid, q.ask, q.last, q.price) == (29999.5, 30000.5, 30000.1, 30000.0)
            write(engine, "BTC-PERP", bid=30100, ask=30102, last=30101, ts_ms=now_ms())
            await until(lambda: (q := book.latest("engine", "BTC-PERP")) is not None and q.price == 30101.0)
            assert metrics.registry.get_sample_value("markd_source_up", {"source": "engine"}) == 1.0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_each_broken_key_is_counted_and_the_good_one_still_flows(
    engine: redis.Redis, engine_redis: RedisServer
) -> None:
    pairs = ("GOOD-PERP", "WRONGTYPE-PERP", "MISSING-PERP", "GARBLED-PERP", "CROSSED-PERP", "OLD-PERP", "AHEAD-PERP")
    engine.set("book:WRONGTYPE-PERP", "30000")  # a string where the hash should be
    write(engine, "GARBLED-PERP", bid="30k", ask=30001, ts_ms=now_ms())
    engine.hset("book:GARBLED-PERP", "last", b"\xff\xfe")  # not even UTF-8
    write(engine, "CROSSED-PERP", bid=30002, ask=30001, ts_ms=now_ms())
    write(engine, "OLD-PERP", last=30000, ts_ms=now_ms() - 120_000)  # the engine stopped two minutes ago
    write(engine, "AHEAD-PERP", last=30000, ts_ms=now_ms() + 120_000)
    async with Feed(feed_settings(engine_redis.url, pairs)) as feed:
        write(engine, "GOOD-PERP", bid=29999, ask=30001, ts_ms=now_ms())
        await feed.next_quote("GOOD-PERP")
        await until(lambda: feed.errors("future_venue_time") >= 2)
        assert {q.pair for q in feed.quotes} == {"GOOD-PERP"}
        assert {code for code in SOURCE_ERROR_CODES if feed.errors(code, "engine")} == {
            "wrong_type", "unknown_pair", "schema", "bad_price", "stale_venue_time", "future_venue_time"
        }  # fmt: skip
        assert feed.up() == 1.0  # a broken key fails its pair, never the source or the daemon


async def test_redis_down_backs_off_and_recovers(engine: redis.Redis, engine_redis: RedisServer) -> None:
    write(engine, "BTC-PERP", last=30000, ts_ms=now_ms())
    async with Feed(feed_settings(engine_redis.url, ("BTC-PERP",))) as feed:
        await feed.next_quote("BTC-PERP")
        assert feed.up() == 1.0
        engine_redis.stop()
        try:
            await until(lambda: feed.up() == 0.0 and feed.errors("connect") >= 2)
        finally:
            engine_redis.start()
        write(engine, "BTC-PERP", last=30001, ts_ms=now_ms())
        await until(lambda: any(q.price == 30001.0 for q in feed.quotes) and feed.up() == 1.0)
        assert not feed.task.done()


async def test_the_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-engine-pw"
    server = RedisServer(password=secret).start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.hset("book:BTC-PERP", mapping={"last": "30000", "ts_ms": str(now_ms())})
        client.close()
        caplog.set_level(logging.DEBUG)
        async with Feed(feed_settings(server.url, ("BTC-PERP",))) as feed:  # the right password: quotes
            assert (await feed.next_quote("BTC-PERP")).price == 30000.0
        for url in (server.url.replace(secret, "wr0ng-pw"), server.url.replace(f":{secret}@", "")):
            async with Feed(feed_settings(url, ("BTC-PERP",))) as feed:  # a wrong password, or none
                await until(lambda: feed.errors("connect") >= 2)
                assert feed.up() == 0.0 and not feed.quotes
        assert "wr0ng-pw" not in caplog.text and secret not in caplog.text
        assert "redis://:***@127.0.0.1" in caplog.text
    finally:
        server.stop()


def test_check_config_shows_the_engine_url_without_its_password(tmp_path: Path) -> None:
    raw = config(source={"base_url": "redis://markd:s3cret-pw@engine:6379/0"})
    path = tmp_path / "markd.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "oracle", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sources"]["engine"]["base_url"] == "redis://markd:***@engine:6379/0"
    assert "s3cret-pw" not in out.stdout + out.stderr


def test_check_config_refuses_a_bad_redis_hash_source_with_exit_2(tmp_path: Path) -> None:
    raw = config(source={"base_url": "https://markd:s3cret-pw@engine/"}, book={"heartbeat_s": None})
    path = tmp_path / "markd.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "oracle", "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "sources.engine.base_url: must start with redis://, rediss:// or unix://" in out.stderr
    assert "markets.BTC-USD.perp.book.heartbeat_s: required for a redis_hash source" in out.stderr
    assert "s3cret-pw" not in out.stderr and "Traceback" not in out.stderr


async def test_a_redis_that_never_answers_times_out() -> None:
    """A server that takes the connection and the commands and says nothing: timeout_ms bounds the poll."""

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Feed(feed_settings(f"redis://127.0.0.1:{port}/0", ("BTC-PERP",))) as feed:
            await until(lambda: feed.errors("timeout") >= 2)
            assert feed.up() == 0.0 and not feed.quotes
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_a_thousand_keys_stop_promptly_when_cancelled(engine: redis.Redis, engine_redis: RedisServer) -> None:
    """The daemon stopping cancels the poller mid-poll. With redis-py's per-reply read timeouts, on
    Python 3.11, a loaded machine lost that cancellation and the poll went on for ever."""
    pairs = tuple(f"M{i:04d}-PERP" for i in range(1000))
    pipe = engine.pipeline(transaction=False)
    for p in pairs:
        pipe.hset(f"book:{p}", mapping={"bid": "1", "ask": "2", "ts_ms": str(now_ms())})
    pipe.execute()
    feed = Feed(feed_settings(engine_redis.url, pairs))
    async with feed:
        await until(lambda: len(feed.batches) >= 3, timeout=20)
    # __aexit__ cancelled the runner and awaited it: reaching here is the test (pytest's timeout fails it)
    assert feed.task.cancelled()


async def test_rediss_with_a_password_works(caplog: pytest.LogCaptureFixture) -> None:
    """TLS as for markd's own Redis (oracle.connection): rediss:// with the CA in the URL."""
    secret = "s3cret-tls-pw"
    try:
        server = RedisServer(password=secret, tls=True).start()
    except MissingBinary as exc:  # only the embedded redis-server, which has no TLS
        pytest.skip(str(exc))
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.hset("book:BTC-PERP", mapping={"bid": "29999", "ask": "30001", "ts_ms": str(now_ms())})
        client.close()
        caplog.set_level(logging.DEBUG)
        async with Feed(feed_settings(server.url, ("BTC-PERP",))) as feed:
            assert (await feed.next_quote("BTC-PERP")).price == 30000.0
        assert secret not in caplog.text
    finally:
        server.stop()
