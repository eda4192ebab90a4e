"""FeedRunner: which sources run, with which pairs, and how a source task lives and dies."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from feeds.adapter import QuoteBatch
from feeds.runner import FeedRunner, build_adapters, refs_by_source
from oracle.metrics import Metrics
from oracle.settings import ConfigError, Settings
from tests.feeds.conftest import POLL_MS, RUNNER_OPTIONS, TIMEOUT_MS, Feed, settings_for, until
from tests.feeds.fakes import BTC_FEED, FastClock
from tests.servers import free_port


def _settings(sources: dict, markets: dict) -> Settings:
    return Settings.model_validate({"sources": sources, "markets": markets})


def test_each_source_serves_every_pair_its_markets_name_in_any_tier():
    s = _settings(
        {"coinbase": {"kind": "coinbase"}, "pyth": {"kind": "pyth"}, "idle": {"kind": "bybit"}},
        {
            "USDT-USD": {"sources": [{"source": "coinbase", "pair": "USDT-USD"}], "min_sources": 1},
            "BTC-USD": {
                "sources": [
                    {"source": "coinbase", "pair": "BTC-USD"},
                    {"source": "coinbase", "pair": "USDT-USD"},
                ],
                "fallback": [{"source": "pyth", "pair": "BTC-USD", "id": BTC_FEED}],
                "min_sources": 1,
            },
        },
    )
    refs = refs_by_source(s)
    assert {name: [r.pair for r in rs] for name, rs in refs.items()} == {
        "coinbase": ["USDT-USD", "BTC-USD"],  # one entry per pair, however many markets name it
        "pyth": ["BTC-USD"],
    }
    adapters = build_adapters(s)
    assert sorted(adapters) == ["coinbase", "pyth"]  # a source no market uses gets no task
    assert adapters["pyth"].requests()[0].params[0] == ("ids[]", BTC_FEED)


def test_a_source_its_adapter_cannot_serve_is_a_config_error_naming_it():
    s = _settings(
        {"bybit": {"kind": "bybit", "transport": "ws"}, "doc": {"kind": "http_json"}},
        {
            "BTC-USDT": {
                "sources": [
                    {"source": "bybit", "pair": "BTC-USDT"},
                    {"source": "doc", "pair": "BTC-USDT", "path": "p"},
                ],
                "min_sources": 1,
            }
        },
    )
    with pytest.raises(ConfigError) as caught:
        FeedRunner(s, None, FastClock(), Metrics(), lambda q: None)
    assert [p.split(":")[0] for p in caught.value.problems] == ["sources.bybit", "sources.doc"]


async def test_sources_run_side_by_side_and_a_dead_one_does_not_stop_the_others(venues, rest_case, ws_case):
    rest, ws = rest_case("bitstamp"), ws_case("okx")
    bitstamp, okx = await venues(rest), await venues(ws)
    common = {"poll_ms": POLL_MS, "timeout_ms": TIMEOUT_MS}
    s = _settings(
        {
            "bitstamp": {"kind": "bitstamp", "base_url": bitstamp.url, **common},
            "okx": {"kind": "okx", "base_url": okx.url, "transport": "ws", **common},
            "dead": {"kind": "coinbase", "base_url": f"http://127.0.0.1:{free_port()}", **common},
        },
        {
            "BTC-USD": {
                "sources": [{"source": "bitstamp", "pair": "BTC-USD"}, {"source": "dead", "pair": "BTC-USD"}],
                "min_sources": 1,
            },
            "BTC-USDT": {"sources": [{"source": "okx", "pair": "BTC-USDT"}], "min_sources": 1},
        },
    )
    async with Feed(s) as feed:
        await until(lambda: {q.source for q in feed.quotes} == {"bitstamp", "okx"})
        await until(lambda: feed.errors("connect", "dead") >= 3)
        assert (feed.up("bitstamp"), feed.up("okx"), feed.up("dead")) == (1, 1, 0)
        assert feed.metrics.registry.get_sample_value("markd_quotes_total", {"source": "okx"}) >= 1


async def test_a_failing_on_batch_is_logged_and_counted_and_the_feed_goes_on(venues, rest_case, caplog):
    case = rest_case("bitstamp")
    venue = await venues(case)
    calls: list[QuoteBatch] = []

    def on_batch(b: QuoteBatch) -> None:
        calls.append(b)
        if len(calls) == 1:
            raise RuntimeError("consumer bug")

    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        runner = FeedRunner(settings_for(case, venue.url), session, FastClock(), metrics, on_batch, **RUNNER_OPTIONS)
        task = asyncio.create_task(runner.run())
        await until(lambda: len(calls) >= 3)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    labels = {"source": "bitstamp", "code": "internal"}
    assert metrics.registry.get_sample_value("markd_source_errors_total", labels) == 1
    assert any(r.levelno == logging.ERROR and "on_batch failed" in r.getMessage() for r in caplog.records)


async def test_cancellation_closes_every_connection_and_marks_the_source_down(venues, ws_case):
    case = ws_case("kraken")
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        assert venue.connections == 1
    await until(lambda: venue.closed == 1)
    assert feed.up() == 0


async def test_transport_failures_are_logged_as_warnings(venues, rest_case, caplog):
    caplog.set_level(logging.WARNING)  # the in-process demo test leaves the root logger at ERROR
    case = rest_case("bybit")
    venue = await venues(case)
    venue.fault = "503"
    async with Feed(settings_for(case, venue.url)) as feed:
        await until(lambda: feed.errors("http_5xx") >= 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("source bybit: http_5xx" in w for w in warnings)


async def test_an_adapter_bug_is_logged_counted_as_internal_and_retried(venues, rest_case, caplog):
    case = rest_case("okx")
    venue = await venues(case)
    feed = Feed(settings_for(case, venue.url))
    async with feed:
        adapter = feed.runner.feeds[0].adapter
        real_parse, failures = adapter.parse, []

        def flaky_parse(*args):
            if not failures:
                failures.append(1)
                raise KeyError("a bug")
            return real_parse(*args)

        adapter.parse = flaky_parse  # type: ignore[method-assign]
        await until(lambda: feed.errors("internal") == 1)
        await feed.next_quote()
    assert any("unexpected failure" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_venue_that_accepts_then_drops_without_quotes_keeps_backing_off(venues, ws_case):
    case = ws_case("kraken")
    venue = await venues(case)
    venue.fault, venue.mode = "close", "schema"  # every connection: one useless message, then gone
    async with Feed(settings_for(case, venue.url)) as feed:
        await until(lambda: feed.errors("connect") >= 4)
        delays = list(feed.clock.sleeps)
        venue.heal()
        await feed.next_quote()
    # 0.02 s doubling to the 0.1 s cap, jittered by at most half: the later waits are longer.
    assert delays[0] <= 0.02 and max(delays[2:]) >= 0.04


def test_the_production_config_gets_an_adapter_per_source_with_real_endpoints():
    from pathlib import Path

    from oracle.settings import load_settings

    config = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
    adapters = build_adapters(load_settings(config))
    endpoints = {name: a.ws_endpoint() if a.transport == "ws" else a.requests()[0].url for name, a in adapters.items()}
    assert endpoints["coinbase"] == "wss://ws-feed.exchange.coinbase.com"
    assert endpoints["kraken"] == "wss://ws.kraken.com"
    assert endpoints["okx"] == "wss://ws.okx.com:8443/ws/v5/public"
    assert endpoints["binance"].startswith("wss://stream.binance.com:9443/stream?streams=usdcusdt@bookTicker/")
    assert endpoints["bybit"] == "https://api.bybit.com/v5/market/tickers"
    assert endpoints["bitstamp"] == "https://www.bitstamp.net/api/v2/ticker/usdtusd/"
    assert endpoints["pyth"] == "https://hermes.pyth.network/v2/updates/price/latest"
    assert endpoints["chainlink"] == "https://ethereum-rpc.publicnode.com"
    assert len(adapters["chainlink"].requests()) == 5  # one eth_call per aggregator
