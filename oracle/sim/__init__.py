"""The simulated market: a seeded price model, `markd synth`, and venue servers speaking real formats.

walk       pure numpy price model (geometric random walk, venue bias/noise/latency)
market     SimMarket (true prices on a clock) and VenueQuoter (one venue's tickers)
synth      `markd synth`: synth_ticks() and run_synth(argv)
venues     SimVenues: one aiohttp server per venue at the real paths, with outages
demo       demo_config(): the config `markd demo` runs over SimVenues

The names below load their module on first use (PEP 562): `markd replay` uses only the pure price
model (walk, synth) and must not load the venue servers or the demo with it
(tests/oracle/test_boundaries.py).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "OutageKind": "venues",
    "SimMarket": "market",
    "SimVenues": "venues",
    "VenueSpec": "market",
    "demo_config": "demo",
    "run_synth": "synth",
    "synth_ticks": "synth",
    "to_toml": "demo",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
