"""The simulated perpetual venues serve the real perp paths in the real payloads' shapes, which the
`product = "perp"` adapters read, a few bps above the same venue's spot."""

from __future__ import annotations

import aiohttp
import pytest

from feeds.registry import adapter_class
from oracle.settings import SourceRef
from oracle.sim.venues import SimVenues
from tests.feeds import perp_payloads as real
from tests.sim.test_venues import shape


async def _get(http: aiohttp.ClientSession, url: str) -> object:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def _perp_quote(kind: str, doc: object, pair: str = "BTC-USDT", transport: str = "rest") -> tuple[float, float]:
    import json

    a = adapter_class(kind)(f"{kind}_perp", [SourceRef(source=kind, pair=pair)], "http://sim", transport, "perp")  # type: ignore[arg-type]
    result = a.parse(json.dumps(doc), 1.0, (pair,) if transport == "rest" else ())
    assert result.errors == ()
    (q,) = result.quotes
    assert q.bid is not None and q.ask is not None
    return q.bid, q.ask


async def test_binance_perp_rest_and_stream(sim: SimVenues, http: aiohttp.ClientSession) -> None:
    rest = sim.urls["binance_perp"]["rest"]
    doc = await _get(http, rest + "/fapi/v1/ticker/bookTicker?symbol=BTCUSDT")
    assert shape(doc) == shape(real.BINANCE_FAPI_BOOK_TICKER)
    bid, ask = _perp_quote("binance", doc)
    assert 25_000 < bid <= ask < 35_000
    async with http.get(rest + '/fapi/v1/ticker/bookTicker?symbols=["BTCUSDT"]') as resp:
        assert resp.status == 400  # no batched form on futures
    async with http.ws_connect(sim.urls["binance_perp"]["ws"] + "/stream?streams=btcusdt@bookTicker") as ws:
        frame = await ws.receive_json()
    assert shape(frame) == shape(real.BINANCE_FSTREAM_BOOK_TICKER)
    _perp_quote("binance", frame, transport="ws")


async def test_okx_swap_rest_and_channel(sim: SimVenues, http: aiohttp.ClientSession) -> None:
    rest = sim.urls["okx_perp"]["rest"]
    doc = await _get(http, rest + "/api/v5/market/ticker?instId=BTC-USDT-SWAP")
    assert shape(doc) == shape(real.OKX_REST_TICKER_SWAP)
    assert doc["data"][0]["instType"] == "SWAP"  # type: ignore[index]
    _perp_quote("okx", doc)
    spot_id = await _get(http, rest + "/api/v5/market/ticker?instId=BTC-USDT")
    assert spot_id["code"] == "51001"  # type: ignore[index]
    async with http.ws_connect(sim.urls["okx_perp"]["ws"]) as ws:
        await ws.send_json({"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT-SWAP"}]})
        ack, push = await ws.receive_json(), await ws.receive_json()
    assert ack["event"] == "subscribe"
    assert shape(push) == shape(real.OKX_WS_TICKERS_SWAP)
    _perp_quote("okx", push, transport="ws")


async def test_bybit_linear_tickers(sim: SimVenues, http: aiohttp.ClientSession) -> None:
    rest = sim.urls["bybit_perp"]["rest"]
    doc = await _get(http, rest + "/v5/market/tickers?category=linear")
    assert doc["result"]["category"] == "linear"  # type: ignore[index]
    _perp_quote("bybit", doc)
    spot = await _get(http, rest + "/v5/market/tickers?category=spot")
    assert spot["retCode"] == 10001  # type: ignore[index]


async def test_perps_trade_at_a_premium_to_spot(http: aiohttp.ClientSession) -> None:
    """Same market, same venue, no noise: the perp's mid sits its spec's bias above the spot mid."""
    from oracle.clock import VirtualClock
    from oracle.sim.market import SimMarket, VenueSpec
    from oracle.sim.venues import DEFAULT_MARKETS

    market = SimMarket(DEFAULT_MARKETS, clock=VirtualClock(1_700_000_000.0), seed=3)
    quiet = {"binance": VenueSpec(noise_bps=0.0), "binance_perp": VenueSpec(bias_bps=10.0, noise_bps=0.0)}
    async with SimVenues(market, venues=["binance", "binance_perp"], specs=quiet) as sim:
        spot = await _get(http, sim.urls["binance"]["rest"] + "/api/v3/ticker/bookTicker?symbol=BTCUSDT")
        perp = await _get(http, sim.urls["binance_perp"]["rest"] + "/fapi/v1/ticker/bookTicker?symbol=BTCUSDT")
    mid = [(float(d["bidPrice"]) + float(d["askPrice"])) / 2 for d in (spot, perp)]  # type: ignore[index]
    assert mid[1] / mid[0] - 1 == pytest.approx(10e-4, abs=0.5e-4)


async def test_the_own_book_serves_every_perp_as_the_demo_config_reads_it(
    sim: SimVenues, http: aiohttp.ClientSession
) -> None:
    """The perp venue's own matching engine: one document, read through the demo's http_json book refs."""
    import json

    from feeds.http_json import HttpJson
    from oracle.settings import parse_settings
    from oracle.sim.demo import PERP_MARKETS, demo_config

    settings = parse_settings(demo_config(sim.urls, "redis://127.0.0.1:1/0", 0))
    refs = [p.book for m in PERP_MARKETS if (p := settings.markets[m].perp)]
    source = settings.sources["own_book"]
    assert source.base_url is not None
    doc = await _get(http, source.base_url)
    assert sorted(doc["markets"]) == ["BTC-PERP", "ETH-PERP"]  # type: ignore[index]
    adapter = HttpJson("own_book", refs, source.base_url, "rest")
    result = adapter.parse(json.dumps(doc), 1.0, tuple(r.pair for r in refs))
    assert result.errors == ()
    quotes = {q.pair: q for q in result.quotes}
    btc, eth = quotes["BTC-PERP"], quotes["ETH-PERP"]
    assert btc.bid is not None and btc.ask is not None and btc.last in (btc.bid, btc.ask)  # the last trade hit one side
    assert 25_000 < btc.bid < btc.ask < 35_000 and 1_500 < eth.price < 2_500


async def test_the_own_book_quotes_at_its_premium_to_spot(http: aiohttp.ClientSession) -> None:
    from oracle.clock import VirtualClock
    from oracle.sim.market import SimMarket, VenueSpec
    from oracle.sim.venues import DEFAULT_MARKETS

    market = SimMarket(DEFAULT_MARKETS, clock=VirtualClock(1_700_000_000.0), seed=3)
    quiet = {"coinbase": VenueSpec(noise_bps=0.0), "own_book": VenueSpec(bias_bps=10.0, noise_bps=0.0)}
    async with SimVenues(market, venues=["coinbase", "own_book"], specs=quiet) as sim:
        spot = await _get(http, sim.urls["coinbase"]["rest"] + "/products/BTC-USD/ticker")
        book = await _get(http, sim.urls["own_book"]["rest"] + "/book")
    perp = book["markets"]["BTC-PERP"]  # type: ignore[index]
    mids = [(float(d["bid"]) + float(d["ask"])) / 2 for d in (spot, perp)]  # type: ignore[index]
    assert mids[1] / mids[0] - 1 == pytest.approx(10e-4, abs=0.5e-4)
