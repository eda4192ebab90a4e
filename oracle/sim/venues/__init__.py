"""Simulated venues on loopback, each speaking its real venue's paths and wire format.

    async with SimVenues(clock=WallClock(), seed=7) as sim:
        urls = sim.urls  # {"binance": {"rest": "http://127.0.0.1:P", "ws": "ws://127.0.0.1:P"}, ...}
        await sim.set_outage("kraken", "503", seconds=10)

Each venue has its own server; `rest` is its REST root (append the venue's real path) and `ws` its
WebSocket endpoint (Binance's is the root, to which a client appends `/stream?streams=...`; OKX's
includes `/ws/v5/public`). Bybit, Bitstamp and Pyth (Hermes) are simulated over REST only, and
Chainlink as an Ethereum JSON-RPC endpoint (`rest` is the RPC URL). `binance_perp`, `okx_perp` and
`bybit_perp` are those venues' perpetuals (USD-M futures, SWAP, linear) for `product = "perp"`
sources, each a few bps above spot, as perps usually trade; `own_book` is the perp venue's own
matching engine (one JSON document of every perp's bid, ask and last, read as an `http_json` book).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from oracle.clock import Clock, WallClock
from oracle.sim.market import SimMarket, VenueQuoter, VenueSpec
from oracle.sim.venues.base import OutageKind, VenueServer
from oracle.sim.venues.binance import Binance
from oracle.sim.venues.binance_perp import BinancePerp
from oracle.sim.venues.bitstamp import Bitstamp
from oracle.sim.venues.bybit import Bybit
from oracle.sim.venues.bybit_perp import BybitPerp
from oracle.sim.venues.chainlink import Chainlink
from oracle.sim.venues.coinbase import Coinbase
from oracle.sim.venues.kraken import Kraken
from oracle.sim.venues.okx import Okx
from oracle.sim.venues.okx_perp import OkxPerp
from oracle.sim.venues.own_book import OwnBook
from oracle.sim.venues.pyth import Pyth

__all__ = ["DEFAULT_MARKETS", "DEFAULT_PAIRS", "DEFAULT_SPECS", "VENUES", "OutageKind", "SimVenues"]

VENUES: dict[str, type[VenueServer]] = {
    v.name: v
    for v in (
        Binance,
        Coinbase,
        Kraken,
        Okx,
        Bybit,
        Bitstamp,
        Pyth,
        Chainlink,
        BinancePerp,
        OkxPerp,
        BybitPerp,
        OwnBook,
    )
}

# Start prices of the true USD markets; a venue's USDT pairs are crossed through USDT-USD.
DEFAULT_MARKETS: dict[str, float] = {
    "BTC-USD": 30_000.0,
    "ETH-USD": 2_000.0,
    "SOL-USD": 60.0,
    "USDT-USD": 1.0003,
    "USDC-USD": 0.9999,
}

_USD = ["BTC-USD", "ETH-USD", "SOL-USD", "USDT-USD", "USDC-USD"]
_USDT = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "USDC-USDT"]
DEFAULT_PAIRS: dict[str, list[str]] = {
    "coinbase": _USD,
    "kraken": _USD,
    "bitstamp": _USD,
    "binance": _USDT,
    "okx": _USDT,
    "bybit": _USDT,
    "pyth": _USD,
    "chainlink": _USD,
    "binance_perp": _USDT[:3],
    "okx_perp": _USDT[:3],
    "bybit_perp": _USDT[:3],
    "own_book": ["BTC-USD", "ETH-USD"],  # served as BTC-PERP, ETH-PERP
}

# A few bps of constant disagreement and different speeds, as between real venues.
DEFAULT_SPECS: dict[str, VenueSpec] = {
    "coinbase": VenueSpec(bias_bps=0.5, noise_bps=1.0, spread_bps=1.0, latency_ms=30, push_ms=250),
    "kraken": VenueSpec(bias_bps=-1.0, noise_bps=1.5, spread_bps=2.0, latency_ms=40, push_ms=500),
    "bitstamp": VenueSpec(bias_bps=1.5, noise_bps=2.0, spread_bps=3.0, latency_ms=60),
    "binance": VenueSpec(bias_bps=-0.5, noise_bps=0.8, spread_bps=0.5, latency_ms=15, push_ms=100),
    "okx": VenueSpec(bias_bps=0.0, noise_bps=1.0, spread_bps=1.0, latency_ms=25, push_ms=200),
    "bybit": VenueSpec(bias_bps=1.0, noise_bps=1.2, spread_bps=1.5, latency_ms=35),
    "pyth": VenueSpec(bias_bps=0.0, noise_bps=0.5, spread_bps=1.0, latency_ms=80),  # conf = half-spread
    "chainlink": VenueSpec(bias_bps=0.0, noise_bps=0.5, spread_bps=0.0, latency_ms=100),
    # perpetuals: a small positive premium over spot (longs paying funding), a little noisier
    "binance_perp": VenueSpec(bias_bps=3.0, noise_bps=1.0, spread_bps=0.5, latency_ms=15, push_ms=100),
    "okx_perp": VenueSpec(bias_bps=3.5, noise_bps=1.2, spread_bps=1.0, latency_ms=25, push_ms=200),
    "bybit_perp": VenueSpec(bias_bps=2.5, noise_bps=1.5, spread_bps=1.5, latency_ms=35),
    # the perp venue's own book: a few bps over spot too, its spread a market maker's
    "own_book": VenueSpec(bias_bps=4.0, noise_bps=1.0, spread_bps=2.0, latency_ms=5),
}


class SimVenues:
    """Every simulated venue over one SimMarket; `start()` returns each venue's URLs."""

    def __init__(
        self,
        market: SimMarket | None = None,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        venues: Iterable[str] | None = None,
        specs: Mapping[str, VenueSpec] | None = None,
        pairs: Mapping[str, Sequence[str]] | None = None,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
    ) -> None:
        self.market = market or SimMarket(DEFAULT_MARKETS, clock=clock or WallClock(), seed=seed)
        names = list(venues or VENUES)
        unknown = sorted(set(names) - set(VENUES))
        if unknown:
            raise ValueError(f"unknown venue(s) {unknown}; simulated: {sorted(VENUES)}")
        specs = {**DEFAULT_SPECS, **(specs or {})}
        pairs = {**DEFAULT_PAIRS, **(pairs or {})}
        self.servers: dict[str, VenueServer] = {
            name: VENUES[name](
                VenueQuoter(name, self.market, specs.get(name, VenueSpec())),
                pairs.get(name, []),
                host,
                (ports or {}).get(name, 0),
            )
            for name in names
        }
        self.urls: dict[str, dict[str, str]] = {}

    def __getitem__(self, venue: str) -> VenueServer:
        return self.servers[venue]

    async def start(self) -> dict[str, dict[str, str]]:
        try:
            for name, server in self.servers.items():
                self.urls[name] = await server.start()
        except BaseException:
            await self.stop()
            raise
        return self.urls

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        self.urls.clear()

    async def set_outage(self, venue: str, kind: OutageKind | str, seconds: float) -> None:
        """Take one venue down for `seconds` of the market's clock: `refuse`, `503` or `silent`."""
        await self.servers[venue].set_outage(kind, seconds)

    def shock(self, venue: str, coin: str, factor: float) -> None:
        """From now on `venue` quotes every pair of base `coin` at `factor` x its true price (1.0 ends it)."""
        shocks = self.servers[venue].quoter.shocks
        if factor == 1.0:
            shocks.pop(coin, None)
        else:
            shocks[coin] = factor

    async def __aenter__(self) -> SimVenues:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
