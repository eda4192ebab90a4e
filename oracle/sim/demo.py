"""The config `markd demo` runs: four markets over the simulated venues, as a production config would.

USDT-USD comes from three USD venues; BTC, ETH and SOL each from six, three of which quote in USDT
and are converted through the USDT-USD mark. Coinbase, Kraken, Binance and OKX stream over
WebSocket, Bybit and Bitstamp are polled over REST, so both transports run in the demo. When the
venues include Pyth and Chainlink, they form every market's fallback tier, as in production.
`config/demo.toml` is the same config with placeholder loopback ports (PLACEHOLDER_URLS); the demo
rewrites them with the ports its venues actually got.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oracle.sim.venues import VENUES
from oracle.sim.venues.chainlink import DECIMALS, FEEDS
from oracle.sim.venues.pyth import FEED_IDS

DEMO_MARKETS = ("USDT-USD", "BTC-USD", "ETH-USD", "SOL-USD")
TRANSPORTS = {
    "coinbase": "ws",
    "kraken": "ws",
    "binance": "ws",
    "okx": "ws",
    "bybit": "rest",
    "bitstamp": "rest",
    "pyth": "rest",  # optional: the fallback tier
    "chainlink": "rest",  # optional: the fallback tier (JSON-RPC)
}
OPTIONAL = frozenset({"pyth", "chainlink"})
USD_VENUES = ("coinbase", "kraken", "bitstamp")
USDT_VENUES = ("binance", "okx", "bybit")

# What config/demo.toml holds: loopback ports 18101-18108 (nothing listens there until the demo).
PLACEHOLDER_URLS: dict[str, dict[str, str]] = {
    venue: {
        "rest": f"http://127.0.0.1:{18101 + i}",
        **({"ws": f"ws://127.0.0.1:{18101 + i}{VENUES[venue].ws_endpoint}"} if TRANSPORTS[venue] == "ws" else {}),
    }
    for i, venue in enumerate(TRANSPORTS)
}
PLACEHOLDER_REDIS_URL = "redis://127.0.0.1:6379/0"
PLACEHOLDER_HTTP_PORT = 9108


def demo_config(urls: Mapping[str, Mapping[str, str]], redis_url: str, http_port: int) -> dict[str, Any]:
    """The demo's config as a TOML-shaped dict (validate with oracle.settings.parse_settings).

    `urls` is what SimVenues.start() returned: per venue its `rest` root and, if any, its `ws` URL.
    Pyth and Chainlink are optional: the fallback tier holds those of them that have URLs.
    """
    missing = sorted(set(TRANSPORTS) - OPTIONAL - set(urls))
    if missing:
        raise ValueError(f"demo_config: no URLs for venue(s) {missing}")
    venues = [v for v in TRANSPORTS if v in urls]
    return {
        "service": {"tick_ms": 250, "http_host": "127.0.0.1", "http_port": http_port},
        "redis": {"url": redis_url, "prefix": "markd"},
        "policy": {"max_age_ms": 5000, "max_deviation_bps": 150, "min_sources": 3},
        "sources": {v: _source(v, TRANSPORTS[v], urls[v]) for v in venues},
        "markets": {market: _market(market, [v for v in venues if v in OPTIONAL]) for market in DEMO_MARKETS},
    }


def _source(venue: str, transport: str, urls: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": venue, "transport": transport, "base_url": urls[transport]}
    if transport == "rest":
        out["poll_ms"] = {"pyth": 1000, "chainlink": 2000}.get(venue, 500)
    return out


def _market(market: str, fallback: list[str]) -> dict[str, Any]:
    tiers: dict[str, Any] = {"sources": [{"source": v, "pair": market} for v in USD_VENUES]}
    if market != "USDT-USD":
        base = market.split("-")[0]
        tiers["sources"] += [{"source": v, "pair": f"{base}-USDT", "convert": "USDT-USD"} for v in USDT_VENUES]
    if fallback:
        tiers["fallback"] = [_fallback_ref(venue, market) for venue in fallback]
    if market != "USDT-USD":
        return {**tiers, "max_deviation_bps": 100}
    # A peg: tight bands, two of three venues suffice, and it may legitimately sit still.
    return {
        **tiers,
        "min_sources": 2,
        "max_deviation_bps": 50,
        "max_jump_bps": 300,
        "anchor_deviation_bps": 500,
        "min_price": 0.5,
        "max_price": 1.5,
        "freeze_ticks": 0,
    }


def _fallback_ref(venue: str, market: str) -> dict[str, Any]:
    if venue == "pyth":
        return {"source": venue, "pair": market, "id": FEED_IDS[market]}
    feed = FEEDS[market]
    return {
        "source": venue,
        "pair": market,
        "address": feed.address,
        "decimals": DECIMALS,
        "heartbeat_s": feed.heartbeat_s,
    }


def to_toml(config: Mapping[str, Any]) -> str:
    """TOML text for a config shaped like demo_config's: tables of scalars and lists of inline tables."""
    lines: list[str] = []
    for section, body in config.items():
        for name, table in _tables(section, body):
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines).lstrip() + "\n"


def _tables(section: str, body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    if all(isinstance(v, Mapping) for v in body.values()):  # [sources.X], [markets.Y]
        return [(f"{section}.{name}", table) for name, table in body.items()]
    return [(section, body)]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[\n" + "".join(f"  {_value(v)},\n" for v in value) + "]"
    return repr(value)
