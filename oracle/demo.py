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
from oracle.testing import RedisServer

REFRESH_S = 0.5
OUTAGE_EVERY_S = 15.0
OUTAGE_KINDS = ("refuse", "503", "silent")


async def run_demo(seconds: float | None, out: TextIO = sys.stdout, seed: int | None = None) -> int:
    configure_logs("WARNING")
    rng = random.Random(seed)
    given = os.environ.get("MARKD_REDIS_URL")
    redis = None if given else RedisServer().start()
    redis_url = redis.url if redis is not None else str(given)
    sim = SimVenues(seed=rng.randrange(1 << 30))
    try:
        urls = await sim.start()
        settings = parse_settings(demo_config(urls, redis_url, http_port=0))
        await _show(settings, sim, seconds, out, rng)
    finally:
        await sim.stop()
        if redis is not None:
            redis.stop()
    return 0


async def _show(settings: Settings, sim: SimVenues, seconds: float | None, out: TextIO, rng: random.Random) -> None:
    service = Service(settings, replica_id="demo")
    task = asyncio.create_task(service.run(), name="markd-daemon")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        service.stop()
        await task
        await reader.close()
    if not tty:  # a log or a pipe gets the final table once, not a stream of redraws
        out.write(table + "\n")
    else:
        out.write("\n")
    out.flush()
