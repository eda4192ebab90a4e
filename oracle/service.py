"""The daemon's life: feeds > QuoteBook > tick loop (Pipeline) > Redis, with HTTP beside it.

    start: HTTP up, open disputes and last marks read back from Redis, feeds started
    every tick_ms, on the absolute grid of tick_ms (drift-correcting, as the replay harness ticks):
        renew or try the leader lease, run the pipeline, publish if we lead, hand the events to the
        dispute service (Redis, webhook, logs); the gauges are refreshed when /metrics is scraped
    stop (SIGTERM/SIGINT): stop taking quotes, one last tick and publish, release the lease, close
        sockets and the Redis pools; every step is bounded so the process exits within 5 seconds

Nothing in here computes a price: that is Pipeline's job, and the replay harness runs the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from disputes.api import dispute_routes
from disputes.model import Event
from disputes.notify import Notifier
from disputes.service import DisputeService
from disputes.store import DisputeStore
from feeds.adapter import QuoteBatch
from feeds.runner import FeedRunner, Restarts
from oracle.client import MarkReader
from oracle.clock import Clock, WallClock
from oracle.connection import redact
from oracle.http import build_app
from oracle.leader import LeaderLease, LeaseKeeper
from oracle.loop import name as loop_name
from oracle.metrics import Metrics
from oracle.models import Mark, PerpMark, Status
from oracle.pipeline import Pipeline
from oracle.publish import LastWritten, RedisPerpPublisher, RedisPublisher
from oracle.quotebook import QuoteBook
from oracle.reload import ConfigChange, load_for_reload, log_refused
from oracle.serving import HttpLimits, LimitedSite, limits_middleware, quiet_accept_errors
from oracle.settings import ConfigError, Settings
from oracle.signing import signer_from_settings
from oracle.validation.stage import DisputeStage
from oracle.validation.state import MarkColumns, MarkList, MarkTable

log = logging.getLogger("markd.service")

SYNC_EVERY_S = 1.0  # how often disputes opened or resolved on another replica are adopted


class Service:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        replica_id: str | None = None,
        config_path: str | None = None,  # what a reload (SIGHUP) rereads; None: reloads are refused
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock = clock or WallClock()
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = Metrics()
        for market in settings.markets:
            self.metrics.set_max_age(market, settings.policy_for(market).max_age_ms / 1000)
        self.book = QuoteBook.for_settings(settings)
        self.stage = DisputeStage(settings)
        self.pipeline = Pipeline(settings, self.book, self.metrics, self.stage)
        tick_s = settings.service.tick_ms / 1000
        self.publisher = RedisPublisher(
            settings.redis,
            self.metrics,
            self.clock,
            # Two ticks (plus the publisher's per-mark allowance): a publish shares the loop with the
            # next tick's pipeline (see _tick_once), and only a late answer from Redis may fail it.
            timeout_s=2 * tick_s,
            mark_gauges=False,
            signer=signer_from_settings(settings),
        )
        self.perp_publisher = RedisPerpPublisher(self.publisher)
        ttl_ms = lease_ttl_ms(settings)
        lease = LeaderLease(
            settings.redis, self.replica_id, ttl_ms, self.clock, metrics=self.metrics, timeout_s=min(tick_s, 0.5)
        )
        # Renewed from its own thread every tick (at most a quarter of the TTL); given up when the
        # tick loop has not ticked for 40 ticks (10 s at least): stuck, not merely slow (on a loaded
        # machine one tick of 5,000 markets took up to 8 s, and a leader that gives the lease up then
        # only hands a standby the same load).
        stall_s = max(40 * tick_s, 10.0)
        self.lease = LeaseKeeper(lease, self.clock, every_s=min(tick_s, ttl_ms / 4000), stall_s=stall_s)
        self.notifier = Notifier(settings.notify)
        self.disputes = DisputeService(
            self.stage,
            DisputeStore.from_settings(settings.redis, timeout_s=min(tick_s, 0.5)),  # never stalls a tick long
            self.clock,
            notifier=self.notifier,
            metrics=self.metrics,
        )
        self.leading = False
        self.http_port: int | None = None
        self._marks: Mapping[str, Mark] = {}  # this tick's mark per market (seq 0 until published)
        self._published = LastWritten()  # the last mark written per market, seq assigned
        self.perps: dict[str, PerpMark] = {}  # this tick's perp mark per perp market (GET /v1/marks)
        self._last_tick = 0.0  # time.monotonic() when the last tick completed
        self._last_sync = 0.0
        self._stopping = asyncio.Event()
        self._events: list[Event] = []  # the leader's dispute-stage events, for _record_events
        self._events_queued = asyncio.Event()
        self._publishing: asyncio.Task[None] | None = None  # the last tick's publish, while it runs
        self._recording = True
        self._taking_quotes = True
        self._http: web.AppRunner | None = None
        self._metrics_thread = ThreadPoolExecutor(1, thread_name_prefix="markd-metrics")
        self._rendering: asyncio.Future[bytes] | None = None  # the /metrics text being rendered
        self._feeds: FeedRunner | None = None
        self._reloads = 0  # reloads applied, for _forget_removed
        self._forgotten: list[tuple[int, set[str], set[tuple[str, str]]]] = []  # see _forget_removed
        self._forgotten_lock = threading.Lock()  # appended on the loop, taken on the metrics thread
        self._retiring: list[Mark] = []  # removed markets' last marks (status stale), for the next publish
        self._retiring_perps: list[PerpMark] = []  # the same for perp marks no longer computed
        self._reloading = asyncio.Lock()
        self._heap_frozen = False  # by run(), while it ticks: see freeze_heap
        self._reload_tasks: set[asyncio.Future[bool]] = set()

    # --- lifecycle ---
    async def run(self) -> None:
        """Run until stop(); always cleans up."""
        async with aiohttp.ClientSession() as session:
            feeds = self._feeds = FeedRunner(self.settings, session, self.clock, self.metrics, self._on_batch)
            await self._start_http()
            await self._restore()
            self.notifier.start(session)
            feed_task = asyncio.create_task(feeds.run(), name="markd-feeds")
            recorder = asyncio.create_task(self._record_events(), name="markd-dispute-events")
            log.info(
                "started",
                extra={
                    "replica": self.replica_id,
                    "redis": redact(self.settings.redis.url),
                    "markets": list(self.settings.markets),
                    "loop": loop_name(asyncio.get_running_loop()),  # uvloop when installed (oracle.loop)
                },
            )
            try:
                freeze_heap()
                self._heap_frozen = True
                await self._tick_loop()
            finally:
                await self._shutdown(feed_task, recorder)

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self, feed_task: asyncio.Task[Any], recorder: asyncio.Task[None]) -> None:
        self._taking_quotes = False  # the last mark is of the book as it stands now
        feed_task.cancel()
        await _bounded(lambda: _reap(feed_task), 1.0)
        await _bounded(self._tick_once, 1.0)
        self._recording = False  # the recorder writes what is queued, then ends
        self._events_queued.set()
        await _bounded(lambda: _reap(recorder), 1.0)
        steps: list[Callable[[], Awaitable[Any]]] = [
            self.lease.close,
            self.notifier.close,
            self.publisher.close,
            self.disputes.store.close,
        ]
        for step in steps:
            await _bounded(step, 0.5)
        if self._http is not None:
            await _bounded(self._http.cleanup, 1.0)
        self._metrics_thread.shutdown(wait=False, cancel_futures=True)
        if self._heap_frozen:  # in a process that goes on (tests, embedding), all is the collector's again
            gc.unfreeze()
            self._heap_frozen = False
        log.info("stopped", extra={"replica": self.replica_id})

    async def _start_http(self) -> None:
        svc = self.settings.service
        limits = HttpLimits(svc)  # no client may stop /healthz answering: see oracle.serving
        soft_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limits.descriptors_needed() + 64 > soft_nofile:  # 64: Redis, venues, logs
            log.warning(
                "http_max_connections_over_descriptor_limit",
                extra={"http_max_connections": limits.max_connections, "nofile": soft_nofile},
            )
        app = build_app(self, dispute_routes(self.disputes))
        app.middlewares.append(limits_middleware(limits))
        quiet_accept_errors(asyncio.get_running_loop())
        # shutdown_timeout on the runner: aiohttp deprecates it on the site (a DeprecationWarning).
        self._http = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, **limits.handler_args())
        await self._http.setup()
        site = LimitedSite(self._http, svc.http_host, svc.http_port, limits)
        await site.start()
        self.http_port = self._http.addresses[0][1] if self._http.addresses else svc.http_port
        log.info("http_listening", extra={"host": svc.http_host, "port": self.http_port})

    async def _restore(self) -> None:
        """Open disputes and the last published marks come back from Redis, so a restarted daemon
        holds a disputed market at the price it had. Redis down at start: begin without them."""
        reader = MarkReader(self.settings.redis, self.clock, timeout_s=1.0)
        try:
            stored = await reader.read_many(list(self.settings.markets))
            marks = [m for m in stored.values() if m is not None]
            restored = await asyncio.wait_for(self.disputes.restore(marks), 2.0)
            log.info("restored", extra={"marks": len(marks), "open_disputes": len(restored)})
        except Exception as exc:
            log.warning("not_restored", extra={"error": type(exc).__name__})
        finally:
            await reader.close()

    # --- the tick loop ---
    async def _tick_loop(self) -> None:
        while not self._stopping.is_set():
            period = self.settings.service.tick_ms / 1000  # a reload may change it
            try:
                await self._tick_once(overlap=True)
            except Exception:  # a bug must not kill the oracle; it is logged and counted by the gap
                log.exception("tick_failed")
            now = self.clock.now()
            await self._sleep_unless_stopped((math.floor(now / period) + 1) * period - now)  # to the grid

    async def _sleep_unless_stopped(self, delay: float) -> None:
        """Sleep `delay` seconds of the injected clock (a ScaledClock's are shorter), or until stop()."""
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        stopper = asyncio.ensure_future(self._stopping.wait())
        _, pending = await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _tick_once(self, *, overlap: bool = False) -> None:
        """One tick. With `overlap` (the tick loop) its publish is left running when it returns, and
        the next tick computes while Redis writes it: at 5,000 markets Redis takes about as long to
        run a tick's writes as the pipeline takes to compute them, and waiting for one before the
        other doubled the tick. Each tick still waits for the last one's publish before starting its
        own, so publishes never overlap one another and `seq` keeps its order."""
        was_leading, self.leading = self.leading, await self.lease.tick()
        now = self.clock.now()
        out = self.pipeline.tick(now)
        self._marks = out.marks.by_market()  # built one by one only when read
        self.perps = {p.market: p for p in out.perps}
        await self._publish_done()
        if self.leading:
            # A new leader writes every validated mark at once, not only those due: the margin engine
            # gets fresh marks at the takeover, and /readyz knows what Redis holds from the start.
            due = _columns(out.publish) if was_leading else _validated(out.marks)
            if self._retiring:  # after a reload removed markets: rare, so as Marks
                due = MarkColumns.of([*due.marks(), *self._retiring])
            self._retiring = []
            perps = out.perp_publish if was_leading else out.perps
            perps, self._retiring_perps = perps + self._retiring_perps, []
            task = self._publish(due, self.lease.token, perps)
            self._publishing = asyncio.create_task(task, name="markd-publish")
            if not overlap:
                await self._publish_done()
        else:
            self._retiring, self._retiring_perps = [], []  # the leader writes them (it reloads too)
        if out.events and self.leading:
            self._events += out.events
            self._events_queued.set()
        elif out.events:
            self._log_standby(out.events)
        if time.monotonic() - self._last_sync >= SYNC_EVERY_S:
            self._last_sync = time.monotonic()
            await self.disputes.sync()
        self._last_tick = time.monotonic()

    async def _publish(self, marks: MarkColumns, fence: int | None, perps: list[PerpMark] | None = None) -> None:
        written = await self.publisher.publish_columns(marks, fence=fence)  # never raises
        self._published.record(written)
        # After the marks: a perp never reaches Redis before the index it was computed on. Called with
        # none too: perp marks kept through an outage or a market's fault go out with the next publish.
        await self.perp_publisher.publish(perps or [], fence=fence)  # never raises

    async def _publish_done(self) -> None:
        task, self._publishing = self._publishing, None
        if task is not None:
            try:
                await task
            except Exception:  # publish() never raises; a bug here must not stop the ticks
                log.exception("publish_failed")

    async def _record_events(self) -> None:
        """The leader's dispute-stage events reach Redis, the webhook and the logs from here, in tick
        order, never from the tick itself: every market's first mark is a tier change, so at 5,000
        markets the first tick has 5,000 events, and waiting for their writes held the tick (and so
        the first marks, and the lease renewal) for many seconds."""
        while True:
            await self._events_queued.wait()
            self._events_queued.clear()
            while self._events:
                batch, self._events = self._events, []
                try:
                    await self.disputes.record(batch)
                except Exception:  # record() logs Redis failures itself; a bug must not end the task
                    log.exception("dispute_events_not_recorded", extra={"events": len(batch)})
            if not self._recording:
                return

    def _log_standby(self, events: list[Event]) -> None:
        # A standby computes the same events but leaves persisting and notifying to the leader.
        for event in events:
            log.debug(event.kind.value, extra={**event.log_fields(), "standby": True})

    async def render_metrics(self) -> bytes:
        """The /metrics text, with the marks' and quotes' gauges (ages included) set as of now.

        Set at each scrape rather than every tick (at 1,000 markets x 8 sources that is 13,000 gauge
        writes a tick, for values only a scrape reads), and, with the text, on a worker thread: at
        5,000 markets x 4 sources it is 75,000 series and seconds of Python, which on the loop held
        every tick that long. The loop only copies what the thread reads (two dicts and an array: a
        few ms). Scrapes that come while one renders share its text."""
        if self._rendering is None:
            state = self._metrics_state()
            rendering = asyncio.get_running_loop().run_in_executor(self._metrics_thread, self._render, *state)
            rendering.add_done_callback(self._rendered)
            self._rendering = rendering
        return await asyncio.shield(self._rendering)

    def _metrics_state(self) -> tuple[float, dict[str, Mark], Mapping[str, Mark], Any, list[tuple[str, str]], int]:
        """What _render reads, copied on the loop (the only part of a scrape the loop does). The book's
        keys go with its times, and the count of reloads with both: a reload replaces the book."""
        book = self.book
        copies = dict(self._marks), self._published.copy(), book.received_ts().copy(), book.keys
        return self.clock.now(), *copies, self._reloads

    def _rendered(self, _: object) -> None:
        self._rendering = None

    def _render(
        self,
        now: float,
        marks: dict[str, Mark],
        published: Mapping[str, Mark],
        received: Any,
        keys: list[tuple[str, str]],
        reloads: int,
    ) -> bytes:
        """On the metrics thread: nothing here may touch the service's live state, only its copies."""
        for market, mark in marks.items():
            stored = published.get(market)
            shown = stored if stored is not None and stored.status is mark.status else mark
            self.metrics.mark_published(shown, now)
        for (source, pair), ts in zip(keys, received.tolist(), strict=False):
            if ts == ts:  # not NaN: the source has quoted this pair
                self.metrics.set_quote_age(source, pair, max(0.0, now - ts))
        self._forget_removed(reloads)
        return self.metrics.render()

    def _forget_removed(self, reloads: int) -> None:
        """The gauges of what reloads removed are dropped by the first render whose copies were taken
        after the reload: one that began before it still holds the removed markets, and would set
        their gauges again after a drop done at the reload itself."""
        with self._forgotten_lock:
            due = [f for f in self._forgotten if f[0] <= reloads]
            self._forgotten = [f for f in self._forgotten if f[0] > reloads]
        for _, markets, slots in due:
            self.metrics.forget(markets, slots)

    def _on_batch(self, batch: QuoteBatch) -> None:
        """A venue frame's quotes, into the book in one write."""
        if self._taking_quotes:
            b = batch
            self.book.write_frame(
                b.source, b.pair, b.received_ts, b.price, b.bid, b.ask, b.venue_ts, b.confidence, b.last
            )

    # --- reloading the config (SIGHUP; oracle.reload) ---
    def request_reload(self) -> None:
        """From the SIGHUP handler (on the loop): reload in a task of its own, one at a time."""
        task = asyncio.ensure_future(self.reload())
        self._reload_tasks.add(task)  # held until done (the loop keeps only a weak reference)
        task.add_done_callback(self._reload_tasks.discard)

    async def reload(self) -> bool:
        """Reread the config file and apply it from the next tick; False (nothing changed) when it
        does not validate or changes what only a restart may. See DESIGN.md "Reloading the config"."""
        async with self._reloading:
            path = self.config_path
            try:
                if path is None:
                    raise ConfigError(["markd run was not started from a config file: nothing to reload"])
                # Reading and comparing the config are pure: on a worker thread, so the ticks go on
                # meanwhile (at 1,000 markets they take about a quarter of a second of CPU).
                new = await asyncio.to_thread(load_for_reload, path, self.settings)
                change = await asyncio.to_thread(ConfigChange.between, self.settings, new)
                restarts = await self._feeds.reconfigure(new) if self._feeds is not None else None
            except ConfigError as err:
                log_refused(path or "-", err)
                self.metrics.config_reloaded("error")
                return False
            except Exception:  # a bug: logged and counted, and the daemon goes on (on the old config)
                log.exception("config_reload_failed", extra={"path": path})
                self.metrics.config_reloaded("error")
                return False
            self._apply(new, change)
            self.metrics.config_reloaded("ok")
            log.info("config_reloaded", extra={"path": path, **change.log_fields(), **_restart_fields(restarts)})
            return True

    def _apply(self, new: Settings, change: ConfigChange) -> None:
        """Swap the new config in between two ticks (no await here: a tick never sees half of it)."""
        old_keys = set(self.book.keys)
        book = QuoteBook.for_settings(new)
        book.carry(self.book)
        self.stage.reconfigure(new)
        self.book = book
        pipeline = Pipeline(new, book, self.metrics, self.stage)
        pipeline.carry(self.pipeline)
        self.pipeline = pipeline
        self.notifier.reconfigure(new.notify)
        # A removed market gets one last write saying its mark is no longer maintained (one that never
        # validated a price has nothing in Redis to retire).
        last = [self._marks[m] for m in change.removed if m in self._marks]
        retiring = self._retiring + [replace(mark, status=Status.STALE) for mark in last if not math.isnan(mark.price)]
        self._retiring = [m for m in retiring if m.market not in new.markets]  # back before it was written
        self._retire_perps(new)
        self._marks = marks = dict(self._marks)
        for market in change.removed:
            marks.pop(market, None)
            self._published.forget(market)
        self._reloads += 1
        with self._forgotten_lock:  # dropped by the next render (_forget_removed); not what is back
            kept = [(n, ms - set(new.markets), ss - set(book.keys)) for n, ms, ss in self._forgotten]
            self._forgotten = [*kept, (self._reloads, set(change.removed), old_keys - set(book.keys))]
        for market in new.markets:
            self.metrics.set_max_age(market, new.policy_for(market).max_age_ms / 1000)
        logging.getLogger().setLevel(new.service.log_level)
        self.settings = new
        if self._heap_frozen:  # the new config's objects, as the first one's at start
            freeze_heap(young_only=True)

    def _retire_perps(self, new: Settings) -> None:
        """A perp mark no longer computed (its market removed, or its perp table) gets one last write
        with status `stale`, its last price kept and no components, as an unusable index gives it."""
        nan = math.nan
        gone = [p for m, p in self.perps.items() if not new.markets.get(m) or not new.markets[m].perp]
        retiring = self._retiring_perps + [replace(p, status=Status.STALE, c1=nan, c2=nan, c3=nan) for p in gone]
        perp_markets = {m for m, ms in new.markets.items() if ms.perp}
        self._retiring_perps = [p for p in retiring if p.market not in perp_markets]  # back before written
        for perp in gone:
            self.perps.pop(perp.market, None)

    # --- what HTTP reads ---
    def current_marks(self) -> dict[str, tuple[Mark, bool]]:
        """Each market's mark and whether it is the one in Redis: the last this replica wrote while it
        leads, else (a standby, Redis down, nothing written yet) the one computed here, unpublished."""
        out: dict[str, tuple[Mark, bool]] = {}
        for market, computed in self._marks.items():
            published = self._published.get(market) if self.leading else None
            out[market] = (computed, False) if published is None else (published, True)
        return out

    def current_perps(self) -> dict[str, PerpMark]:
        """Each perp market's perp mark of the last tick (shown beside its index in /v1/marks)."""
        return dict(self.perps)

    def liveness(self) -> tuple[bool, str]:
        if not self._last_tick:
            return False, "no tick yet"
        late = time.monotonic() - self._last_tick
        allowed = max(5 * self.settings.service.tick_ms / 1000, 2.0)
        return (True, "ticking") if late <= allowed else (False, f"no tick for {late:.1f}s")

    async def readiness(self) -> list[str]:
        """Why the margin engine could not use this oracle now (empty: ready). Every replica checks
        Redis answers and its own marks are validated within `max_age_ms`. The leader also checks
        what reached Redis: a write Redis refuses (OOM, a market's key of the wrong type, its perp
        mark's too) and a market whose mark in Redis is older than `max_age_ms` though a fresh one
        was computed. A standby writes nothing, so it answers for itself only: ready to take over."""
        reasons = [] if await self.publisher.ping(timeout_s=0.5) else ["redis: unreachable"]
        refused = self.publisher.refused if self.leading else None
        if refused:
            reasons.append(f"redis: {refused}")
        failing = self.publisher.market_errors if self.leading else {}
        now = self.clock.now()
        for market in self.settings.markets:
            mark = self._marks.get(market)
            max_age = self.settings.policy_for(market).max_age_ms / 1000
            if mark is None or math.isnan(mark.price):
                reasons.append(f"{market}: no validated mark")
            elif now - mark.ts > max_age:
                reasons.append(f"{market}: validated mark is {now - mark.ts:.1f}s old ({mark.status.value})")
            elif market in failing:
                reasons.append(f"{market}: not published: {failing[market]}")
            elif self.leading:
                stored = self._published.get(market)
                if stored is None:
                    reasons.append(f"{market}: no mark in Redis yet")
                elif now - stored.ts > max_age:
                    reasons.append(f"{market}: mark in Redis is {now - stored.ts:.1f}s old")
        perps_failing = self.perp_publisher.market_errors if self.leading else {}
        reasons += [f"{market}: perp mark not published: {why}" for market, why in sorted(perps_failing.items())]
        return reasons


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(service: Service, loop: asyncio.AbstractEventLoop) -> None:
    """Any number of SIGTERMs and SIGINTs, whenever they come, stop `service` once: exit 0.

    Stopping already bounds itself (5 s), so a second signal has nothing to add, and it must not
    end the process by that signal instead. `loop.add_signal_handler` cannot promise that: the
    loop's close resets its handlers to the default action, and so does Python's finalization for
    its own handlers. Hence a process-wide handler (installed before the loop runs, never removed)
    that blocks both signals in the main thread at the first one: a later one stays pending in the
    kernel until the process is gone. Switching to SIG_IGN there instead would race with a signal
    already caught but not yet handled ("Signal 15 ignored due to race condition" on stderr).
    Threads started earlier do not inherit the mask; a signal they catch runs this handler again,
    which is harmless, and `ignore_stop_signals` covers the last of them at exit.
    """

    def on_signal(signum: int, frame: object) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            if not loop.is_closed():
                loop.call_soon_threadsafe(service.stop)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)


def ignore_stop_signals() -> None:
    """After the loop is gone: nothing is left to stop, so the stop signals are ignored (blocked
    first, so that none is caught half-way through the switch)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def reload_on_sighup(service: Service, loop: asyncio.AbstractEventLoop) -> None:
    """SIGHUP rereads the config (installed before the loop runs; SIGHUP's default would end markd)."""

    def on_signal(signum: int, frame: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            if not loop.is_closed():
                loop.call_soon_threadsafe(service.request_reload)

    signal.signal(signal.SIGHUP, on_signal)


def _columns(marks: Sequence[Mark]) -> MarkColumns:
    """The pipeline's marks due (a MarkList: read as columns, no Mark built) as columns."""
    return marks.columns() if isinstance(marks, MarkList) else MarkColumns.of(marks)


def _validated(table: MarkTable) -> MarkColumns:
    """Every mark of the tick with a validated price (what a new leader writes at once)."""
    every = table.columns(range(len(table)))
    return every.take(np.flatnonzero(~np.isnan(every.price)))


def freeze_heap(*, young_only: bool = False) -> None:
    """Take every object alive now out of the cyclic collector's scans (gc.freeze): the config, the
    plans, the book and the rest of what the daemon builds to run, ~100,000 objects at 1,000 markets.
    Each full collection scanned them all with the event loop stopped: in bench/latency.py one every
    few seconds, 90-150 ms each (marks that late), 1.1 s of CPU in 40 s; with them frozen, 2-15 ms.
    They live as long as the daemon or, replaced by a reload, are freed by reference counting (they
    hold no cycles). The garbage is collected first, so none is frozen with them: all of it at start,
    the young generations' only at a reload (a full collection would stop the ticks, as above)."""
    gc.collect(1 if young_only else 2)
    gc.freeze()


def _restart_fields(restarts: Restarts | None) -> dict[str, list[str]]:
    if restarts is None:
        return {}
    return {
        "sources_started": list(restarts.started),
        "sources_stopped": list(restarts.stopped),
        "sources_restarted": list(restarts.restarted),
    }


def lease_ttl_ms(settings: Settings) -> int:
    """Long enough to ride out a slow tick, short enough that a standby takes over within 3 s."""
    return max(1000, min(2000, 8 * settings.service.tick_ms))


async def _reap(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _bounded(step: Callable[[], Awaitable[Any]], seconds: float) -> None:
    try:
        await asyncio.wait_for(step(), seconds)
    except Exception as exc:  # shutdown goes on whatever one step does
        log.warning(
            "shutdown_step_failed",
            extra={"step": getattr(step, "__qualname__", "?"), "error": type(exc).__name__},
        )
