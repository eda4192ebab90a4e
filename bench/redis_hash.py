"""The redis_hash source, polled versus woken by keyspace notifications: latency from the engine's
HSET to the quote in the QuoteBook, and CPU per engine update.

    .venv/bin/python bench/redis_hash.py [--pairs 1000] [--rate 10] [--seconds 10] [--polls 50,100,250]

The engine: a separate process (its CPU is not ours) that writes every pair's hash `--rate` times a
second (1,000 pairs x 10/s = 10,000 HSETs/s), in slices every 10 ms so the writes are spread as a
busy matching engine's are; each write's `ts_ms` is the writer's wall time (fractional ms) at the
HSET. One private redis-server, started with `notify-keyspace-events Kh` (an operator's setting:
markd itself never runs CONFIG SET).

The readers, each for `--seconds` after a warm-up, on this process's event loop:
- `poll N ms`: markd's own path, a FeedRunner with one redis_hash source (one pipelined HMGET per key
  per poll) whose frames are written into a QuoteBook exactly as the Service does;
- `notify`: the alternative, a prototype here only: PSUBSCRIBE to `__keyspace@0__:book:*`, and for
  every batch of notifications waiting, one pipelined HMGET of the keys they name, through the same
  RedisHash parse and QuoteBook write.
Latency = the wall time when the frame is in the book minus the hash's `ts_ms`, over every (pair,
ts_ms) seen for the first time (one clock, no skew). CPU: this process's CPU time (time.process_time,
the parse kept inline so no worker process hides any of it) and the redis-server's (utime + stime
from /proc), each divided by the engine's updates in the window. Prints a JSON line per reader,
then one line of every reader's p50, p99 and CPU per update.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import redis
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feeds.adapter import QuoteBatch
from feeds.redis_hash import FIELDS, RedisHash
from feeds.runner import FeedRunner
from oracle.clock import WallClock
from oracle.metrics import Metrics
from oracle.quotebook import QuoteBook
from oracle.settings import Settings
from oracle.testing import RedisServer

SLICE_S = 0.01  # the engine writes a slice of its pairs every 10 ms


def pair_names(n: int) -> list[str]:
    return [f"M{i:04d}-USD" for i in range(n)]


def engine(url: str, pairs: int, rate: float, stop: Any, written: Any) -> None:
    """The matching engine: every pair's book rewritten `rate` times a second, spread over slices."""
    client = redis.Redis.from_url(url)
    names = pair_names(pairs)
    slices = max(1, round(1 / (rate * SLICE_S)))
    rng = np.random.default_rng(1)
    mids = 100 * np.exp(rng.normal(size=pairs))
    step, k = 0, 0
    next_at = time.monotonic()
    while not stop.is_set():
        chunk = range(k * pairs // slices, (k + 1) * pairs // slices)
        pipe = client.pipeline(transaction=False)
        for i in chunk:
            mid = float(mids[i]) * (1 + 1e-4 * ((step + i) % 7))
            ts_ms = time.time() * 1000
            pipe.hset(f"book:{names[i]}", mapping={"bid": mid - 0.01, "ask": mid + 0.01, "last": mid, "ts_ms": ts_ms})
        pipe.execute()
        with written.get_lock():
            written.value += len(chunk)
        k = (k + 1) % slices
        step += k == 0
        next_at += SLICE_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    client.close()


def settings(url: str, pairs: int, poll_ms: int) -> Settings:
    """Every pair a one-source market of the redis_hash source `engine` (the bench needs no perp table)."""
    source = {"kind": "redis_hash", "base_url": url, "poll_ms": poll_ms, "timeout_ms": 2000}
    markets = {
        p: {"sources": [{"source": "engine", "pair": p, "key": f"book:{p}", "heartbeat_s": 60}], "min_sources": 1}
        for p in pair_names(pairs)
    }
    return Settings.model_validate({"sources": {"engine": source}, "markets": markets})


class Sink:
    """The QuoteBook write of every frame, and the latency of every quote it sees for the first time."""

    def __init__(self, conf: Settings) -> None:
        self.book = QuoteBook.for_settings(conf)
        names = list(conf.markets)
        self.index = {p: i for i, p in enumerate(names)}
        self.last_ts = np.full(len(names), np.nan)
        self.latencies: list[np.ndarray] = []
        self.recording = False
        self._idx: dict[tuple[str, ...], np.ndarray] = {}

    def __call__(self, b: QuoteBatch) -> None:
        self.book.write_frame(b.source, b.pair, b.received_ts, b.price, b.bid, b.ask, b.venue_ts, b.confidence, b.last)
        in_book = time.time()
        idx = self._idx.get(b.pair)
        if idx is None:
            idx = self._idx[b.pair] = np.array([self.index[p] for p in b.pair])
        new = b.venue_ts != self.last_ts[idx]
        self.last_ts[idx] = b.venue_ts
        if self.recording and new.any():
            self.latencies.append(in_book - b.venue_ts[new])


async def poll_reader(conf: Settings, sink: Sink, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        runner = FeedRunner(conf, session, WallClock(), Metrics(), sink)
        runner.parser.inline_bytes = 1 << 30  # parse on this process, where its CPU is counted
        task = asyncio.create_task(runner.run())
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def notify_reader(conf: Settings, sink: Sink, stop: asyncio.Event) -> None:
    """The keyspace-notification alternative: woken by each HSET, then one HMGET per key notified."""
    url = str(conf.sources["engine"].base_url)
    refs = [r for m in conf.markets.values() for r in m.sources]
    adapter = RedisHash("engine", refs, url)
    pair_of = {key: pair for pair, key in adapter.keys.items()}
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    prefix = "__keyspace@0__:"
    await pubsub.psubscribe(f"{prefix}book:*")
    try:
        while not stop.is_set():
            message = await pubsub.get_message(timeout=0.1)
            if message is None:
                continue
            keys = {message["channel"][len(prefix) :]}
            for _ in range(len(pair_of)):  # what is waiting, at most one pass's worth (it never drains at 10k/s)
                if (message := await pubsub.get_message(timeout=0.0)) is None:
                    break
                keys.add(message["channel"][len(prefix) :])
            ordered = list(keys)
            async with client.pipeline(transaction=False) as pipe:
                for key in ordered:
                    pipe.hmget(key, list(FIELDS))
                replies = await pipe.execute()
            result = adapter.parse(msgspec.json.encode(replies), time.time(), tuple(pair_of[k] for k in ordered))
            if result.batch is not None:
                sink(result.batch)
    finally:
        await pubsub.aclose()
        await client.aclose()


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    name: str, reader: Callable[..., Any], conf: Settings, server: RedisServer, written: Any, args: argparse.Namespace
) -> dict[str, Any]:
    sink, stop = Sink(conf), asyncio.Event()
    task = asyncio.create_task(reader(conf, sink, stop))
    await asyncio.sleep(args.warmup)
    assert server.proc is not None
    cpu0, srv0, n0, wall0 = time.process_time(), server_cpu_s(server.proc.pid), written.value, time.monotonic()
    sink.recording = True
    await asyncio.sleep(args.seconds)
    sink.recording = False
    cpu1, srv1, n1, wall1 = time.process_time(), server_cpu_s(server.proc.pid), written.value, time.monotonic()
    stop.set()
    await task
    lat = np.concatenate(sink.latencies) * 1000 if sink.latencies else np.array([np.nan])
    updates = n1 - n0
    return {
        "reader": name,
        "updates_per_s": round(updates / (wall1 - wall0)),
        "quotes_seen": int(lat.size),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "cpu_us_per_update": round((cpu1 - cpu0) / updates * 1e6, 2),
        "redis_cpu_us_per_update": round((srv1 - srv0) / updates * 1e6, 2),
        "cpu_pct": round((cpu1 - cpu0) / (wall1 - wall0) * 100, 1),
    }


async def main_async(args: argparse.Namespace) -> None:
    server = RedisServer(extra=("--notify-keyspace-events", "Kh")).start()
    stop, written = multiprocessing.Event(), multiprocessing.Value("q", 0)
    writer = multiprocessing.Process(target=engine, args=(server.url, args.pairs, args.rate, stop, written))
    writer.start()
    try:
        readers: list[tuple[str, Callable[..., Any], Settings]] = [
            (f"poll {ms} ms", poll_reader, settings(server.url, args.pairs, ms)) for ms in args.polls
        ]
        readers.append(("notify", notify_reader, settings(server.url, args.pairs, 100)))
        results = {}
        for name, reader, conf in readers:
            results[name] = await measure(name, reader, conf, server, written, args)
            print(json.dumps(results[name]), flush=True)
        print(
            json.dumps(
                {name: {k: r[k] for k in ("p50_ms", "p99_ms", "cpu_us_per_update")} for name, r in results.items()}
            )
        )
    finally:
        stop.set()
        writer.join(10)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="updates per pair per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per reader")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--polls", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 250])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
