"""A recorded session of the daemon and its replay publish the same marks.

The daemon's own tick path (`Service._tick_once`: lease, Pipeline, publish) runs on a VirtualClock
that advances to each instant of its tick grid the way its tick loop computes it. Quotes reach it
through its quote callback, as the feed runner delivers them, and a TicksWriter records each one as
`markd record` does. Redis is replaced at its seams: a MemorySink as publisher, a lease that always
leads, a dispute service that keeps nothing. The replay of the recorded file, tick by tick and chunked
(oracle.replay.chunked), must publish the same (market, price, confidence, status, tier, sources, seq)
sequence.
"""

from __future__ import annotations

import asyncio
import csv
import math
from pathlib import Path
from typing import Any

from feeds.adapter import QuoteBatch
from oracle.clock import VirtualClock
from oracle.models import Mark, Quote
from oracle.publish import MemorySink
from oracle.replay.attacks import Attack, apply_attacks
from oracle.replay.chunked import CHUNK_TICKS
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

    assert len(live) > 60
    for chunk in (1, 7, CHUNK_TICKS, None):  # tick by tick through the book, many ticks a pass, the default
        replayed = replay(settings, read_ticks(path), chunk=chunk)
        assert _fields(replayed.published) == _fields(live), chunk


# --- the perp mark: the own book's bid, ask and last reach c2 in replay exactly as live ------------

PERP_CONFIG = {
    "service": {"tick_ms": 250},
    "policy": {"max_age_ms": 3000},
    "sources": {
        **{s: {"kind": "coinbase"} for s in ("a", "b", "c")},
        "venue": {"kind": "http_json", "base_url": "http://127.0.0.1:1/book.json"},
        "x1": {"kind": "binance", "product": "perp"},
    },
    "markets": {
        "BTC-USD": {
            "sources": [{"source": s, "pair": "BTC-USD"} for s in ("a", "b", "c")],
            "perp": {
                "book": {"source": "venue", "pair": "BTC-PERP", "bid_path": "b", "ask_path": "a", "last_path": "l"},
                "external": [{"source": "x1", "pair": "BTC-USDT"}],
                "ema_s": 30,
            },
        }
    },
}


def _perp_session_frames():
    """(source, received_ts, rows) as the venues' parsers give them: spot books, an external perp's
    book, and the own book's frames, some a book with its last trade and some a last trade alone
    (an http_json book whose answer had no sides), its last off the mid so c2 shows which it read."""
    import random

    rng = random.Random(5)
    frames = []
    for step in range(240):
        t = 1_700_000_000.1 + step * 0.37
        p = 30_000.0 * (1 + 0.002 * math.sin(step / 25))
        source = ("a", "b", "c", "x1", "venue")[step % 5]
        if source == "venue":
            last = p * (1.004 + rng.uniform(-0.002, 0.002))
            if step % 3 == 0:  # a last trade alone
                frames.append((source, t, ("BTC-PERP", None, None, last, None, None)))
            else:
                frames.append((source, t, ("BTC-PERP", p * 0.9995, p * 1.0015, last, None, None)))
        else:
            pair = "BTC-USDT" if source == "x1" else "BTC-USD"
            q = p * (1 + rng.uniform(-3e-4, 3e-4)) * (1.002 if source == "x1" else 1.0)
            frames.append((source, t, (pair, q * 0.9999, q * 1.0001, None, None, None)))
    return frames


class _PerpSink:
    async def publish(self, perps, *, fence=None):
        return list(perps)


async def _live_perps(settings: Settings, path: Path) -> list[tuple[float, Any]]:
    from feeds.adapter import check_rows

    frames = _perp_session_frames()
    clock = VirtualClock(frames[0][1])
    service = Service(settings, clock=clock, replica_id="test")
    service.publisher, service.lease, service.disputes = MemorySink(), _Leader(), _NoDisputeStore()  # type: ignore[assignment]
    service.perp_publisher = _PerpSink()  # type: ignore[assignment]
    period = settings.service.tick_ms / 1000
    perps = []
    with TicksWriter(path, clock) as recorder:
        i = 0
        while i < len(frames):
            tick_at = (math.floor(clock.now() / period) + 1) * period
            while i < len(frames) and frames[i][1] <= tick_at:
                source, ts, row = frames[i]
                clock.set(ts)
                batch, errors = check_rows(source, ts, [row])  # the live parser's checks and prices
                assert not errors
                for quote in batch.quotes():
                    recorder.write(quote)
                service._on_batch(batch)
                i += 1
            if i == len(frames):
                break
            clock.set(tick_at)
            await service._tick_once()
            perps += [(tick_at, p) for p in service.perps.values()]
    return perps


def _perp_fields(perps):
    def num(x):
        return None if math.isnan(x) else x

    return [(t, p.market, p.price, p.index, num(p.c1), num(p.c2), num(p.c3), p.status) for t, p in perps]


def test_the_perp_marks_of_a_recorded_session_and_its_replay_are_the_same(tmp_path):
    """The recorded file has a `last` on every own-book row; a file that leaves it empty where a row
    has no book (as `markd synth` and hand-written files do) replays the same: such a row's price is
    its last trade, as live."""
    settings = Settings.model_validate(PERP_CONFIG)
    path = tmp_path / "session.csv"
    live = asyncio.run(_live_perps(settings, path))
    c2 = [p.c2 for _, p in live]
    assert len(live) > 300 and len({round(x, 6) for x in c2}) > 40  # c2 moved with each own-book frame

    recorded = read_ticks(path)
    for chunk in (1, 7, CHUNK_TICKS, None):
        assert _perp_fields(replay(settings, recorded, chunk=chunk).perps) == _perp_fields(live), chunk

    blank, rows = tmp_path / "blank.csv", 0
    with path.open(newline="") as src, blank.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, list(reader.fieldnames or []))
        writer.writeheader()
        for row in reader:
            if row["source"] == "venue" and not row["bid"]:  # the own book's last-only rows
                row["last"], rows = "", rows + 1
            writer.writerow(row)
    assert rows > 10
    assert _perp_fields(replay(settings, read_ticks(blank)).perps) == _perp_fields(live)
