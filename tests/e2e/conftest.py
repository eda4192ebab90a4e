from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from oracle.sim.venues import DEFAULT_SPECS
from oracle.testing import RedisServer
from tests.e2e.stack import TOKEN, Daemon, VenueThread, write_config

# Bitstamp quotes 400 bps off every other venue: beyond every market's max_deviation_bps, so the
# daemon excludes it (markd_quote_excluded_total{reason="deviation"}) and still has quorum.
DEVIANT = {"bitstamp": replace(DEFAULT_SPECS["bitstamp"], bias_bps=400.0)}


@pytest.fixture(scope="module")
def venues() -> Iterator[VenueThread]:
    v = VenueThread(seed=7, specs=DEVIANT).start()
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A redis-server of this module alone: tests stop and restart it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, venues: VenueThread, redis: RedisServer) -> Path:
    return write_config(tmp_path_factory.mktemp("e2e"), venues.urls, redis.url, http_port=0)


@pytest.fixture(scope="module")
def daemon(config: Path) -> Iterator[Daemon]:
    """One `markd run` for the module's tests, ready (every market validated) before the first."""
    d = Daemon(config, MARKD_DISPUTE_TOKEN=TOKEN).start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()
