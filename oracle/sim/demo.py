"""The config `markd demo` runs: four markets over the simulated venues, as a production config would.

USDT-USD comes from three USD venues; BTC, ETH and SOL each from six, three of which quote in USDT
and are converted through the USDT-USD mark. Coinbase, Kraken, Binance and OKX stream over
WebSocket, Bybit and Bitstamp are polled over REST, so both transports run in the demo. When the
venues include Pyth and Chainlink, they form every market's fallback tier, as in production. When
they include the perp venue's own book (`own_book`), BTC-USD and ETH-USD get a perp mark
(`[markets.M.perp]`) over that book and whichever of Binance's, OKX's and Bybit's perpetuals are there.
`config/demo.toml` is the same config with placeholder loopback ports (PLACEHOLDER_URLS); the demo
rewrites them with the ports its venues actually got.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oracle.sim.venues import VENUES
from oracle.sim.venues.chainlink import DECIMALS, FEEDS
from oracle.sim.venues.own_book import PATH as BOOK_PATH
from oracle.sim.venues.own_book import perp_name
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
    "binance_perp": "ws",  # optional, as the three below: the perp mark's external perps and book
    "okx_perp": "ws",
    "bybit_perp": "rest",
    "own_book": "rest",  # the perp venue's own matching engine, read as an http_json book
}
USD_VENUES = ("coinbase", "kraken", "bitstamp")
USDT_VENUES = ("binance", "okx", "bybit")
# The perp mark: the external perps with their weights (DESIGN.md's example), and its markets.
PERP_VENUES = {"binance_perp": 3, "okx_perp": 2, "bybit_perp": 2}
PERP_MARKETS = ("BTC-USD", "ETH-USD")
OWN_BOOK = "own_book"
OPTIONAL = frozenset({"pyth", "chainlink", *PERP_VENUES, OWN_BOOK})
# A source kind other than the venue's name: the perpetuals read through their venue's adapter.
KINDS: dict[str, tuple[str, str]] = {
    "binance_perp": ("binance", "perp"),
    "okx_perp": ("okx", "perp"),
    "bybit_perp": ("bybit", "perp"),
    OWN_BOOK: ("http_json", "spot"),
}

# What config/demo.toml holds: loopback ports 18101-18112 (nothing listens there until the demo).
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
    Pyth and Chainlink are optional: the fallback tier holds those of them that have URLs. So are
    the perp venues: without `own_book` no market has a perp table.
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
        "markets": {market: _market(market, venues) for market in DEMO_MARKETS},
    }


def _source(venue: str, transport: str, urls: Mapping[str, str]) -> dict[str, Any]:
    kind, product = KINDS.get(venue, (venue, "spot"))
    out: dict[str, Any] = {"kind": kind, **({"product": product} if product != "spot" else {})}
    out |= {"transport": transport, "base_url": urls[transport]}
    if venue == OWN_BOOK:  # an http_json source's base_url is the document itself
        out["base_url"] += BOOK_PATH
    if transport == "rest":
        out["poll_ms"] = {"pyth": 1000, "chainlink": 2000}.get(venue, 500)
    return out


def _market(market: str, venues: list[str]) -> dict[str, Any]:
    tiers: dict[str, Any] = {"sources": [{"source": v, "pair": market} for v in USD_VENUES]}
    if market != "USDT-USD":
        base = market.split("-")[0]
        tiers["sources"] += [{"source": v, "pair": f"{base}-USDT", "convert": "USDT-USD"} for v in USDT_VENUES]
    fallback = [v for v in venues if v in ("pyth", "chainlink")]
    if fallback:
        tiers["fallback"] = [_fallback_ref(venue, market) for venue in fallback]
    if market != "USDT-USD":
        perp = {"perp": _perp(market, venues)} if market in PERP_MARKETS and OWN_BOOK in venues else {}
        return {**tiers, "max_deviation_bps": 100, **perp}
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


def _perp(market: str, venues: list[str]) -> dict[str, Any]:
    """The market's perp table: its perpetual on the own book, and the external perps there are."""
    name = perp_name(market)
    paths = {f"{side}_path": f"markets.{name}.{side}" for side in ("bid", "ask", "last")}
    base = market.split("-")[0]
    external = [
        {"source": v, "pair": f"{base}-USDT", "convert": "USDT-USD", "weight": w}
        for v, w in PERP_VENUES.items()
        if v in venues
    ]
    return {
        "book": {"source": OWN_BOOK, "pair": name, **paths},
        "external": external,
        "ema_s": 150,
        "max_premium_bps": 1000,
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
            lines += _table_lines(name, table)
    return "\n".join(lines).lstrip() + "\n"


def _table_lines(name: str, table: Mapping[str, Any]) -> list[str]:
    """`[name]` and its keys; a key holding tables or lists of its own (a market's `perp`) becomes
    the sub-table `[name.key]` after them, as a person would write it."""
    nested = {k: v for k, v in table.items() if _is_table(v)}
    lines = ["", f"[{name}]"] + [f"{k} = {_value(v)}" for k, v in table.items() if k not in nested]
    for key, sub in nested.items():
        lines += _table_lines(f"{name}.{key}", sub)
    return lines


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, Mapping | list) for v in value.values())


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
