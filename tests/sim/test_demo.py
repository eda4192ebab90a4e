from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from oracle.settings import parse_settings
from oracle.sim.demo import (
    PLACEHOLDER_HTTP_PORT,
    PLACEHOLDER_REDIS_URL,
    PLACEHOLDER_URLS,
    demo_config,
    to_toml,
)
from oracle.sim.venues import DEFAULT_PAIRS, SimVenues
from oracle.sim.venues.own_book import PATH as BOOK_PATH
from oracle.sim.venues.own_book import perp_name

DEMO_TOML = Path(__file__).resolve().parents[2] / "config" / "demo.toml"


async def test_demo_config_over_live_venues_validates(sim: SimVenues) -> None:
    settings = parse_settings(demo_config(sim.urls, "redis://127.0.0.1:6399/0", 0))
    assert sorted(settings.markets) == ["BTC-USD", "ETH-USD", "SOL-USD", "USDT-USD"]
    assert settings.market_order()[0] == "USDT-USD"  # everything else converts through it
    assert {s.transport for s in settings.sources.values()} == {"rest", "ws"}
    for name, source in settings.sources.items():
        document = BOOK_PATH if name == "own_book" else ""  # an http_json source names its document
        assert source.base_url == sim.urls[name][source.transport] + document


def test_every_demo_pair_is_listed_by_its_simulated_venue() -> None:
    settings = parse_settings(demo_config(PLACEHOLDER_URLS, PLACEHOLDER_REDIS_URL, PLACEHOLDER_HTTP_PORT))
    for market in settings.markets.values():
        for ref in market.feed_refs:  # the tiers' and the perp's
            listed = DEFAULT_PAIRS[ref.source]
            if ref.source == "own_book":  # it lists the USD markets whose perpetuals it trades
                listed = [perp_name(p) for p in listed]
            assert ref.pair in listed, (ref.source, ref.pair)


def test_btc_and_eth_have_a_perp_mark_over_the_own_book_and_the_other_perps() -> None:
    settings = parse_settings(demo_config(PLACEHOLDER_URLS, PLACEHOLDER_REDIS_URL, PLACEHOLDER_HTTP_PORT))
    perps = {m: ms.perp for m, ms in settings.markets.items() if ms.perp}
    assert sorted(perps) == ["BTC-USD", "ETH-USD"]
    btc = perps["BTC-USD"]
    assert (btc.book.source, btc.book.pair, btc.book.bid_path) == ("own_book", "BTC-PERP", "markets.BTC-PERP.bid")
    assert [(e.source, e.weight) for e in btc.external] == [("binance_perp", 3), ("okx_perp", 2), ("bybit_perp", 2)]
    assert {settings.sources[e.source].product for e in btc.external} == {"perp"}
    # Without the own book there is no perp mark; without some external perps, c3 has the others.
    no_book = {v: u for v, u in PLACEHOLDER_URLS.items() if v != "own_book"}
    assert not any(m.perp for m in parse_settings(demo_config(no_book, PLACEHOLDER_REDIS_URL, 0)).markets.values())
    few = {v: u for v, u in PLACEHOLDER_URLS.items() if v not in ("okx_perp", "bybit_perp")}
    perp = parse_settings(demo_config(few, PLACEHOLDER_REDIS_URL, 0)).markets["BTC-USD"].perp
    assert perp is not None and [e.source for e in perp.external] == ["binance_perp"]


def test_pyth_and_chainlink_are_an_optional_fallback_tier() -> None:
    full = parse_settings(demo_config(PLACEHOLDER_URLS, PLACEHOLDER_REDIS_URL, PLACEHOLDER_HTTP_PORT))
    assert all([r.source for r in m.tiers[1]] == ["pyth", "chainlink"] for m in full.markets.values())
    without = {v: u for v, u in PLACEHOLDER_URLS.items() if v not in ("pyth", "chainlink")}
    settings = parse_settings(demo_config(without, PLACEHOLDER_REDIS_URL, PLACEHOLDER_HTTP_PORT))
    assert "pyth" not in settings.sources
    assert all(len(m.tiers) == 1 for m in settings.markets.values())
    with pytest.raises(ValueError, match="kraken"):
        demo_config({v: u for v, u in without.items() if v != "kraken"}, PLACEHOLDER_REDIS_URL, 0)


def test_config_demo_toml_validates_and_is_demo_config_with_placeholders() -> None:
    with DEMO_TOML.open("rb") as f:
        raw = tomllib.load(f)
    parse_settings(raw)
    assert raw == demo_config(PLACEHOLDER_URLS, PLACEHOLDER_REDIS_URL, PLACEHOLDER_HTTP_PORT)


def test_to_toml_round_trips_the_demo_config() -> None:
    config = demo_config(PLACEHOLDER_URLS, 'redis://:pa"ss@127.0.0.1:1/0', 1234)
    assert tomllib.loads(to_toml(config)) == config


def test_public_surface() -> None:
    import oracle.sim

    assert sorted(oracle.sim.__all__) == [
        "OutageKind", "SimMarket", "SimVenues", "VenueSpec",
        "demo_config", "run_synth", "synth_ticks", "to_toml",
    ]  # fmt: skip
    assert all(hasattr(oracle.sim, name) for name in oracle.sim.__all__)
