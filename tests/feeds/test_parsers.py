"""Every adapter parses every real payload that applies to it, to the exact values in the file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from feeds.adapter import Adapter, ParseResult, decode, integer, iso_seconds, number, scaled
from feeds.chainlink import decode_round, encode_round
from feeds.errors import BadPrice, DecodeError, SchemaError
from feeds.kraken import Kraken
from feeds.registry import ADAPTERS, adapter_class
from oracle.models import Quote
from oracle.settings import SourceRef
from tests.feeds.fakes import BTC_FEED, ETH_FEED, ETH_USD_PROXY, load


def adapter(
    kind: str, *pairs: str | dict[str, Any], transport: str = "rest", base_url: str | None = None, product: str = "spot"
) -> Adapter:
    refs = [SourceRef(source=kind, **(p if isinstance(p, dict) else {"pair": p})) for p in pairs]
    return adapter_class(kind)(kind, refs, base_url, transport, product)  # type: ignore[arg-type]


def parse(a: Adapter, doc: Any, ts: float = 1.0, pairs: tuple[str, ...] | None = None) -> ParseResult:
    body = doc if isinstance(doc, str) else json.dumps(doc)
    if pairs is None:  # a REST answer comes with the request's pairs; a stream names its own
        pairs = tuple(a.refs) if a.transport == "rest" else ()
    return a.parse(body, ts, pairs)


def only(result: ParseResult) -> Quote:
    assert result.errors == ()
    (quote,) = result.quotes
    return quote


def test_registry_maps_every_configurable_kind():
    from oracle.settings import SourceKind

    assert set(ADAPTERS) == set(SourceKind.__args__)
    assert all(cls.kind == kind for kind, cls in ADAPTERS.items())


# --- REST ---


def test_binance_book_ticker_single_and_batched(shared_dir: Path):
    doc = load(shared_dir, "binance_api_v3_ticker_bookTicker.json")
    a = adapter("binance", "LTC-BTC", "ETH-BTC")
    ltc = only(parse(a, doc["single_symbol"], pairs=("LTC-BTC",)))
    assert (ltc.pair, ltc.bid, ltc.ask, ltc.venue_ts) == ("LTC-BTC", 4.0, 4.000002, None)
    assert ltc.price == (4.0 + 4.000002) / 2
    both = parse(a, doc["multi_symbol"])
    assert both.errors == ()
    assert [(q.pair, q.bid, q.ask) for q in both.quotes] == [
        ("LTC-BTC", 4.0, 4.000002),
        ("ETH-BTC", 0.079467, 100000.0),
    ]


def test_binance_price_ticker_gives_last_price(shared_dir: Path):
    doc = load(shared_dir, "binance_api_v3_ticker_price.json")
    result = parse(adapter("binance", "LTC-BTC", "ETH-BTC"), doc["multi_symbol"])
    assert [(q.pair, q.price, q.bid) for q in result.quotes] == [
        ("LTC-BTC", 4.000002, None),
        ("ETH-BTC", 0.079466, None),
    ]


def test_binance_requests_every_pair_in_one_batched_call():
    (req,) = adapter("binance", "BTC-USDT", "ETH-USDT").requests()
    assert req.url == "https://api.binance.com/api/v3/ticker/bookTicker"
    assert list(req.params) == [("symbols", '["BTCUSDT","ETHUSDT"]')]


def test_coinbase_product_ticker(shared_dir: Path):
    doc = load(shared_dir, "coinbase_exchange_products_ticker.json")
    q = only(parse(adapter("coinbase", "BTC-USD"), doc, ts=5.0))
    assert (q.source, q.pair, q.bid, q.ask, q.received_ts) == ("coinbase", "BTC-USD", 6265.15, 6267.71, 5.0)
    assert q.price == (6265.15 + 6267.71) / 2
    assert q.venue_ts == 1584663777.833  # 2020-03-20T00:22:57.833Z


def test_kraken_ticker_answers_with_legacy_keys(shared_dir: Path):
    doc = load(shared_dir, "kraken_0_public_Ticker_XBTUSD.json")
    a = adapter("kraken", "BTC-USD")
    (req,) = a.requests()
    assert (req.url, list(req.params)) == ("https://api.kraken.com/0/public/Ticker", [("pair", "XBTUSD")])
    q = only(parse(a, doc))
    assert (q.pair, q.bid, q.ask, q.venue_ts) == ("BTC-USD", 30300.0, 30300.1, None)
    assert q.price == (30300.0 + 30300.1) / 2


def test_kraken_symbol_map_is_two_way():
    a = adapter("kraken", "BTC-USD", "ETH-USD", "USDT-USD", "DOGE-USD")
    assert [a.symbols.venue(p) for p in a.refs] == ["XBTUSD", "ETHUSD", "USDTUSD", "XDGUSD"]
    for symbol, pair in [("XXBTZUSD", "BTC-USD"), ("XBT/USD", "BTC-USD"), ("XETHZUSD", "ETH-USD")]:
        assert a.symbols.pair(symbol) == pair
    assert a.symbols.pair("USDTZUSD") == "USDT-USD"


def test_kraken_unknown_pair_error_is_unknown_pair():
    result = parse(adapter("kraken", "FOO-USD"), {"error": ["EQuery:Unknown asset pair"]})
    assert [e.code for e in result.errors] == ["unknown_pair"]


def test_okx_ticker(shared_dir: Path):
    doc = load(shared_dir, "okx_api_v5_market_ticker.json")
    a = adapter("okx", "ETH-BTC")
    assert list(a.requests()[0].params) == [("instId", "ETH-BTC")]
    q = only(parse(a, doc))
    assert (q.pair, q.bid, q.ask, q.venue_ts) == ("ETH-BTC", 0.0732, 0.07322, 1621440583.784)


def test_okx_refusal_is_counted_not_raised():
    result = parse(adapter("okx", "FOO-BAR"), {"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    assert [e.code for e in result.errors] == ["unknown_pair"]


def test_bybit_all_spot_tickers(shared_dir: Path):
    doc = load(shared_dir, "bybit_v5_market_tickers_spot.json")
    q = only(parse(adapter("bybit", "BTC-USDT"), doc))
    assert (q.pair, q.bid, q.ask, q.venue_ts) == ("BTC-USDT", 16250.32, 16273.11, 1672046714.063)


def test_bybit_pair_missing_from_the_answer_is_unknown_pair(shared_dir: Path):
    doc = load(shared_dir, "bybit_v5_market_tickers_spot.json")
    result = parse(adapter("bybit", "BTC-USDT", "ETH-USDT"), doc)
    assert [q.pair for q in result.quotes] == ["BTC-USDT"]
    assert [(e.pair, e.code) for e in result.errors] == [("ETH-USDT", "unknown_pair")]


@pytest.mark.parametrize(
    ("name", "pair", "bid", "ask", "ts"),
    [
        ("bitstamp_api_v2_ticker_btcusd.json", "BTC-USD", 26208.0, 26211.0, 1686068944.0),
        ("bitstamp_api_v2_ticker_usdcusd.json", "USDC-USD", 1.00005, 1.00031, 1673617671.0),
    ],
)
def test_bitstamp_ticker(shared_dir: Path, name, pair, bid, ask, ts):
    a = adapter("bitstamp", pair)
    assert a.requests()[0].url == f"https://www.bitstamp.net/api/v2/ticker/{pair.replace('-', '').lower()}/"
    q = only(parse(a, load(shared_dir, name)))
    assert (q.pair, q.bid, q.ask, q.venue_ts) == (pair, bid, ask, ts)


def test_pyth_hermes_v2_price_confidence_and_publish_time(shared_dir: Path):
    a = adapter("pyth", {"pair": "BTC-USD", "id": "0x" + BTC_FEED.upper()})
    (req,) = a.requests()
    assert req.url == "https://hermes.pyth.network/v2/updates/price/latest"
    assert list(req.params) == [("ids[]", BTC_FEED), ("parsed", "true")]
    q = only(parse(a, load(shared_dir, "pyth_hermes_v2_updates_price_latest.json")))
    assert q.price == 51900.75917635  # 5190075917635 × 10^-8
    assert q.confidence == 26.61582364  # 2661582364 × 10^-8
    assert (q.venue_ts, q.bid, q.ask) == (1708363256.0, None, None)


def test_pyth_legacy_latest_price_feeds(shared_dir: Path):
    doc = load(shared_dir, "pyth_hermes_legacy_api_latest_price_feeds.json")["response"]
    q = only(parse(adapter("pyth", {"pair": "ETH-USD", "id": ETH_FEED}), doc))
    assert (q.price, q.confidence, q.venue_ts) == (1841.36023127, 1.77166324, 1692110601.0)


def _chainlink(heartbeat_s: float = 3600) -> Adapter:
    ref = {"pair": "ETH-USD", "address": ETH_USD_PROXY, "decimals": 8, "heartbeat_s": heartbeat_s}
    return adapter("chainlink", ref, base_url="http://node.test/rpc")


def _round_answer(shared_dir: Path, **change: int) -> dict[str, Any]:
    r = {k: int(v) for k, v in load(shared_dir, "chainlink_latestRoundData_eth_usd.json")["latestRoundData"].items()}
    r.update(change)
    words = [r[k] for k in ("roundId", "answer", "startedAt", "updatedAt", "answeredInRound")]
    return {"jsonrpc": "2.0", "id": 0, "result": encode_round(*words)}


def test_chainlink_latest_round_data(shared_dir: Path):
    a = _chainlink()
    (req,) = a.requests()
    assert req.url == "http://node.test/rpc"
    assert req.json["method"] == "eth_call"
    assert req.json["params"] == [{"to": ETH_USD_PROXY, "data": "0xfeaf968c"}, "latest"]
    q = only(parse(a, _round_answer(shared_dir), ts=1700788631 + 60))
    assert (q.price, q.venue_ts) == (2075.87, 1700788631.0)


def test_chainlink_decodes_a_negative_int256_answer():
    assert decode_round(encode_round(7, -5, 1, 2, 7)) == (7, -5, 1, 2, 7)


@pytest.mark.parametrize(
    ("change", "ts", "code"),
    [
        ({"answer": 0}, 1700788700, "bad_price"),
        ({"answer": -207587000000}, 1700788700, "bad_price"),
        ({}, 1700788631 + 3601, "stale_venue_time"),  # older than heartbeat_s
        ({"answeredInRound": 1}, 1700788700, "stale_venue_time"),  # answered in an earlier round
    ],
)
def test_chainlink_rejects_bad_and_stale_rounds(shared_dir: Path, change, ts, code):
    result = parse(_chainlink(), _round_answer(shared_dir, **change), ts=ts)
    assert result.quotes == ()
    assert [(e.pair, e.code) for e in result.errors] == [("ETH-USD", code)]


def test_chainlink_rpc_error_and_short_result():
    a = _chainlink()
    assert parse(a, {"jsonrpc": "2.0", "id": 0, "error": {"code": -32000}}).errors[0].code == "http_4xx"
    assert parse(a, {"jsonrpc": "2.0", "id": 0, "result": "0x1234"}).errors[0].code == "schema"


def test_http_json_follows_a_dotted_path_with_list_indices(shared_dir: Path):
    doc = load(shared_dir, "okx_api_v5_market_ticker.json")
    a = adapter("http_json", {"pair": "ETH-BTC", "path": "data.0.last"}, base_url="http://x.test/t.json")
    assert a.requests()[0].url == "http://x.test/t.json"
    q = only(parse(a, doc))
    assert (q.price, q.bid, q.ask, q.venue_ts) == (0.07319, None, None, None)
    assert parse(a, {"data": []}).errors[0].code == "schema"


def test_http_json_needs_a_base_url():
    with pytest.raises(ValueError, match="base_url"):
        adapter("http_json", {"pair": "ETH-BTC", "path": "p"})


# --- WebSocket captures: every message, with its recorded receive time ---


def _captured(shared_dir: Path, name: str) -> list[tuple[float, Any]]:
    return [(m["recv_ts"], m["msg"]) for m in load(shared_dir, name)["messages"]]


def test_binance_combined_stream_every_message(shared_dir: Path):
    msgs = _captured(shared_dir, "binance_ws_bookTicker.json")
    a = adapter("binance", "NKN-USDT", "LRC-BTC", "BLZ-ETH", "RUNE-EUR", transport="ws")
    assert a.ws_endpoint() == (
        "wss://stream.binance.com:9443/stream?streams="
        "nknusdt@bookTicker/lrcbtc@bookTicker/blzeth@bookTicker/runeeur@bookTicker"
    )
    for recv_ts, msg in msgs:
        q = only(parse(a, msg, recv_ts))
        data = msg["data"]
        assert a.symbols.venue(q.pair) == data["s"]
        assert (q.bid, q.ask, q.received_ts, q.venue_ts) == (
            float(data["b"]),
            float(data["a"]),
            recv_ts,
            None,
        )
    first = only(parse(a, msgs[0][1]))
    assert (first.pair, first.bid, first.ask) == ("NKN-USDT", 0.3521, 0.3526)


def test_binance_documented_raw_stream_payload(shared_dir: Path):
    doc = load(shared_dir, "binance_ws_bookTicker_doc.json")["payload"]
    q = only(parse(adapter("binance", "BNB-USDT", transport="ws"), doc))
    assert (q.pair, q.bid, q.ask) == ("BNB-USDT", 25.3519, 25.3652)


def test_coinbase_ticker_channel_every_message(shared_dir: Path):
    msgs = _captured(shared_dir, "coinbase_exchange_ws_ticker.json")
    products = list(dict.fromkeys(m["product_id"] for _, m in msgs))
    a = adapter("coinbase", *products, transport="ws")
    assert json.loads(a.subscriptions()[0])["product_ids"] == products
    for recv_ts, msg in msgs:
        q = only(parse(a, msg, recv_ts))
        assert (q.pair, q.bid, q.ask) == (msg["product_id"], float(msg["best_bid"]), float(msg["best_ask"]))
        assert q.received_ts == recv_ts
    first = only(parse(a, msgs[0][1]))
    assert (first.pair, first.venue_ts) == ("BAND-GBP", 1618677810.244075)  # 2021-04-17T16:43:30.244075Z


def test_coinbase_non_ticker_messages_are_not_errors():
    a = adapter("coinbase", "BTC-USD", transport="ws")
    assert parse(a, {"type": "subscriptions", "channels": []}) == ParseResult()
    assert parse(a, {"type": "heartbeat", "product_id": "BTC-USD"}) == ParseResult()
    assert parse(a, {"type": "error", "message": "Failed to subscribe"}).errors[0].code == "http_4xx"


def test_kraken_ws_v1_ticker_every_message(shared_dir: Path):
    msgs = _captured(shared_dir, "kraken_ws_v1_ticker.json")
    wsnames = list(dict.fromkeys(m[3] for _, m in msgs))
    pairs = [name.replace("XBT", "BTC").replace("/", "-") for name in wsnames]
    a = adapter("kraken", *pairs, transport="ws")
    assert isinstance(a, Kraken)
    assert json.loads(a.subscriptions()[0])["pair"] == wsnames
    for recv_ts, msg in msgs:
        q = only(parse(a, msg, recv_ts))
        fields = msg[1]
        assert a.ws_symbol(q.pair) == msg[3]
        assert (q.bid, q.ask, q.venue_ts) == (float(fields["b"][0]), float(fields["a"][0]), None)
    xmr = only(parse(a, msgs[1][1]))
    assert (xmr.pair, xmr.bid, xmr.ask) == ("XMR-USD", 354.32, 355.24)


def test_kraken_ws_events_are_quiet_and_a_refused_pair_is_unknown():
    a = adapter("kraken", "BTC-USD", transport="ws")
    assert parse(a, {"event": "heartbeat"}) == ParseResult()
    refused = {"event": "subscriptionStatus", "status": "error", "pair": "XBT/USD", "errorMessage": "no"}
    assert [(e.pair, e.code) for e in parse(a, refused).errors] == [("BTC-USD", "unknown_pair")]


def test_okx_tickers_channel_every_message(shared_dir: Path):
    msgs = _captured(shared_dir, "okx_ws_tickers.json")
    a = adapter("okx", "BTC-USDT", transport="ws")
    spot = 0
    for recv_ts, msg in msgs:
        result = parse(a, msg, recv_ts, pairs=())
        data = msg["data"][0]
        if data["instId"] != "BTC-USDT":  # futures and swaps have no canonical BASE-QUOTE name
            assert [e.code for e in result.errors] == ["unknown_pair"]
            continue
        q = only(result)
        spot += 1
        assert (q.bid, q.ask, q.venue_ts) == (
            float(data["bidPx"]),
            float(data["askPx"]),
            int(data["ts"]) / 1000,
        )
    assert spot == 25
    assert json.loads(a.subscriptions()[0]) == {
        "op": "subscribe",
        "args": [{"channel": "tickers", "instId": "BTC-USDT"}],
    }


# --- the shared rules ---


def test_extra_fields_are_ignored(shared_dir: Path):
    doc = load(shared_dir, "coinbase_exchange_products_ticker.json") | {
        "best_bid_size": "1",
        "new": {"x": [1]},
    }
    assert only(parse(adapter("coinbase", "BTC-USD"), doc)).bid == 6265.15


@pytest.mark.parametrize(
    ("bid", "ask", "code"), [("2", "1", "bad_price"), ("NaN", "1", "bad_price"), ("x", "1", "schema")]
)
def test_book_checks(bid, ask, code):
    doc = {"bid": bid, "ask": ask, "last": "1", "timestamp": "1"}
    assert [e.code for e in parse(adapter("bitstamp", "BTC-USD"), doc).errors] == [code]


def test_one_sided_book_falls_back_to_last_price():
    doc = {"bid": "", "ask": "5", "last": "4", "timestamp": "1"}
    q = only(parse(adapter("bitstamp", "BTC-USD"), doc))
    assert (q.price, q.bid, q.ask) == (4.0, None, None)


def test_locked_book_is_a_quote():
    doc = {"bid": "5", "ask": "5", "last": "4", "timestamp": "1"}
    assert only(parse(adapter("bitstamp", "BTC-USD"), doc)).price == 5.0


def test_not_json_is_a_frame_level_decode_error():
    result = parse(adapter("binance", "BTC-USDT"), "<html>502</html>")
    assert [(e.pair, e.code) for e in result.errors] == [(None, "decode")]


# --- the parse helpers' documented promises ---


def test_iso_seconds_cuts_nanoseconds_to_microseconds_and_needs_a_time_zone():
    assert iso_seconds("2021-04-17T16:43:30.244075123Z") == iso_seconds("2021-04-17T16:43:30.244075Z")
    assert iso_seconds("2021-04-17T16:43:30.244075999+00:00") == 1618677810.244075  # cut, not rounded
    assert iso_seconds("2021-04-17T16:43:30.5+01:00") == 1618674210.5
    with pytest.raises(SchemaError, match="no time zone"):
        iso_seconds("2021-04-17T16:43:30.244075")


def test_scaled_is_correctly_rounded_within_its_exponent_range():
    assert scaled(4683427276078, -8) == 46834.27276078  # 4683427276078 * 1e-8 is 46834.272760780004
    assert (scaled(1, -64), scaled(3, 64)) == (1e-64, 3e64)
    with pytest.raises(SchemaError, match="out of range"):
        scaled(1, 65)
    with pytest.raises(BadPrice, match="overflows"):
        scaled(10**300, 64)


@pytest.mark.parametrize("value", [True, None, [1], "1e", "nan-ish"])
def test_number_refuses_what_is_not_a_number(value):
    with pytest.raises(SchemaError):
        number(value)


def test_integer_refuses_floats_and_digits_past_the_int_limit():
    assert integer("-42") == -42
    for value in (1.5, True, "9" * 5000):
        with pytest.raises(SchemaError):
            integer(value)


def test_the_fast_decoder_reads_every_fixture_exactly_as_the_standard_library(shared_dir: Path):
    bodies = [p.read_bytes() for p in sorted((shared_dir / "fixtures" / "payloads").rglob("*.json"))]
    assert len(bodies) > 10
    for body in bodies:
        assert decode(body) == json.loads(body)


def test_what_the_fast_decoder_refuses_or_rounds_decodes_as_json_does():
    # A NaN literal (refused later as a bad price, not as undecodable), an integer past 64 bits (a
    # Chainlink uint256: orjson would round it to a float), a lone surrogate.
    assert math.isnan(decode(b'{"p": NaN}')["p"])
    assert decode(b'{"answer": 123456789012345678901234567890}')["answer"] == 123456789012345678901234567890
    assert decode('"\\ud800"') == "\ud800"
    with pytest.raises(DecodeError):
        decode(b"{not json")


def test_http_json_takes_a_shared_parent_once_and_answers_exactly_as_pair_by_pair():
    doc = {
        "px": {"A-USD": 1.5, "B-USD": "2.25", "C-USD": 3, "D-USD": -1.0, "E-USD": None, "F-USD": True},
        "nested": {"rows": [{"last": 7.5}, {"last": "x"}]},
        "G-USD": 0.0,
    }
    paths = {f"{c}-USD": f"px.{c}-USD" for c in "ABCDEF"} | {"G-USD": "G-USD", "H-USD": "px.H-USD"}
    paths |= {"I-USD": "nested.rows.0.last", "J-USD": "nested.rows.1.last", "K-USD": "missing.K-USD"}
    a = adapter("http_json", *({"pair": p, "path": path} for p, path in paths.items()), base_url="http://x.test/d")
    fast = a.parse_doc(doc, 1.0, tuple(paths))
    one_by_one = a.resolve(a.refs, lambda pair: a._quote(pair, doc))  # type: ignore[attr-defined]
    assert fast == one_by_one  # the same rows and the same errors, in the same order
    assert [r[0] for r in fast.rows] == ["A-USD", "B-USD", "C-USD", "I-USD"]
    assert {e.pair: e.code for e in fast.errors} == {
        "D-USD": "bad_price", "E-USD": "schema", "F-USD": "schema", "G-USD": "bad_price",
        "H-USD": "schema", "J-USD": "schema", "K-USD": "schema",
    }  # fmt: skip


def test_one_abi_encoder_round_trips_signed_words_for_the_adapter_and_the_simulated_node() -> None:
    from feeds.chainlink import abi_words
    from oracle.sim.venues import chainlink as sim_chainlink

    assert sim_chainlink.abi_words is abi_words  # the simulated node encodes with the adapter's encoder
    assert abi_words(1, -1) == "0x" + "0" * 63 + "1" + "f" * 64
    assert decode_round(abi_words(3, -(2**255), 0, 2**256 - 1, 3)) == (3, -(2**255), 0, 2**256 - 1, 3)


# --- perpetuals (product = "perp"), on the payloads of tests/feeds/perp_payloads.py ---


def test_perp_products_default_to_the_venues_perpetual_endpoints():
    binance = adapter("binance", "BTC-USDT", "ETH-USDT", product="perp")
    assert [(r.url, list(r.params)) for r in binance.requests()] == [
        ("https://fapi.binance.com/fapi/v1/ticker/bookTicker", [("symbol", "BTCUSDT")]),
        ("https://fapi.binance.com/fapi/v1/ticker/bookTicker", [("symbol", "ETHUSDT")]),
    ]
    assert adapter("binance", "BTC-USDT", transport="ws", product="perp").ws_endpoint() == (
        "wss://fstream.binance.com/stream?streams=btcusdt@bookTicker"
    )
    (okx,) = adapter("okx", "BTC-USDT", product="perp").requests()
    assert (okx.url, list(okx.params)) == ("https://www.okx.com/api/v5/market/ticker", [("instId", "BTC-USDT-SWAP")])
    okx_ws = adapter("okx", "BTC-USDT", transport="ws", product="perp")
    assert json.loads(okx_ws.subscriptions()[0])["args"] == [{"channel": "tickers", "instId": "BTC-USDT-SWAP"}]
    (bybit,) = adapter("bybit", "BTC-USDT", product="perp").requests()
    assert (bybit.url, list(bybit.params)) == ("https://api.bybit.com/v5/market/tickers", [("category", "linear")])


def test_perp_quotes_keep_the_book_and_the_last_trade():
    from tests.feeds import perp_payloads as perp

    q = only(parse(adapter("okx", "BTC-USDT", transport="ws", product="perp"), perp.OKX_WS_TICKERS_SWAP))
    assert (q.pair, q.bid, q.ask, q.last, q.venue_ts) == ("BTC-USDT", 103699.9, 103700.0, 103700.0, 1747141319.306)
    q = only(parse(adapter("bybit", "BTC-USD", product="perp"), perp.BYBIT_TICKERS_LINEAR_INVERSE))
    assert (q.bid, q.ask, q.last, q.venue_ts) == (16596.0, 16597.5, 16597.0, 1672376496.682)
    q = only(parse(adapter("binance", "BTC-USDT", product="perp"), perp.BINANCE_FAPI_BOOK_TICKER))
    assert (q.bid, q.ask, q.last, q.venue_ts) == (4.0, 4.000002, None, 1589437530.011)


def test_a_spot_source_never_takes_a_swap_row_for_its_pair():
    from tests.feeds import perp_payloads as perp

    result = parse(adapter("okx", "BTC-USDT", transport="ws"), perp.OKX_WS_TICKERS_SWAP)
    assert result.quotes == () and [e.code for e in result.errors] == ["unknown_pair"]


@pytest.mark.parametrize("kind", ["coinbase", "kraken", "bitstamp", "pyth", "chainlink", "http_json"])
def test_a_kind_without_perpetuals_refuses_product_perp(kind: str):
    with pytest.raises(ValueError, match="no perpetuals"):
        adapter(kind, "BTC-USD", product="perp")
    from oracle.settings import ConfigError, parse_settings

    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "sources": {"x": {"kind": kind, "product": "perp"}},
                "markets": {"BTC-USD": {"sources": [{"source": "x", "pair": "BTC-USD"}], "min_sources": 1}},
            }
        )
    want = f'sources.x.product: {kind} has no perpetuals (product = "perp" is for binance, okx, bybit)'
    assert want in exc.value.problems  # (pyth and chainlink add their missing ref keys)
