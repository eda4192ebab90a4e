"""Each simulated venue serves its real paths with the real payloads' field names and value types."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from oracle.clock import VirtualClock, WallClock
from oracle.sim.market import SimMarket, VenueSpec
from oracle.sim.venues import DEFAULT_MARKETS, SimVenues
from oracle.sim.venues.chainlink import FEEDS, LATEST_ROUND_DATA, WATCH_S
from oracle.sim.venues.kraken import result_key
from oracle.sim.venues.pyth import FEED_IDS

Payload = Callable[[str], Any]


def shape(value: Any) -> Any:
    """Key sets and value types, recursively; lists positionally (Kraken's arrays mix types)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def _messages(payload: Payload, name: str, keep: Callable[[Any], bool] = lambda m: True) -> list[Any]:
    return [m["msg"] for m in payload(name)["messages"] if keep(m["msg"])]


# --- REST ---------------------------------------------------------------------------------------


async def test_binance_book_ticker_rest(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = payload("binance_api_v3_ticker_bookTicker.json")
    root = sim.urls["binance"]["rest"] + "/api/v3/ticker/bookTicker"
    one = await _get(http, root + "?symbol=BTCUSDT")
    many = await _get(http, root + '?symbols=["BTCUSDT","ETHUSDT"]')
    assert shape(one) == shape(real["single_symbol"])
    assert [shape(x) for x in many] == [shape(real["multi_symbol"][0])] * 2
    assert [x["symbol"] for x in many] == ["BTCUSDT", "ETHUSDT"]


async def test_binance_price_ticker_rest(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = payload("binance_api_v3_ticker_price.json")
    one = await _get(http, sim.urls["binance"]["rest"] + "/api/v3/ticker/price?symbol=SOLUSDT")
    assert shape(one) == shape(real["single_symbol"])


@pytest.mark.parametrize(
    ("query", "code"),
    [("symbol=BTCUSD", -1121), ('symbols=["BTCUSDT", "ETHUSDT"]', -1100), ("symbols=BTCUSDT", -1100)],
)
async def test_binance_rejects_what_binance_rejects(
    sim: SimVenues, http: aiohttp.ClientSession, query: str, code: int
) -> None:
    async with http.get(sim.urls["binance"]["rest"] + "/api/v3/ticker/bookTicker?" + query) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == code


async def test_coinbase_product_ticker_rest(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    got = await _get(http, sim.urls["coinbase"]["rest"] + "/products/BTC-USD/ticker")
    assert shape(got) == shape(payload("coinbase_exchange_products_ticker.json"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", got["time"])
    async with http.get(sim.urls["coinbase"]["rest"] + "/products/BTC-USDT/ticker") as resp:
        assert resp.status == 404
    anonymous = {"User-Agent": ""}
    async with http.get(sim.urls["coinbase"]["rest"] + "/products/BTC-USD/ticker", headers=anonymous) as resp:
        assert resp.status == 400  # Coinbase requires a User-Agent


async def test_kraken_ticker_rest_uses_krakens_result_keys(
    sim: SimVenues, http: aiohttp.ClientSession, payload: Payload
) -> None:
    real = payload("kraken_0_public_Ticker_XBTUSD.json")
    got = await _get(http, sim.urls["kraken"]["rest"] + "/0/public/Ticker?pair=XBTUSD,ETHUSD,SOLUSD,USDTUSD,USDCUSD")
    assert got["error"] == []
    assert sorted(got["result"]) == ["SOLUSD", "USDCUSD", "USDTZUSD", "XETHZUSD", "XXBTZUSD"]
    for ticker in got["result"].values():
        assert shape(ticker) == shape(real["result"]["XXBTZUSD"])
    unknown = await _get(http, sim.urls["kraken"]["rest"] + "/0/public/Ticker?pair=XBTFOO")
    assert unknown == {"error": ["EQuery:Unknown asset pair"]}


def test_kraken_result_keys_are_krakens() -> None:
    assert [result_key(p) for p in ("BTC-USD", "ETH-USD", "SOL-USD", "USDT-USD", "USDC-USD", "BTC-EUR")] == [
        "XXBTZUSD", "XETHZUSD", "SOLUSD", "USDTZUSD", "USDCUSD", "XXBTZEUR",
    ]  # fmt: skip


async def test_okx_ticker_rest(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    got = await _get(http, sim.urls["okx"]["rest"] + "/api/v5/market/ticker?instId=BTC-USDT")
    assert shape(got) == shape(payload("okx_api_v5_market_ticker.json"))
    assert got["data"][0]["instId"] == "BTC-USDT"
    missing = await _get(http, sim.urls["okx"]["rest"] + "/api/v5/market/ticker?instId=BTC-XXX")
    assert missing["code"] == "51001"
    assert missing["data"] == []


async def test_bybit_tickers_rest_one_and_all(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = payload("bybit_v5_market_tickers_spot.json")
    root = sim.urls["bybit"]["rest"] + "/v5/market/tickers?category=spot"
    one = await _get(http, root + "&symbol=BTCUSDT")
    every = await _get(http, root)
    assert shape(one) == shape(real)
    assert [t["symbol"] for t in every["result"]["list"]] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT"]
    assert (await _get(http, root + "&symbol=FOOUSDT"))["retCode"] == 10001


@pytest.mark.parametrize(("path", "fixture"), [("btcusd", "btcusd"), ("usdcusd", "usdcusd")])
async def test_bitstamp_ticker_rest(
    sim: SimVenues, http: aiohttp.ClientSession, payload: Payload, path: str, fixture: str
) -> None:
    got = await _get(http, sim.urls["bitstamp"]["rest"] + f"/api/v2/ticker/{path}/")
    assert shape(got) == shape(payload(f"bitstamp_api_v2_ticker_{fixture}.json"))
    assert shape(await _get(http, sim.urls["bitstamp"]["rest"] + f"/api/v2/ticker/{path}")) == shape(got)


async def test_pyth_hermes_latest_price_updates(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = payload("pyth_hermes_v2_updates_price_latest.json")
    btc = real["parsed"][0]["id"]
    url = sim.urls["pyth"]["rest"] + f"/v2/updates/price/latest?ids[]=0x{btc}&ids[]={FEED_IDS['ETH-USD']}"
    got = await _get(http, url)
    assert shape(got["parsed"][0]) == shape(real["parsed"][0])
    assert shape(got["binary"]) == shape(real["binary"])
    assert [p["id"] for p in got["parsed"]] == [btc, FEED_IDS["ETH-USD"]]
    price = got["parsed"][0]["price"]
    assert int(price["price"]) * 10 ** price["expo"] == pytest.approx(30_000, rel=0.01)
    async with http.get(sim.urls["pyth"]["rest"] + "/v2/updates/price/latest?ids[]=00ff") as resp:
        assert resp.status == 404


async def test_all_venues_quote_one_market(sim: SimVenues, http: aiohttp.ClientSession) -> None:
    """Binance's BTC-USDT times USDT-USD agrees with Coinbase's BTC-USD to within the venues' noise."""
    usd = await _get(http, sim.urls["coinbase"]["rest"] + "/products/BTC-USD/ticker")
    usdt = await _get(http, sim.urls["binance"]["rest"] + "/api/v3/ticker/bookTicker?symbol=BTCUSDT")
    rate = await _get(http, sim.urls["kraken"]["rest"] + "/0/public/Ticker?pair=USDTUSD")
    mid = (float(usdt["bidPrice"]) + float(usdt["askPrice"])) / 2
    converted = mid * float(rate["result"]["USDTZUSD"]["c"][0])
    assert converted == pytest.approx(float(usd["price"]), rel=20e-4)


# --- WebSocket ----------------------------------------------------------------------------------


async def test_binance_combined_stream(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = _messages(payload, "binance_ws_bookTicker.json")[0]
    url = sim.urls["binance"]["ws"] + "/stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"
    async with http.ws_connect(url) as ws:
        frames = [await ws.receive_json() for _ in range(4)]
    assert all(shape(f) == shape(real) for f in frames)
    assert {f["stream"] for f in frames} == {"btcusdt@bookTicker", "ethusdt@bookTicker"}
    assert {f["data"]["s"] for f in frames} == {"BTCUSDT", "ETHUSDT"}


async def test_binance_raw_stream_and_subscribe_method(
    sim: SimVenues, http: aiohttp.ClientSession, payload: Payload
) -> None:
    raw = payload("binance_ws_bookTicker_doc.json")["payload"]
    async with http.ws_connect(sim.urls["binance"]["ws"] + "/ws/btcusdt@bookTicker") as ws:
        assert shape(await ws.receive_json()) == shape(raw)
    async with http.ws_connect(sim.urls["binance"]["ws"] + "/ws") as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["solusdt@bookTicker"], "id": 7})
        ack = await ws.receive_json()
        frame = await ws.receive_json()
    assert ack == {"result": None, "id": 7}
    assert shape(frame) == shape(raw)
    assert frame["s"] == "SOLUSDT"


async def test_coinbase_ticker_channel(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = _messages(payload, "coinbase_exchange_ws_ticker.json")[0]
    async with http.ws_connect(sim.urls["coinbase"]["ws"]) as ws:
        await ws.send_json({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["ticker"]})
        ack = await ws.receive_json()
        ticks = [await ws.receive_json() for _ in range(2)]
        await ws.send_json({"type": "subscribe", "product_ids": ["FOO-USD"], "channels": ["ticker"]})
        error = await _receive_until(ws, lambda m: m.get("type") == "error")
    assert ack == {
        "type": "subscriptions",
        "channels": [{"name": "ticker", "product_ids": ["BTC-USD", "ETH-USD"]}],
    }
    assert all(shape(t) == shape(real) for t in ticks)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ticks[0]["time"])
    assert "FOO-USD" in error["reason"]


async def test_kraken_v1_ticker_handshake_and_frames(
    sim: SimVenues, http: aiohttp.ClientSession, payload: Payload
) -> None:
    real = _messages(payload, "kraken_ws_v1_ticker.json")[0]
    async with http.ws_connect(sim.urls["kraken"]["ws"]) as ws:
        status = await ws.receive_json()
        heartbeat = await ws.receive_json()  # nothing subscribed yet
        await ws.send_json({"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "ticker"}, "reqid": 4})
        sub = await _receive_until(ws, lambda m: isinstance(m, dict) and m.get("event") == "subscriptionStatus")
        frame = await _receive_until(ws, lambda m: isinstance(m, list))
        await ws.send_json({"event": "ping", "reqid": 9})
        pong = await _receive_until(ws, lambda m: isinstance(m, dict) and m.get("event") == "pong")
    assert status["event"] == "systemStatus"
    assert status["status"] == "online"
    assert heartbeat == {"event": "heartbeat"}
    assert sub["status"] == "subscribed"
    assert sub["pair"] == "XBT/USD"
    assert sub["reqid"] == 4
    assert shape(frame) == shape(real)
    assert frame[0] == sub["channelID"]
    assert frame[2:] == ["ticker", "XBT/USD"]
    assert pong == {"event": "pong", "reqid": 9}


async def test_okx_tickers_channel_and_ping(sim: SimVenues, http: aiohttp.ClientSession, payload: Payload) -> None:
    real = _messages(payload, "okx_ws_tickers.json", lambda m: m["arg"]["instId"] == "BTC-USDT")[0]
    arg = {"channel": "tickers", "instId": "BTC-USDT"}
    async with http.ws_connect(sim.urls["okx"]["ws"]) as ws:
        await ws.send_str("ping")
        pong = await ws.receive_str()
        await ws.send_json({"op": "subscribe", "args": [arg]})
        ack = await ws.receive_json()
        push = await ws.receive_json()
    assert sim.urls["okx"]["ws"].endswith("/ws/v5/public")
    assert pong == "pong"
    assert ack["event"] == "subscribe"
    assert ack["arg"] == arg
    assert shape(push) == shape(real)
    assert push["arg"] == arg


async def _receive_until(ws: aiohttp.ClientWebSocketResponse, want: Callable[[Any], bool]) -> Any:
    for _ in range(50):
        msg = await ws.receive_json()
        if want(msg):
            return msg
    raise AssertionError("no such message in 50 frames")


# --- outages ------------------------------------------------------------------------------------


async def test_outage_503_answers_503_and_drops_sockets_then_recovers(
    sim: SimVenues, http: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    url = sim.urls["okx"]["rest"] + "/api/v5/market/ticker?instId=BTC-USDT"
    async with http.ws_connect(sim.urls["okx"]["ws"]) as ws:
        await sim.set_outage("okx", "503", seconds=5)
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    async with http.get(url) as resp:
        assert resp.status == 503
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(sim.urls["okx"]["ws"])
    assert err.value.status == 503
    clock.advance(5)
    async with http.get(url) as resp:
        assert resp.status == 200


async def test_outage_refuse_refuses_and_drops_connections_then_recovers(
    sim: SimVenues, http: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    url = sim.urls["coinbase"]["rest"] + "/products/BTC-USD/ticker"
    async with http.ws_connect(sim.urls["coinbase"]["ws"]) as ws:
        await sim.set_outage("coinbase", "refuse", seconds=5)
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    with pytest.raises(aiohttp.ClientConnectorError):
        await http.get(url)
    clock.advance(5)
    assert await _eventually_ok(http, url)  # the venue's watcher reopens the same port


async def _eventually_ok(http: aiohttp.ClientSession, url: str) -> bool:
    for _ in range(100):
        try:
            async with http.get(url) as resp:
                return resp.status == 200
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.02)
    return False


async def test_outage_silent_answers_nothing_then_resumes(
    sim: SimVenues, http: aiohttp.ClientSession, clock: VirtualClock
) -> None:
    async with http.ws_connect(sim.urls["okx"]["ws"]) as ws:
        await ws.send_json({"op": "subscribe", "args": [{"channel": "tickers", "instId": "ETH-USDT"}]})
        await ws.receive_json()
        await sim.set_outage("okx", "silent", seconds=5)
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive_json(timeout=0.2)
        with pytest.raises(asyncio.TimeoutError):
            url = sim.urls["okx"]["rest"] + "/api/v5/market/ticker?instId=ETH-USDT"
            await http.get(url, timeout=aiohttp.ClientTimeout(total=0.2))
        clock.advance(5)
        assert (await ws.receive_json(timeout=1))["arg"]["instId"] == "ETH-USDT"


async def test_random_outages_are_drawn_at_the_configured_rate() -> None:
    often = VenueSpec(outage_per_hour=3600 * 100, outage_s=0.05)  # about one every 10 ms
    async with SimVenues(clock=WallClock(), venues=["bitstamp"], specs={"bitstamp": often}) as sim:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if sim["bitstamp"].outage is not None:
                break
        assert sim["bitstamp"].outage is not None


# --- Chainlink (JSON-RPC) -----------------------------------------------------------------------


async def _latest_round(http: aiohttp.ClientSession, url: str, address: str) -> dict[str, int]:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_call",
        "params": [{"to": address, "data": LATEST_ROUND_DATA}, "latest"],
    }
    async with http.post(url, json=call) as resp:
        body = await resp.json()
    assert body["id"] == 1
    words = bytes.fromhex(body["result"][2:])
    names = ["roundId", "answer", "startedAt", "updatedAt", "answeredInRound"]
    return {n: int.from_bytes(words[32 * i : 32 * i + 32], "big") for i, n in enumerate(names)}


async def test_chainlink_latest_round_data(
    sim: SimVenues, http: aiohttp.ClientSession, payload: Payload, clock: VirtualClock
) -> None:
    real = payload("chainlink_latestRoundData_eth_usd.json")
    url, eth = sim.urls["chainlink"]["rest"], real["feed"]["proxy"]
    got = await _latest_round(http, url, eth)
    assert got.keys() == real["latestRoundData"].keys()
    assert got["roundId"] >> 64 == real["derived"]["phaseId"]
    assert got["answer"] / 10 ** real["feed"]["decimals"] == pytest.approx(2_000, rel=0.01)
    assert got["updatedAt"] == int(clock.now())
    clock.advance(60)  # a small move and no heartbeat yet: the same round
    assert await _latest_round(http, url, eth) == got
    clock.advance(FEEDS["ETH-USD"].heartbeat_s)
    later = await _latest_round(http, url, eth)
    assert later["roundId"] == got["roundId"] + 1
    assert later["updatedAt"] == int(clock.now())


async def test_chainlink_writes_rounds_like_the_aggregator_whoever_reads_it(http: aiohttp.ClientSession) -> None:
    # A fast walk (vol 500 %) so that ETH crosses the 0.5 % threshold every minute or so.
    clock = VirtualClock(1_700_000_000.0)
    market = SimMarket(DEFAULT_MARKETS, clock=clock, seed=3, vols={"ETH-USD": 5.0})
    async with SimVenues(market, venues=["chainlink"]) as sim:
        feed, eth = sim["chainlink"], FEEDS["ETH-USD"]
        url = sim.urls["chainlink"]["rest"]
        first = await _latest_round(http, url, eth.address)
        # The feed's nodes look at the market every second (what its own task does); nobody reads.
        seen: list[int] = []
        expected: list[tuple[int, int]] = []
        last_answer, last_at = first["answer"], first["updatedAt"]
        for _ in range(900):
            clock.advance(1.0)
            feed.write_rounds()
            now, answer = int(clock.now()), feed.answer_now("ETH-USD")
            seen.append(answer)
            if abs(answer / last_answer - 1) >= eth.deviation or now - last_at >= eth.heartbeat_s:
                last_answer, last_at = answer, now
                expected.append((answer, now))
        assert len(expected) >= 5  # it did write rounds, each only past 0.5 %
        assert len(set(seen)) > 800  # while the market moved every second
        clock.advance(2.0)  # a client reads a moment later (this seed stays within 0.5 % meanwhile)
        assert abs(feed.answer_now("ETH-USD") / last_answer - 1) < eth.deviation
        got = await _latest_round(http, url, eth.address)
        assert (got["answer"], got["updatedAt"]) == expected[-1]  # the last round, at its own time
        assert got["roundId"] == first["roundId"] + len(expected)


async def test_chainlink_reads_never_write_a_round_and_its_own_task_writes_the_heartbeat(
    http: aiohttp.ClientSession,
) -> None:
    clock = VirtualClock(1_700_000_000.0)
    market = SimMarket(DEFAULT_MARKETS, clock=clock, seed=3, vols={"BTC-USD": 0.0})  # BTC stands still
    async with SimVenues(market, venues=["chainlink"]) as sim:
        url, btc = sim.urls["chainlink"]["rest"], FEEDS["BTC-USD"]
        first = await _latest_round(http, url, btc.address)
        for _ in range(5):
            clock.advance(60)
            assert await _latest_round(http, url, btc.address) == first  # reads change nothing
        clock.set(first["updatedAt"] + btc.heartbeat_s)
        heartbeat_at = int(clock.now())
        await asyncio.sleep(WATCH_S * 6)  # its own task sees the heartbeat pass, with no reader
        clock.advance(100)
        beat = await _latest_round(http, url, btc.address)
        assert beat["roundId"] == first["roundId"] + 1
        assert beat["updatedAt"] == heartbeat_at  # the round's time, not the read's
        assert beat["answer"] == first["answer"]  # a price that did not move keeps its answer


async def test_chainlink_json_rpc_envelope(sim: SimVenues, http: aiohttp.ClientSession) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "eth_call",
            "params": [{"to": FEEDS["BTC-USD"].address, "data": "0x313ce567"}, "latest"],
        },
        {"jsonrpc": "2.0", "id": 3, "method": "eth_sendTransaction", "params": []},
    ]
    async with http.post(sim.urls["chainlink"]["rest"], json=batch) as resp:
        chain, decimals, refused = await resp.json()
    assert chain == {"jsonrpc": "2.0", "id": 1, "result": "0x1"}
    assert int(decimals["result"], 16) == 8
    assert refused["error"]["code"] == -32601


def test_the_simulated_kraken_names_pairs_from_the_adapters_asset_table() -> None:
    from feeds.kraken import Kraken as KrakenAdapter
    from oracle.sim.venues import kraken as sim_kraken

    for pair in ("BTC-USD", "ETH-USD", "DOGE-USD", "SOL-USD", "BTC-EUR", "USDT-USD"):
        aliases = {KrakenAdapter.venue_symbol(pair), *KrakenAdapter.venue_aliases(pair)}  # what the adapter reads
        assert sim_kraken.altname(pair) == KrakenAdapter.venue_symbol(pair)
        assert sim_kraken.wsname(pair) in aliases
        assert sim_kraken.result_key(pair) in aliases, (pair, sim_kraken.result_key(pair), aliases)
