"""The simulated market: a seeded price model, `markd synth`, and venue servers speaking real formats.

walk       pure numpy price model (geometric random walk, venue bias/noise/latency)
market     SimMarket (true prices on a clock) and VenueQuoter (one venue's tickers)
synth      `markd synth`: synth_ticks() and run_synth(argv)
venues     SimVenues: one aiohttp server per venue at the real paths, with outages
demo       demo_config(): the config `markd demo` runs over SimVenues
"""

from oracle.sim.demo import demo_config, to_toml
from oracle.sim.market import SimMarket, VenueSpec
from oracle.sim.synth import run_synth, synth_ticks
from oracle.sim.venues import OutageKind, SimVenues

__all__ = [
    "OutageKind",
    "SimMarket",
    "SimVenues",
    "VenueSpec",
    "demo_config",
    "run_synth",
    "synth_ticks",
    "to_toml",
]
