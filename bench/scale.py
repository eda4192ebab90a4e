"""Does the daemon keep its tick at scale while Prometheus scrapes it? 5,000 markets x 4 sources.

    .venv/bin/python bench/scale.py [--markets 5000] [--sources 4] [--tick-ms 250] [--seconds 60]
                                    [--scrape-s 5]

`markd run` (a subprocess) polls 4 `http_json` sources from one local server, each one JSON document
of every market's price moving by a little noise at each poll, so every market is re-marked and
published on every tick. This process scrapes `/metrics` every `--scrape-s` seconds, as Prometheus
would, and measures:

- the longest gap between two ticks, in ticks. One more market, `TICK-USD`, follows a source of its
  own (`clk`, polled every 50 ms) whose price rises a little at each poll, so the daemon publishes a
  new mark of it at every tick; its marks' `ts_ms` (the tick's time) arrive on its `updates` channel.
  A gap of 1 is a perfect grid; 2 means one tick was skipped.
- lease losses: the lone daemon takes the lease once; each loss and retake increments the epoch key.
- publish errors (`markd_publish_errors_total`) and the scrape's duration and size;
- the daemon's CPU (utime+stime over the window, /proc) and RSS; when its first mark reached Redis;
  how much of the window its loop's thread was runnable but waited for a CPU (the machine's load);
- in this process, after the run: a scrape's work at this size on the loop (`scrape_loop_ms`), on
  the worker thread (`scrape_thread_ms`), and the old way, all on the loop (`scrape_before_ms`).

Prints a final JSON line; `targets_met` is max gap <= 2 ticks with no lease loss.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oracle.clock import WallClock  # noqa: E402
from oracle.models import Mark, Quote, Status  # noqa: E402
from oracle.service import Service  # noqa: E402
from oracle.settings import Settings  # noqa: E402
from oracle.sim.demo import to_toml  # noqa: E402
from oracle.testing import RedisServer, free_port  # noqa: E402

PREFIX = "scale"
CLOCK_MARKET = "TICK-USD"
NOISE = 1e-4  # 1 bps per poll: every mark changes, no jump guard


class Feed:
    """The local server: /s{i} is source i's document of every market's price; /clk the clock's."""

    def __init__(self, markets: list[str], seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.base = 10.0 + self.rng.random(len(markets)) * 1000.0
        self.names = [f'"{m}":' for m in markets]
        self.clock_price = 100.0

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["source"] == "clk":
            self.clock_price += 0.0001  # 0.01 bps a poll
            body = f'{{"{CLOCK_MARKET}":{self.clock_price!r}}}'
        else:
            prices = self.base * (1.0 + NOISE * self.rng.standard_normal(len(self.base)))
            body = "{" + ",".join(n + repr(p) for n, p in zip(self.names, prices.tolist(), strict=True)) + "}"
        return web.Response(body=body.encode(), content_type="application/json")


def config(markets: list[str], sources: list[str], url: str, redis_url: str, port: int, tick_ms: int) -> dict:
    feeds: dict[str, Any] = {
        s: {"kind": "http_json", "base_url": f"{url}/{s}", "poll_ms": tick_ms, "timeout_ms": 2000} for s in sources
    }
    feeds["clk"] = {"kind": "http_json", "base_url": f"{url}/clk", "poll_ms": 50, "timeout_ms": 1000}
    every = {m: {"sources": [{"source": s, "pair": m, "path": m} for s in sources]} for m in markets}
    every[CLOCK_MARKET] = {"sources": [{"source": "clk", "pair": CLOCK_MARKET, "path": CLOCK_MARKET}], "min_sources": 1}
    return {
        "service": {"tick_ms": tick_ms, "http_host": "127.0.0.1", "http_port": port, "log_level": "WARNING"},
        "redis": {"url": redis_url, "prefix": PREFIX, "history_maxlen": 100},
        "policy": {"min_sources": 3, "max_age_ms": 5000, "max_deviation_bps": 150},
        "sources": feeds,
        "markets": every,
    }


def scrape_cost(n_markets: int, n_sources: int) -> dict[str, float]:
    """In this process, a scrape's work for a daemon of this size (its Service, no I/O): the part on
    the event loop (copying what the thread reads), the worker thread's (setting the gauges and
    rendering, steady state), and, for comparison, the same gauges as prometheus_client children
    set and rendered by generate_latest, which is what the loop did at each scrape before."""
    markets = [f"M{i:04d}-USD" for i in range(n_markets)]
    sources = [f"s{i}" for i in range(n_sources)]
    settings = Settings.model_validate(
        {
            "redis": {"url": "redis://127.0.0.1:1/0"},  # never connected to: no tick runs here
            "sources": {s: {"kind": "coinbase"} for s in sources},
            "markets": {m: {"sources": [{"source": s, "pair": m} for s in sources]} for m in markets},
        }
    )
    service = Service(settings, clock=WallClock(), replica_id="bench")
    now = time.time()
    for m in markets:
        for s in sources:
            service.book.update(Quote(s, m, 100.0, now))
    marks = {m: Mark(m, 100.0 + i, 0.01, now, 1 + i, Status.OK, 1, tuple(sources)) for i, m in enumerate(markets)}
    service._marks = service._published = marks

    def timed(fn: Any) -> tuple[float, Any]:
        started = time.perf_counter()
        out = fn()
        return (time.perf_counter() - started) * 1000.0, out

    loop_ms, state = timed(service._metrics_state)
    timed(lambda: service._render(*state))  # the first render builds every series' line prefix
    thread_ms, text = timed(lambda: service._render(*service._metrics_state()))
    registry = CollectorRegistry()
    gauges = {
        name: Gauge(name, "x", labels, registry=registry)
        for name, labels in (
            ("markd_mark_price", ["market"]),
            ("markd_mark_confidence", ["market"]),
            ("markd_mark_age_seconds", ["market"]),
            ("markd_mark_sources", ["market"]),
            ("markd_mark_seq", ["market"]),
            ("markd_mark_max_age_seconds", ["market"]),
            ("markd_mark_status", ["market", "status"]),
            ("markd_quote_age_seconds", ["source", "pair"]),
        )
    }

    def old_scrape() -> bytes:
        for mark in marks.values():
            for name in ("price", "confidence", "age_seconds", "sources", "seq", "max_age_seconds"):
                gauges[f"markd_mark_{name}"].labels(mark.market).set(1.0)
            for status in Status:
                gauges["markd_mark_status"].labels(mark.market, status.value).set(1.0)
        for s, m in service.book.keys:
            gauges["markd_quote_age_seconds"].labels(s, m).set(0.1)
        return generate_latest(registry)

    timed(old_scrape)  # the first one creates the children
    old_ms, _ = timed(old_scrape)
    return {
        "scrape_loop_ms": round(loop_ms, 1),
        "scrape_thread_ms": round(thread_ms, 1),
        "scrape_before_ms": round(old_ms, 1),
        "scrape_text_bytes": len(text),
    }


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def run_delay_s(pid: int) -> float:
    """Seconds the daemon's main thread (its event loop) spent runnable but waiting for a CPU
    (/proc/PID/schedstat): on a shared machine, the time it was starved rather than slow."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def tick_times(redis: Redis, into: list[int]) -> None:
    """The `ts_ms` of every TICK-USD mark, as published."""
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{PREFIX}:{{{CLOCK_MARKET}}}:updates")
    try:
        async for message in pubsub.listen():
            if message["type"] == "message":
                into.append(int(json.loads(message["data"])["ts_ms"]))
    finally:
        await pubsub.aclose()


async def scrapes(url: str, every_s: float, into: list[tuple[float, int, float]]) -> None:
    """GET /metrics every `every_s`: (seconds it took, bytes, markd_publish_errors_total)."""
    async with aiohttp.ClientSession() as session:
        while True:
            await asyncio.sleep(every_s)
            started = time.monotonic()
            async with session.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=30)) as resp:
                body = await resp.read()
            took = time.monotonic() - started
            # One line by regex: parsing 8 MB of text here would stall this process's feed server.
            found = re.search(rb"^markd_publish_errors_total (\S+)$", body, re.M)
            into.append((took, len(body), float(found.group(1)) if found else 0.0))


async def first_marks(redis: Redis, markets: list[str], daemon: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Until every market has a mark in Redis; returns when the first one arrived (s since now).
    One EXISTS of every key a poll, counted by Redis: this process also serves the feed."""
    started = time.monotonic()
    first: float | None = None
    keys = [f"{PREFIX}:{{{m}}}:mark" for m in markets]
    present = 0
    while time.monotonic() - started < timeout_s:
        if daemon.poll() is not None:
            raise SystemExit(f"markd exited with {daemon.returncode} while starting")
        with contextlib.suppress(Exception):
            present = int(await redis.exists(*keys))
            if first is None and present:
                first = time.monotonic() - started
            if present == len(keys):
                assert first is not None
                return first
        await asyncio.sleep(0.1)
    raise SystemExit(f"{len(keys) - present} markets had no mark after {timeout_s} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    markets = [f"M{i:04d}-USD" for i in range(args.markets)]
    sources = [f"s{i}" for i in range(args.sources)]
    feed = Feed(markets)
    app = web.Application()
    app.router.add_get("/{source}", feed.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    feed_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", feed_port).start()

    redis_server = RedisServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="markd-scale-"))
    conf = workdir / "markd.toml"
    http_port = free_port()
    url = f"http://127.0.0.1:{feed_port}"
    conf.write_text(to_toml(config(markets, sources, url, redis_server.url, http_port, args.tick_ms)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKD_")}
    log_path = workdir / "markd.log"
    stderr = log_path.open("wb")
    redis = Redis.from_url(redis_server.url)
    ticks: list[int] = []
    scraped: list[tuple[float, int, float]] = []
    tasks = [asyncio.create_task(tick_times(redis, ticks))]
    started = time.monotonic()
    cmd = [sys.executable, "-m", "oracle", "run", "--config", str(conf)]
    daemon = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=stderr)
    try:
        first_s = await first_marks(redis, [*markets, CLOCK_MARKET], daemon, args.warmup)
        all_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # past the first ticks' one-off work
        epoch0 = int(await redis.get(f"{PREFIX}:{{leader}}:epoch") or 0)
        tasks.append(asyncio.create_task(scrapes(f"http://127.0.0.1:{http_port}", args.scrape_s, scraped)))
        del ticks[:]
        cpu0, wait0, t0 = cpu_ticks(daemon.pid), run_delay_s(daemon.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, wait1, t1 = cpu_ticks(daemon.pid), run_delay_s(daemon.pid), time.monotonic()
        rss = rss_mb(daemon.pid)
        epoch1 = int(await redis.get(f"{PREFIX}:{{leader}}:epoch") or 0)
        if daemon.poll() is not None:
            raise SystemExit(f"markd exited with {daemon.returncode}: {log_path.read_text()[-2000:]}")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        stderr.close()
        await redis.aclose()
        redis_server.stop()
        await runner.cleanup()
    log = log_path.read_text(errors="replace")
    shutil.rmtree(workdir)
    if len(ticks) < 2 or not scraped:
        raise SystemExit("no TICK-USD marks or no scrape in the window")
    gaps = np.diff(np.array(ticks)) / args.tick_ms
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "max_tick_gap_ticks": round(float(gaps.max()), 2),
        "ticks_late": int((gaps > 1.5).sum()),  # gaps of 2 ticks or more
        "ticks": len(ticks),
        "lease_losses": epoch1 - epoch0,
        "stopped_leading_lines": sum("stops leading" in line and "released" not in line for line in log.splitlines()),
        "publish_errors": scraped[-1][2] - scraped[0][2],
        "scrape_max_s": round(max(s[0] for s in scraped), 3),
        "scrape_bytes": scraped[-1][1],
        "scrapes": len(scraped),
        "cpu_pct": round(100.0 * (cpu1 - cpu0) / hz / (t1 - t0), 1),
        "loop_waiting_for_cpu_pct": round(100.0 * (wait1 - wait0) / (t1 - t0), 1),
        "rss_mb": round(rss, 1),
        "first_mark_s": round(first_s, 2),
        "all_marks_s": round(all_s, 2),
        "markets": args.markets,
        "sources": args.sources,
        "tick_ms": args.tick_ms,
        "seconds": args.seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--markets", type=int, default=5000)
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--tick-ms", type=int, default=250)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--scrape-s", type=float, default=5.0, help="seconds between two /metrics scrapes")
    p.add_argument("--warmup", type=float, default=90.0, help="seconds allowed for every market's first mark")
    args = p.parse_args()
    result = {**asyncio.run(run(args)), **scrape_cost(args.markets, args.sources)}
    ok = result["max_tick_gap_ticks"] <= 2 and result["lease_losses"] == 0
    print(json.dumps({**result, "targets_met": ok}))


if __name__ == "__main__":
    main()
