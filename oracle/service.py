"""The daemon's life: feeds > QuoteBook > tick loop (Pipeline) > Redis, with HTTP beside it.

    start: HTTP up, Redis connected (retrying in the background), feeds started
    every tick_ms (drift-correcting): renew or try the leader lease, run the pipeline, publish if we
        lead, refresh the gauges, hand events to the log, the dispute store and the webhook
    stop (SIGTERM/SIGINT): stop taking quotes, one last tick and publish, close sockets and the
        Redis pool; the whole shutdown is bounded so the process exits 0 within 5 seconds

Nothing in here computes a price: that is Pipeline's job, and the replay harness runs the same one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from disputes.api import dispute_routes
from disputes.notify import Notifier
from disputes.stage import DisputeStage
from disputes.store import DisputeStore
from feeds.runner import FeedRunner
from oracle.clock import Clock, WallClock
from oracle.http import build_app
from oracle.leader import LeaderLease
from oracle.metrics import Metrics
from oracle.models import Mark, Quote
from oracle.pipeline import Pipeline, TickOutput
from oracle.publish import RedisPublisher
from oracle.quotebook import QuoteBook
from oracle.settings import Settings

log = logging.getLogger("markd.service")

SHUTDOWN_BUDGET_S = 4.0  # leaves a margin inside the 5 s the contract allows


class Service:
    def __init__(self, settings: Settings, clock: Clock | None = None, replica_id: str | None = None) -> None:
        self.settings = settings
        self.clock = clock or WallClock()
        self.replica_id = replica_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = Metrics()
        self.book = QuoteBook.for_settings(settings)
        self.stage = DisputeStage(settings)
        self.pipeline = Pipeline(settings, self.book, self.metrics, self.stage)
        self.publisher = RedisPublisher(settings.redis, self.metrics, self.clock)
        self.lease = LeaderLease(
            settings.redis, self.replica_id, ttl_ms=_lease_ttl_ms(settings), clock=self.clock
        )
        self.store = DisputeStore(settings.redis, self.clock)
        self.notifier = Notifier(settings.notify)
        self.leading = False
        self._marks: dict[str, Mark] = {}
        self._published: dict[str, Mark] = {}
        self._last_tick = 0.0  # time.monotonic() of the last completed tick
        self._stopping = asyncio.Event()
        self._http: web.AppRunner | None = None
        self.http_port: int | None = None

    # --- lifecycle ---
    async def run(self) -> None:
        """Run until stop(); always cleans up."""
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            feeds = FeedRunner(self.settings, session, self.clock, self.metrics, self._on_quote)
            await self._start_http()
            await self.publisher.start()
            await self._restore_disputes()
            self.notifier.start(session)
            feed_task = asyncio.create_task(feeds.run(), name="feeds")
            log.info("started", extra={"replica": self.replica_id, "markets": list(self.settings.markets)})
            try:
                await self._tick_loop()
            finally:
                await self._shutdown(feed_task)

    def stop(self) -> None:
        self._stopping.set()

    async def _shutdown(self, feed_task: asyncio.Task[Any]) -> None:
        feed_task.cancel()  # stop taking quotes first, so the last mark is of a frozen book
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(feed_task, 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._tick_once(), 1.0)
        for step in (self.lease.release, self.notifier.close, self.publisher.close, self.store.close):
            await _bounded(step, 0.5)
        if self._http is not None:
            await _bounded(self._http.cleanup, 1.0)
        log.info("stopped", extra={"replica": self.replica_id})

    async def _start_http(self) -> None:
        svc = self.settings.service
        app = build_app(self, dispute_routes(self))
        self._http = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._http.setup()
        site = web.TCPSite(self._http, svc.http_host, svc.http_port, shutdown_timeout=0.5)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else svc.http_port
        log.info("http_listening", extra={"host": svc.http_host, "port": self.http_port})

    async def _restore_disputes(self) -> None:
        try:
            self.stage.restore(await asyncio.wait_for(self.store.load_open(), 2.0))
        except Exception as exc:  # Redis down at start: disputes come back when the store does
            log.warning("disputes_not_restored", extra={"error": type(exc).__name__})

    # --- the tick loop ---
    async def _tick_loop(self) -> None:
        period = self.settings.service.tick_ms / 1000
        next_at = time.monotonic()
        while not self._stopping.is_set():
            try:
                await self._tick_once()
            except Exception:
                log.exception("tick_failed")
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: skip the missed ticks instead of bursting to catch up
                next_at = time.monotonic()
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _tick_once(self) -> None:
        budget = self.settings.service.tick_ms / 1000
        self.leading = await self.lease.tick()
        self.metrics.set_leader(self.leading)
        now = self.clock.now()
        out = self.pipeline.tick(now)
        self._marks = {m.market: m for m in out.marks}
        if self.leading:
            started = time.perf_counter()
            written = await self.publisher.publish(out.publish, fence=self.lease.token, timeout_s=budget)
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
            self._published.update({m.market: m for m in written})
        self._handle_events(out)
        self._refresh_gauges(now)
        self._last_tick = time.monotonic()

    def _handle_events(self, out: TickOutput) -> None:
        for event in out.events:
            log.info(event.kind, extra=event.log_fields())
            self.notifier.send(event)
            if self.leading:
                self.store.record(event)

    def _refresh_gauges(self, now: float) -> None:
        for market, mark in self._marks.items():
            shown = self._published.get(market, mark)
            self.metrics.mark_published(shown if shown.seq else mark, now)
        for market, n in self.stage.open_counts().items():
            self.metrics.set_disputes_open(market, n)
        for source, pair in self.book.keys:
            q = self.book.latest(source, pair)
            if q is not None:
                self.metrics.set_quote_age(source, pair, max(0.0, now - q.received_ts))

    def _on_quote(self, quote: Quote) -> None:
        if not self._stopping.is_set():
            self.book.update(quote)

    # --- what HTTP reads ---
    def current_marks(self) -> dict[str, Mark]:
        return {**self._marks, **self._published} if self.leading else dict(self._marks)

    def liveness(self) -> tuple[bool, str]:
        period = self.settings.service.tick_ms / 1000
        late = time.monotonic() - self._last_tick
        if self._last_tick and late <= max(5 * period, 2.0):
            return True, "ticking"
        return False, f"no tick for {late:.1f}s" if self._last_tick else "not started"

    async def readiness(self) -> list[str]:
        reasons = []
        if not await self.publisher.ping(timeout_s=0.5):
            reasons.append("redis unreachable")
        now = self.clock.now()
        for market in self.settings.markets:
            mark = self._marks.get(market)
            max_age = self.settings.policy_for(market).max_age_ms / 1000
            if mark is None or (mark.seq == 0 and not mark.price == mark.price):
                reasons.append(f"{market}: no validated mark")
            elif now - mark.ts > max_age:
                reasons.append(f"{market}: validated mark is {now - mark.ts:.1f}s old")
        return reasons


def _lease_ttl_ms(settings: Settings) -> int:
    """Long enough to survive a slow tick, short enough for a standby to take over within 3 s."""
    return max(1000, min(2000, 8 * settings.service.tick_ms))


async def _bounded(step: Callable[[], Awaitable[Any]], seconds: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(step(), seconds)
