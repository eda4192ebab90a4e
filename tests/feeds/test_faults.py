"""Fault injection against every adapter, through the real transport and runner, on loopback.

For each fault: the source task survives it, the right code is counted in
markd_source_errors_total, and quotes resume once the venue heals.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.feeds.conftest import BOOK_KINDS, REST_KINDS, WS_KINDS, Feed, settings_for, until
from tests.servers import free_port

pytestmark = pytest.mark.timeout(30)


REST_EXPECTED = {  # kind: (method, path, query, (pair, price, bid, ask, venue_ts)) from the real payloads
    "binance": (
        "GET",
        "/api/v3/ticker/bookTicker",
        {"symbols": '["LTCBTC","ETHBTC"]'},
        ("LTC-BTC", 4.000001, 4.0, 4.000002, None),
    ),
    "coinbase": (
        "GET",
        "/products/BTC-USD/ticker",
        {},
        ("BTC-USD", 6266.43, 6265.15, 6267.71, 1584663777.833),
    ),
    "kraken": ("GET", "/0/public/Ticker", {"pair": "XBTUSD"}, ("BTC-USD", 30300.05, 30300.0, 30300.1, None)),
    "okx": (
        "GET",
        "/api/v5/market/ticker",
        {"instId": "ETH-BTC"},
        ("ETH-BTC", 0.07321, 0.0732, 0.07322, 1621440583.784),
    ),
    "bybit": (
        "GET",
        "/v5/market/tickers",
        {"category": "spot"},
        ("BTC-USDT", 16261.715, 16250.32, 16273.11, 1672046714.063),
    ),
    "bitstamp": ("GET", "/api/v2/ticker/btcusd/", {}, ("BTC-USD", 26209.5, 26208.0, 26211.0, 1686068944.0)),
    "pyth": (
        "GET",
        "/v2/updates/price/latest",
        {"ids[]": "e62df6c8b4a85fe1a67db44dc12de5db330f7ac66b72dc658afedf0f4a415b43", "parsed": "true"},
        ("BTC-USD", 51900.75917635, None, None, 1708363256.0),
    ),
    "chainlink": ("POST", "/", {}, ("ETH-USD", 2075.87, None, None, 1700788631.0)),
    "http_json": ("GET", "/any/ticker.json", {}, ("ETH-BTC", 0.07319, None, None, None)),
    # perpetuals: one request per symbol on USD-M futures, the -SWAP instrument, the linear category
    "binance_perp": (
        "GET",
        "/fapi/v1/ticker/bookTicker",
        {"symbol": "BTCUSDT"},
        ("BTC-USDT", 4.000001, 4.0, 4.000002, 1589437530.011),
    ),
    "okx_perp": (
        "GET",
        "/api/v5/market/ticker",
        {"instId": "UNI-USD-SWAP"},
        ("UNI-USD", (5.134 + 5.142) / 2, 5.134, 5.142, 1652459223.143),
    ),
    "bybit_perp": (
        "GET",
        "/v5/market/tickers",
        {"category": "linear"},
        ("BTC-USD", (16596.0 + 16597.5) / 2, 16596.0, 16597.5, 1672376496.682),
    ),
}


@pytest.mark.parametrize("kind", REST_KINDS)
async def test_rest_adapter_polls_the_real_path_and_gets_the_payload_values(venues, rest_case, kind):
    case = rest_case(kind)
    venue = await venues(case)
    method, path, query, expected = REST_EXPECTED[kind]
    async with Feed(settings_for(case, venue.url)) as feed:
        q = await feed.next_quote(expected[0])
        await until(lambda: len(venue.seen) >= 3)  # it polls again and again
    assert (q.pair, q.price, q.bid, q.ask, q.venue_ts) == expected
    assert q.source == kind and abs(q.received_ts - feed.clock.now()) < 5
    for seen_method, seen_path, seen_query in venue.seen:
        assert (seen_method, seen_path) == (method, path)
        assert dict(urllib.parse.parse_qsl(seen_query)) == query


WS_EXPECTED = {  # kind: (the first streamed quote, what the venue hears after each connect)
    "binance": (("NKN-USDT", 0.3521, 0.3526), lambda pairs: []),
    "coinbase": (
        ("BAND-GBP", 14.755, 14.806),
        lambda pairs: [{"type": "subscribe", "product_ids": pairs, "channels": ["ticker", "heartbeat"]}],
    ),
    "kraken": (
        ("WAVES-EUR", 13.2329, 13.2539),
        lambda pairs: [
            {
                "event": "subscribe",
                "pair": [p.replace("BTC", "XBT").replace("-", "/") for p in pairs],
                "subscription": {"name": "ticker"},
            }
        ],
    ),
    "okx": (
        ("BTC-USDT", 30228.6, 30228.7),
        lambda pairs: [{"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}],
    ),
    "binance_perp": (("BNB-USDT", 25.3519, 25.3652), lambda pairs: []),
    "okx_perp": (
        ("BTC-USDT", 103699.9, 103700.0),
        lambda pairs: [{"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT-SWAP"}]}],
    ),
}


@pytest.mark.parametrize("kind", WS_KINDS)
async def test_websocket_adapter_subscribes_as_the_venue_expects_and_streams_quotes(venues, ws_case, kind):
    case = ws_case(kind)
    venue = await venues(case)
    (pair, bid, ask), subscriptions = WS_EXPECTED[kind]
    async with Feed(settings_for(case, venue.url)) as feed:
        q = await feed.next_quote()
        await until(lambda: len(feed.quotes) >= 5)
    assert (q.pair, q.bid, q.ask) == (pair, bid, ask)
    assert [json.loads(m) for m in venue.received if m != "ping"] == subscriptions(case.pairs)
    if kind == "binance_perp":
        assert q.venue_ts == 1568014460.891  # the futures stream's transaction time `T`
        ((_, path, query),) = venue.seen
        assert (path, urllib.parse.unquote(query)) == ("/stream", "streams=bnbusdt@bookTicker")
    if kind == "binance":
        ((_, path, query),) = venue.seen
        assert (path, urllib.parse.unquote(query)) == (
            "/stream",
            "streams=nknusdt@bookTicker/lrcbtc@bookTicker/blzeth@bookTicker/runeeur@bookTicker",
        )


async def _fault_then_heal(venues, case, *, code: str, fault: str | None = None, mode: str | None = None):
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        assert feed.up() == 1
        assert feed.counted() == {}  # a healthy venue costs no errors
        venue.fault, venue.mode = fault, mode
        await until(lambda: feed.errors(code) >= 1)
        venue.heal()
        quote = await feed.next_quote(case.pairs[0])
        assert quote.source == case.name
        await until(lambda: feed.up() == 1)
    assert feed.up() == 0  # a stopped source is down
    return venue, feed


@pytest.mark.parametrize("kind", REST_KINDS)
@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("timeout", "timeout"),
        ("500", "http_5xx"),
        ("503", "http_5xx"),
        ("malformed", "decode"),
        ("404", "http_4xx"),
    ],
)
async def test_rest_venue_failure_is_counted_and_survived(venues, rest_case, kind, fault, code):
    await _fault_then_heal(venues, rest_case(kind), code=code, fault=fault)


@pytest.mark.parametrize("kind", REST_KINDS)
async def test_rate_limit_waits_at_least_retry_after(venues, rest_case, kind):
    _, feed = await _fault_then_heal(venues, rest_case(kind), code="rate_limited", fault="429")
    # The fake's Retry-After is 1 s; the backoff alone never exceeds 0.1 s in these tests.
    assert any(s >= 1.0 for s in feed.clock.sleeps)


@pytest.mark.parametrize("kind", REST_KINDS)
async def test_schema_change_is_a_schema_error(venues, rest_case, kind):
    await _fault_then_heal(venues, rest_case(kind), code="schema", mode="schema")


@pytest.mark.parametrize("kind", REST_KINDS)
async def test_nan_zero_and_negative_prices_are_bad_price(venues, rest_case, kind):
    case = rest_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        good = await feed.next_quote(case.pairs[0])
        for n, value in enumerate(case.bad_values, start=1):
            venue.mode = value
            await until(lambda n=n: feed.errors("bad_price") >= n)
            before = len(feed.quotes)
            await until(lambda n=n: feed.errors("bad_price") >= n + 1)  # a later poll
            assert all(q.price > 0 for q in feed.quotes[before:])
            assert not any(q.pair == case.pairs[0] for q in feed.quotes[before:])
        venue.heal()
        assert (await feed.next_quote(case.pairs[0])).price == good.price


@pytest.mark.parametrize("kind", BOOK_KINDS)
async def test_crossed_book_is_bad_price_not_a_quote(venues, rest_case, kind):
    case = rest_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        venue.mode = "crossed"
        await until(lambda: feed.errors("bad_price") >= 1)
        before = len(feed.quotes)
        await until(lambda: feed.errors("bad_price") >= 2)
        assert not any(q.bid is not None and q.ask is not None and q.bid > q.ask for q in feed.quotes[before:])
        venue.heal()
        await feed.next_quote(case.pairs[0])


async def test_one_bad_pair_does_not_fail_the_others_in_a_frame(venues, rest_case):
    case = rest_case("binance")  # one batched answer for LTC-BTC and ETH-BTC; LTC-BTC is mutated
    venue = await venues(case)
    venue.mode = "0"
    async with Feed(settings_for(case, venue.url)) as feed:
        quote = await feed.next_quote("ETH-BTC")
        assert (quote.bid, quote.ask) == (0.079467, 100000.0)
        assert feed.errors("bad_price") >= 1
        assert not any(q.pair == "LTC-BTC" for q in feed.quotes)


@pytest.mark.parametrize("kind", REST_KINDS + [f"ws:{k}" for k in WS_KINDS])
async def test_connection_refused_then_venue_comes_up(venues, rest_case, ws_case, kind):
    case = ws_case(kind[3:]) if kind.startswith("ws:") else rest_case(kind)
    port = free_port()
    url = f"{'ws' if case.transport == 'ws' else 'http'}://127.0.0.1:{port}"
    async with Feed(settings_for(case, url + (case.path if kind == "http_json" else ""))) as feed:
        await until(lambda: feed.errors("connect") >= 2)
        assert feed.up() == 0 and feed.quotes == []
        await venues(case, port)
        await feed.next_quote()
        await until(lambda: feed.up() == 1)


@pytest.mark.parametrize("kind", WS_KINDS)
async def test_websocket_closed_mid_stream_reconnects_and_resubscribes(venues, ws_case, kind):
    case = ws_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        first_connections, first_subscriptions = venue.connections, _subscriptions(venue)
        venue.fault = "close"
        await until(lambda: feed.errors("connect") >= 1)
        venue.heal()
        await until(lambda: venue.connections > first_connections)
        await feed.next_quote(case.pairs[0])
        by_url = kind.startswith("binance")  # Binance subscribes in the URL: no message to resend
        assert _subscriptions(venue) > first_subscriptions or by_url
        assert all(path == "/stream" for _, path, _ in venue.seen) or not by_url


def _subscriptions(venue) -> int:
    return sum(1 for text in venue.received if "subscribe" in text)


@pytest.mark.parametrize("kind", WS_KINDS)
@pytest.mark.parametrize(("fault", "code"), [("503", "http_5xx"), ("429", "rate_limited")])
async def test_websocket_handshake_refused_then_accepted(venues, ws_case, kind, fault, code):
    case = ws_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        venue.fault = "close"  # drop the live connection so the next handshake meets the refusal
        await until(lambda: feed.errors("connect") >= 1)
        venue.fault = fault
        await until(lambda: feed.errors(code) >= 1)
        venue.heal()
        await feed.next_quote(case.pairs[0])
    assert fault != "429" or any(s >= 1.0 for s in feed.clock.sleeps)


@pytest.mark.parametrize("kind", WS_KINDS)
async def test_garbage_websocket_frame_is_a_decode_error_and_the_stream_goes_on(venues, ws_case, kind):
    case = ws_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        venue.fault = "garbage"
        await until(lambda: feed.errors("decode") >= 2)
        connections = venue.connections
        await feed.next_quote()  # between the garbage, on the same connection
        assert venue.connections == connections


@pytest.mark.parametrize("kind", WS_KINDS)
async def test_silent_websocket_trips_the_watchdog_and_reconnects(venues, ws_case, kind):
    case = ws_case(kind)
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        venue.fault = "silent"
        await until(lambda: feed.errors("timeout") >= 1)
        assert feed.up() == 0
        venue.heal()
        await feed.next_quote()
        assert venue.connections >= 2


@pytest.mark.parametrize("kind", WS_KINDS)
@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("schema", "schema"),
        ("crossed", "bad_price"),
        ("NaN", "bad_price"),
        ("0", "bad_price"),
        ("-1", "bad_price"),
    ],
)
async def test_bad_websocket_messages_are_counted_per_pair(venues, ws_case, kind, mode, code):
    await _fault_then_heal(venues, ws_case(kind), code=code, mode=mode)


async def test_okx_keepalive_ping_is_sent_and_its_pong_ignored(venues, ws_case):
    case = ws_case("okx")
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await until(lambda: "ping" in venue.received)
        await feed.next_quote()
        assert feed.errors("decode") == 0  # the "pong" answers are not JSON, and not errors


async def test_rest_silence_is_a_timeout_within_timeout_ms(venues, rest_case):
    case = rest_case("coinbase")
    venue = await venues(case)
    async with Feed(settings_for(case, venue.url)) as feed:
        await feed.next_quote()
        venue.fault = "timeout"
        await until(lambda: feed.errors("timeout") >= 1, timeout=2)
        assert feed.up() == 0
        venue.heal()
        await feed.next_quote()
