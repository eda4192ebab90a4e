from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.adapter import QuoteBatch
from feeds.runner import FeedRunner
from oracle.metrics import Metrics
from oracle.models import Quote
from oracle.settings import Settings
from tests.feeds.fakes import FakeVenue, FastClock, VenueCase, rest_cases, ws_cases

# Small enough that every fault and its recovery takes well under a second.
POLL_MS = 20
TIMEOUT_MS = 200
RUNNER_OPTIONS: dict[str, Any] = {"backoff_initial_s": 0.02, "backoff_max_s": 0.1, "silence_polls": 10}

# Case names: a source kind, or `<kind>_perp` for its perpetual product (tests/feeds/perp_payloads.py).
PERP_KINDS = ["binance_perp", "okx_perp", "bybit_perp"]
REST_KINDS = ["binance", "coinbase", "kraken", "okx", "bybit", "bitstamp", "pyth", "chainlink", "http_json"]
REST_KINDS += PERP_KINDS
BOOK_KINDS = ["binance", "coinbase", "kraken", "okx", "bybit", "bitstamp", *PERP_KINDS]  # with a bid and an ask
WS_KINDS = ["binance", "coinbase", "kraken", "okx", "binance_perp", "okx_perp"]


def settings_for(case: VenueCase, base_url: str, **source: Any) -> Settings:
    """One source named `case.name` serving the case's pairs, each its own one-source market."""
    refs = [{"source": case.name, **r} for r in case.refs]
    conf = {"kind": case.kind, "base_url": base_url, "transport": case.transport, "poll_ms": POLL_MS}
    conf["product"] = case.product
    return Settings.model_validate(
        {
            "sources": {case.name: {**conf, "timeout_ms": TIMEOUT_MS, **source}},
            "markets": {r["pair"]: {"sources": [r], "min_sources": 1} for r in refs},
        }
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class Feed:
    """A FeedRunner over one case, with its quotes, metrics and clock at hand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.clock = FastClock()
        self.quotes: list[Quote] = []
        self.batches: list[QuoteBatch] = []  # one per frame, as the runner hands them on

    def _take(self, batch: QuoteBatch) -> None:
        self.batches.append(batch)
        self.quotes.extend(batch.quotes())

    async def __aenter__(self) -> Feed:
        self.session = aiohttp.ClientSession()
        self.runner = FeedRunner(self.settings, self.session, self.clock, self.metrics, self._take, **RUNNER_OPTIONS)
        self.task = asyncio.create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert not self.task.done(), "a source task ended on its own"
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.session.close()

    def errors(self, code: str, source: str | None = None) -> float:
        source = source or next(iter(self.settings.sources))
        labels = {"source": source, "code": code}
        return self.metrics.registry.get_sample_value("markd_source_errors_total", labels) or 0.0

    def counted(self) -> dict[str, float]:
        """Every nonzero error count, by code."""
        return {
            s.labels["code"]: s.value
            for metric in self.metrics.source_errors_total.collect()
            for s in metric.samples
            if s.name.endswith("_total") and s.value
        }

    def up(self, source: str | None = None) -> float | None:
        source = source or next(iter(self.settings.sources))
        return self.metrics.registry.get_sample_value("markd_source_up", {"source": source})

    async def next_quote(self, pair: str | None = None, timeout: float = 5.0) -> Quote:
        """The first quote (of `pair`) that arrives after this call."""
        start = len(self.quotes)
        await until(lambda: any(pair in (None, q.pair) for q in self.quotes[start:]), timeout)
        return next(q for q in self.quotes[start:] if pair in (None, q.pair))


@pytest.fixture
def rest_case(shared_dir: Path) -> Callable[[str], VenueCase]:
    cases = {c.name: c for c in rest_cases(shared_dir)}
    return cases.__getitem__


@pytest.fixture
def ws_case(shared_dir: Path) -> Callable[[str], VenueCase]:
    cases = {c.name: c for c in ws_cases(shared_dir)}
    return cases.__getitem__


@pytest.fixture
async def venues() -> AsyncIterator[Callable[..., Any]]:
    started: list[FakeVenue] = []

    async def start(case: VenueCase, port: int = 0) -> FakeVenue:
        venue = await FakeVenue(case, port).start()
        started.append(venue)
        return venue

    yield start
    for venue in started:
        await venue.stop()
