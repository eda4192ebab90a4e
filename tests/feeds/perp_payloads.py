"""Real perpetual-futures payloads (`product = "perp"`), each with where it was found.

Copied value for value from the cited page or file (whitespace and `//` comments aside); the
wrapping Python is ours. DOC = the venue's own documented example; CAPTURED = a live message a
library recorded; LIB-COMMENT = a live answer a library author pasted into source.
"""

from __future__ import annotations

from typing import Any

# DOC: Binance USD-M futures, GET /fapi/v1/ticker/bookTicker, "Response Example" (single symbol),
# https://developers.binance.com/docs/derivatives/usds-margined-futures/market-data/rest-api/Symbol-Order-Book-Ticker
BINANCE_FAPI_BOOK_TICKER: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "bidPrice": "4.00000000",
    "bidQty": "431.00000000",
    "askPrice": "4.00000200",
    "askQty": "9.00000000",
    "time": 1589437530011,
}

# DOC: Binance USD-M futures, stream <symbol>@bookTicker, "Individual Symbol Book Ticker Streams"
# (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/
# Individual-Symbol-Book-Ticker-Streams); the same payload is in adshao/go-binance
# v2/futures/websocket_service_test.go (TestBookTickerServe). Wrapped here in the combined-stream
# envelope {"stream", "data"} that /stream?streams= delivers (documented on the same site).
BINANCE_FSTREAM_BOOK_TICKER: dict[str, Any] = {
    "stream": "bnbusdt@bookTicker",
    "data": {
        "e": "bookTicker",
        "u": 400900217,
        "E": 1568014460893,
        "T": 1568014460891,
        "s": "BNBUSDT",
        "b": "25.35190000",
        "B": "31.21000000",
        "a": "25.36520000",
        "A": "40.66000000",
    },
}

# LIB-COMMENT: OKX v5 WS `tickers` push for BTC-USDT-SWAP, pasted in the okx crate 0.2.0,
# src/dto/websocket/websocket_dto.rs (docs.rs/crate/okx/0.2.0), ts 1747141319306 = 2025-05-13.
OKX_WS_TICKERS_SWAP: dict[str, Any] = {
    "arg": {"channel": "tickers", "instId": "BTC-USDT-SWAP"},
    "data": [
        {
            "instType": "SWAP",
            "instId": "BTC-USDT-SWAP",
            "last": "103700",
            "lastSz": "0.01",
            "askPx": "103700",
            "askSz": "1004.09",
            "bidPx": "103699.9",
            "bidSz": "299.02",
            "open24h": "103897.5",
            "high24h": "104628.1",
            "low24h": "100700",
            "sodUtc0": "102740.1",
            "sodUtc8": "102480.1",
            "volCcy24h": "109187.9625",
            "vol24h": "10918796.25",
            "ts": "1747141319306",
        }
    ],
}

# CAPTURED: OKX v5 WS `tickers`, UNI-USD-SWAP, bmoscon/cryptofeed @ ce58c2a0 sample_data/OKX.ws.1.0
# (also in ../shared/fixtures/payloads/okx_ws_tickers.json), 2022-05-13. The REST ticker
# (GET /api/v5/market/ticker?instId=UNI-USD-SWAP) answers the same object inside
# {"code": "0", "msg": "", "data": [...]}, as the OKX docs show for every instrument type.
OKX_SWAP_ROW_CAPTURED: dict[str, Any] = {
    "instType": "SWAP",
    "instId": "UNI-USD-SWAP",
    "last": "5.123",
    "lastSz": "100",
    "askPx": "5.142",
    "askSz": "25",
    "bidPx": "5.134",
    "bidSz": "96",
    "open24h": "4.799",
    "high24h": "5.458",
    "low24h": "4.537",
    "sodUtc0": "4.654",
    "sodUtc8": "5.204",
    "volCcy24h": "577730.7823",
    "vol24h": "289425",
    "ts": "1652459223143",
}
OKX_REST_TICKER_SWAP: dict[str, Any] = {"code": "0", "msg": "", "data": [OKX_SWAP_ROW_CAPTURED]}

# DOC: Bybit v5 GET /v5/market/tickers, "Response Example", Linear/Inverse tab (the linear and
# inverse tickers share one object; the documented one is BTCUSD), bybit-exchange/docs @
# 013aa2a1c62913368cdcbbbc47587dbee2c8df3f : docs/v5/market/tickers.mdx.
BYBIT_TICKERS_LINEAR_INVERSE: dict[str, Any] = {
    "retCode": 0,
    "retMsg": "OK",
    "result": {
        "category": "inverse",
        "list": [
            {
                "symbol": "BTCUSD",
                "lastPrice": "16597.00",
                "indexPrice": "16598.54",
                "markPrice": "16596.00",
                "prevPrice24h": "16464.50",
                "price24hPcnt": "0.008047",
                "highPrice24h": "30912.50",
                "lowPrice24h": "15700.00",
                "prevPrice1h": "16595.50",
                "openInterest": "373504107",
                "openInterestValue": "22505.67",
                "turnover24h": "2352.94950046",
                "volume24h": "49337318",
                "fundingRate": "-0.001034",
                "nextFundingTime": "1672387200000",
                "predictedDeliveryPrice": "",
                "basisRate": "",
                "deliveryFeeRate": "",
                "deliveryTime": "0",
                "ask1Size": "1",
                "bid1Price": "16596.00",
                "ask1Price": "16597.50",
                "bid1Size": "1",
            }
        ],
    },
    "retExtInfo": {},
    "time": 1672376496682,
}
