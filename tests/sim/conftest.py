from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oracle.clock import VirtualClock
from oracle.sim.market import SimMarket, VenueSpec
from oracle.sim.venues import DEFAULT_MARKETS, VENUES, SimVenues

FAST = VenueSpec(latency_ms=1.0, push_ms=20.0)  # keeps the suite quick; formats do not depend on it


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_700_000_000.0)


@pytest.fixture
async def sim(clock: VirtualClock) -> AsyncIterator[SimVenues]:
    market = SimMarket(DEFAULT_MARKETS, clock=clock, seed=11)
    async with SimVenues(market, specs=dict.fromkeys(VENUES, FAST)) as venues:
        yield venues


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
def payload(shared_dir: Path) -> Callable[[str], Any]:
    """A real venue payload from ../shared/fixtures/payloads, parsed."""

    def load(name: str) -> Any:
        return json.loads((shared_dir / "fixtures" / "payloads" / name).read_text(encoding="utf-8"))

    return load
