"""A recorded session of the daemon and its replay publish the same marks.

The daemon's own tick path (`Service._tick_once`: lease, Pipeline, publish) runs on a VirtualClock
that advances to each instant of its tick grid the way its tick loop computes it. Quotes reach it
through its quote callback, as the feed runner delivers them, and a TicksWriter records each one as
`markd record` does. Redis is replaced at its seams: a MemorySink as publisher, a lease that always
leads, a dispute service that keeps nothing. The replay of the recorded file must publish the same
(market, price, confidence, status, tier, sources, seq) sequence.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from feeds.adapter import QuoteBatch
from oracle.clock import VirtualClock
from oracle.models import Mark, Quote
from oracle.publish import MemorySink
from oracle.replay.attacks import Attack, apply_attacks
from oracle.replay.run import replay
from oracle.service import Service
from oracle.settings import Settings
from oracle.sim.synth import synth_columns
from oracle.ticks import TicksWriter, read_ticks


class _Leader:
    token = 1

    async def tick(self) -> bool:
        return True


class _NoDisputeStore:
    async def record(self, events: Any) -> None:
        return None

    async def sync(self) -> None:
        return None


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "service": {"tick_ms": 250},
            "policy": {"max_jump_bps": 300, "dispute_window_ms": 2000, "heartbeat_ms": 1000},
            "sources": {"coinbase": {"kind": "coinbase"}, "kraken": {"kind": "kraken"}, "okx": {"kind": "okx"}},
            "markets": {
                "BTC-USD": {
                    "sources": [
                        {"source": "coinbase", "pair": "BTC-USD"},
                        {"source": "kraken", "pair": "BTC-USD"},
                        {"source": "okx", "pair": "BTC-USD"},
                    ]
                }
            },
        }
    )


def _session_quotes():
    ticks = synth_columns({"BTC-USD": 30000.0}, ["coinbase", "kraken", "okx"], 60, 0.3, seed=11)
    jump = Attack(
        kind="spike", sources=["coinbase", "kraken", "okx"], pair="BTC-USD", start_s=20, duration_s=10, magnitude=0.05
    )  # every venue +5 %: the jump guard holds, then validates
    ticks = apply_attacks(ticks, [jump])
    for i in range(len(ticks)):
        source, pair = ticks.keys[ticks.feed[i]]
        yield source, pair, float(ticks.ts[i]), float(ticks.price[i]), float(ticks.bid[i]), float(ticks.ask[i])


def _fields(marks):
    return [(m.market, m.price, m.confidence, m.status, m.tier, m.sources, m.seq) for m in marks]


async def _live_session(settings: Settings, path: Path) -> list[Mark]:
    quotes = list(_session_quotes())
    clock = VirtualClock(quotes[0][2])
    service = Service(settings, clock=clock, replica_id="test")
    sink = MemorySink()
    service.publisher, service.lease, service.disputes = sink, _Leader(), _NoDisputeStore()  # type: ignore[assignment]
    period = settings.service.tick_ms / 1000
    with TicksWriter(path, clock) as recorder:
        i = 0
        while i < len(quotes):
            tick_at = (math.floor(clock.now() / period) + 1) * period  # as Service._tick_loop computes it
            while i < len(quotes) and quotes[i][2] <= tick_at:
                source, pair, ts, price, bid, ask = quotes[i]
                clock.set(ts)
                quote = Quote(source, pair, price, ts, bid, ask)
                recorder.write(quote)
                (batch,) = QuoteBatch.of([quote])  # one frame of one quote, as a WebSocket push
                service._on_batch(batch)
                i += 1
            if i == len(quotes):
                break  # the replay's grid ends at the last quote
            clock.set(tick_at)
            await service._tick_once()
    return sink.history


def test_a_recorded_session_and_its_replay_publish_the_same_marks(tmp_path):
    settings = _settings()
    path = tmp_path / "session.csv"
    live = asyncio.run(_live_session(settings, path))
    statuses = {m.status.value for m in live}
    assert {"ok", "held"} <= statuses, statuses  # the session saw the jump guard at work

    replayed = replay(settings, read_ticks(path))
    assert len(live) > 60
    assert _fields(replayed.published) == _fields(live)
