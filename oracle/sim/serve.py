"""`markd sim`: the simulated venues alone, on the loopback ports config/demo.toml names.

    markd sim &                                            # venues on 127.0.0.1:18101-18112
    MARKD_REDIS_URL=redis://127.0.0.1:6379/0 markd run --config config/demo.toml

The same venues as `markd demo` (real paths and wire formats, one seeded random walk), without the
daemon, the Redis or the view, so `markd run`, `markd record` or any other client can be pointed at
them. Calm: no scripted incident and no outages. Runs until SIGINT/SIGTERM, or for `seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TextIO
from urllib.parse import urlsplit

from oracle.sim.demo import PLACEHOLDER_URLS
from oracle.sim.venues import SimVenues

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class SimError(Exception):
    """The venues cannot start (a port is taken): one line for the user."""


def demo_ports() -> dict[str, int]:
    """Each venue's port in config/demo.toml (its REST and WebSocket URLs share it)."""
    return {venue: int(urlsplit(urls["rest"]).port or 0) for venue, urls in PLACEHOLDER_URLS.items()}


async def serve_sim(seconds: float | None, seed: int, out: TextIO = sys.stdout) -> None:
    """Serve until a stop signal, or `seconds`; raises SimError when a port is taken."""
    ports = demo_ports()
    sim = SimVenues(seed=seed, ports=ports, venues=list(ports))  # only the venues the config reads
    try:
        urls = await sim.start()
    except OSError as exc:
        taken = ", ".join(str(p) for p in sorted(ports.values()))
        raise SimError(f"cannot listen on 127.0.0.1 ports {taken}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        for venue, venue_urls in urls.items():
            print(f"{venue:<10} {'  '.join(venue_urls.values())}", file=out)
        print("ready: markd run --config config/demo.toml (Ctrl-C stops the venues)", file=out, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await sim.stop()
