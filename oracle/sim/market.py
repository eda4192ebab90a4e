"""The live simulated market behind the venue servers: true prices on a clock, venues' tickers on top.

`SimMarket` advances every market's random walk lazily, to `clock.now()`, whenever a price is read,
so it follows a WallClock in the demo and a VirtualClock in tests without a task of its own. A
`VenueQuoter` is one venue's view: a pair's price is crossed through USD when the venue quotes in
another currency (BTC-USDT = BTC-USD / USDT-USD), then biased, noised and given a spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from oracle.clock import Clock
from oracle.sim import walk

STABLECOINS = frozenset({"USDT", "USDC", "DAI", "USD"})
DEFAULT_VOL = 0.6  # annualised; roughly BTC's
STABLE_VOL = 0.01  # a pegged coin barely moves


def default_vol(market: str) -> float:
    return STABLE_VOL if market.split("-")[0] in STABLECOINS else DEFAULT_VOL


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """One venue's knobs. The price model (VenueQuoter) reads the first three; the servers the rest."""

    bias_bps: float = 0.0  # constant offset of this venue from the true price
    noise_bps: float = 1.0  # std dev of independent per-quote noise
    spread_bps: float = 2.0  # best ask minus best bid, relative to the mid
    latency_ms: float = 20.0  # delay before a REST answer or a push leaves the venue
    push_ms: float = 250.0  # WebSocket push interval
    outage_per_hour: float = 0.0  # seeded random outages (Poisson rate)
    outage_s: float = 5.0  # length of a random outage


@dataclass(frozen=True, slots=True)
class Ticker:
    """One venue's top of book and 24h statistics for one pair, as of `ts` (the venue's clock)."""

    pair: str
    ts: float
    bid: float
    ask: float
    last: float
    bid_size: float
    ask_size: float
    last_size: float
    side: str  # the taker side of the last trade
    open: float
    high: float
    low: float
    volume: float
    seq: int  # rises by one per quote; venues use it as update, sequence and trade ids

    @property
    def vwap(self) -> float:
        return (self.high + self.low + self.last) / 3.0


class SimMarket:
    """True prices of USD markets (`BTC-USD`, `USDT-USD`…), one seeded walk each, read on a clock."""

    def __init__(
        self,
        markets: Mapping[str, float],
        *,
        clock: Clock,
        seed: int = 0,
        vols: Mapping[str, float] | None = None,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self._vol = {m: (vols or {}).get(m, default_vol(m)) for m in markets}
        self._price = {m: float(p) for m, p in markets.items()}
        self._rng = {m: walk.rng_for(seed, "walk", m) for m in markets}
        self._t = clock.now()

    def _advance(self) -> None:
        now = self.clock.now()
        dt = now - self._t
        if dt <= 0:
            return
        for m, rng in self._rng.items():
            self._price[m] *= float(np.exp(walk.log_steps(rng, self._vol[m], np.array([dt]))[0]))
        self._t = now

    def price(self, market: str) -> float:
        """The current true price of a configured market."""
        self._advance()
        return self._price[market]

    def can_price(self, pair: str) -> bool:
        base, quote = pair.split("-")
        return pair in self._price or all(self._usd_known(c) for c in (base, quote))

    def pair_price(self, pair: str) -> float:
        """A pair's true price, crossed through USD when it is not itself a market."""
        if pair in self._price:
            return self.price(pair)
        base, quote = pair.split("-")
        return self._usd(base) / self._usd(quote)

    def _usd_known(self, coin: str) -> bool:
        return coin == "USD" or f"{coin}-USD" in self._price

    def _usd(self, coin: str) -> float:
        return 1.0 if coin == "USD" else self.price(f"{coin}-USD")


@dataclass
class _PairState:
    open: float
    high: float
    low: float
    volume: float = 0.0
    count: int = 0


class VenueQuoter:
    """One venue's tickers over a SimMarket: bias, noise and spread from its spec, 24h stats kept."""

    def __init__(self, name: str, market: SimMarket, spec: VenueSpec) -> None:
        self.name = name
        self.market = market
        self.spec = spec
        self._rng = walk.rng_for(market.seed, "venue", name)
        self._state: dict[str, _PairState] = {}
        # Scripted incidents (markd demo): base coin -> factor on this venue's price of its pairs only,
        # a bad print or a pump the true market does not share. Empty: the venue quotes honestly.
        self.shocks: dict[str, float] = {}
        # Venues number their updates from some large past value, never from zero.
        self._seq0 = int(self._rng.integers(10**8, 10**9))

    def _open(self, pair: str, mid: float) -> _PairState:
        """A pair's first quote opens its day, with a plausible volume already traded ($20M-200M)."""
        st = _PairState(open=mid, high=mid, low=mid, volume=float(self._rng.uniform(2e7, 2e8)) / mid)
        self._state[pair] = st
        return st

    def quote(self, pair: str) -> Ticker:
        true = self.market.pair_price(pair) * self.shocks.get(pair.split("-")[0], 1.0)
        mid = float(walk.observe(np.array(true), self.spec.bias_bps, self.spec.noise_bps, self._rng))
        bid, ask = (float(x) for x in walk.book(np.array(mid), self.spec.spread_bps))
        st = self._state.get(pair) or self._open(pair, mid)
        side = "buy" if self._rng.random() < 0.5 else "sell"
        last = ask if side == "buy" else bid
        last_size = float(self._rng.exponential(1000.0 / mid))  # about $1,000 a trade
        st.high, st.low = max(st.high, last), min(st.low, last)
        st.volume += last_size
        st.count += 1
        return Ticker(
            pair=pair,
            ts=self.market.clock.now(),
            bid=bid,
            ask=ask,
            last=last,
            bid_size=float(self._rng.exponential(20_000.0 / mid)),
            ask_size=float(self._rng.exponential(20_000.0 / mid)),
            last_size=last_size,
            side=side,
            open=st.open,
            high=st.high,
            low=st.low,
            volume=st.volume,
            seq=self._seq0 + st.count,
        )
