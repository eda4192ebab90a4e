from __future__ import annotations

import numpy as np
import pytest

from oracle.clock import VirtualClock
from oracle.sim import walk
from oracle.sim.market import SimMarket, VenueQuoter, VenueSpec


def test_path_is_deterministic_per_seed() -> None:
    a = walk.gbm_path(30_000.0, 0.6, 1000, 1.0, walk.rng_for(7, "walk", "BTC-USD"))
    b = walk.gbm_path(30_000.0, 0.6, 1000, 1.0, walk.rng_for(7, "walk", "BTC-USD"))
    c = walk.gbm_path(30_000.0, 0.6, 1000, 1.0, walk.rng_for(8, "walk", "BTC-USD"))
    assert a[0] == 30_000.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_path_volatility_is_the_configured_one() -> None:
    vol, dt = 0.8, 1.0
    path = walk.gbm_path(100.0, vol, 200_001, dt, walk.rng_for(1, "walk"))
    realised = np.diff(np.log(path)).std()
    assert realised == pytest.approx(walk.sigma(vol, dt), rel=0.01)


def test_observed_noise_and_bias_are_the_configured_ones() -> None:
    true = np.full(200_000, 2_000.0)
    seen = walk.observe(true, bias_bps=3.0, noise_bps=5.0, rng=walk.rng_for(2, "venue"))
    rel_bps = (seen / true - 1.0) / walk.BPS
    assert rel_bps.mean() == pytest.approx(3.0, abs=0.05)
    assert rel_bps.std() == pytest.approx(5.0, rel=0.01)


def test_book_spread_and_latency_are_positive_and_as_configured() -> None:
    bid, ask = walk.book(np.array([100.0]), spread_bps=4.0)
    assert (ask - bid)[0] == pytest.approx(0.04)
    lat = walk.latencies(100_000, 50.0, walk.rng_for(3, "lat"))
    assert lat.min() > 0
    assert lat.mean() == pytest.approx(0.050, rel=0.02)


def test_sim_market_follows_its_clock_and_crosses_through_usd() -> None:
    clock = VirtualClock(1_700_000_000.0)
    market = SimMarket({"BTC-USD": 30_000.0, "USDT-USD": 1.001}, clock=clock, seed=1)
    assert market.price("BTC-USD") == 30_000.0  # no time has passed
    assert market.pair_price("BTC-USDT") == pytest.approx(30_000.0 / 1.001)
    assert not market.can_price("ETH-USD")
    clock.advance(60)
    assert market.price("BTC-USD") != 30_000.0


def test_venue_quoter_gives_a_sane_book_with_rising_sequence() -> None:
    clock = VirtualClock(1_700_000_000.0)
    venue = VenueQuoter("kraken", SimMarket({"BTC-USD": 30_000.0}, clock=clock), VenueSpec(spread_bps=2.0))
    first = venue.quote("BTC-USD")
    clock.advance(1)
    second = venue.quote("BTC-USD")
    assert first.bid < first.ask
    assert (first.ask - first.bid) / first.ask == pytest.approx(2e-4, rel=0.01)
    assert first.last in (first.bid, first.ask)
    assert second.seq == first.seq + 1
    assert second.ts == first.ts + 1
    assert second.low <= min(first.last, second.last) <= second.high


def test_live_market_and_venue_are_deterministic_per_seed() -> None:
    def run(seed: int) -> list[float]:
        clock = VirtualClock(1_700_000_000.0)
        venue = VenueQuoter(
            "okx", SimMarket({"ETH-USD": 2_000.0, "USDT-USD": 1.0}, clock=clock, seed=seed), VenueSpec()
        )
        out = []
        for _ in range(20):
            clock.advance(0.5)
            out.append(venue.quote("ETH-USDT").bid)
        return out

    assert run(3) == run(3) != run(4)
