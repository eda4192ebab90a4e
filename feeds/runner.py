"""The feed runner: one supervised task per configured source, feeding quotes to a callback.

    runner = FeedRunner(settings, session, clock, metrics, on_batch)
    await runner.run()          # until cancelled; cancellation closes every connection

Each source serves the (pair, SourceRef) entries that the markets' tiers name for it. Its task
loops: open the transport, parse every frame, hand each frame's quotes (one QuoteBatch of columns)
to `on_batch`; on a failure count its code, mark the source down, back off (honouring Retry-After)
and start again. Nothing but cancellation leaves a source task. Big frames are parsed in a worker
process (feeds.parsing), so no venue can hold the event loop; only a connection that stays healthy
resets its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import aiohttp

from feeds.adapter import Adapter, QuoteBatch
from feeds.errors import TransportError
from feeds.parsing import FrameParser
from feeds.registry import adapter_class
from feeds.transport import Frame, RestPoller, WsClient
from oracle.backoff import Backoff
from oracle.clock import Clock
from oracle.metrics import Metrics
from oracle.settings import ConfigError, Settings, SourceRef, SourceSettings

__all__ = ["FeedRunner", "SourceFeed", "build_adapters", "refs_by_source"]

log = logging.getLogger(__name__)

OnBatch = Callable[[QuoteBatch], None]  # a frame's quotes as columns (feeds.adapter.QuoteBatch)


def refs_by_source(settings: Settings) -> dict[str, list[SourceRef]]:
    """The entries each source must serve, from every tier and perp table of every market, one per pair."""
    out: dict[str, dict[str, SourceRef]] = {}
    for market in settings.markets.values():
        for ref in market.feed_refs:
            out.setdefault(ref.source, {}).setdefault(ref.pair, ref)
    return {source: list(refs.values()) for source, refs in out.items()}


def build_adapters(settings: Settings) -> dict[str, Adapter]:
    """One adapter per source that some market uses; ConfigError names every source that cannot be."""
    adapters: dict[str, Adapter] = {}
    problems: list[str] = []
    for name, refs in refs_by_source(settings).items():
        conf = settings.sources[name]
        try:
            adapters[name] = adapter_class(conf.kind)(name, refs, conf.base_url, conf.transport, conf.product)
        except ValueError as exc:
            problems.append(f"sources.{name}: {exc}")
    if problems:
        raise ConfigError(problems)
    return adapters


class SourceFeed:
    """The supervised life of one source."""

    def __init__(
        self,
        adapter: Adapter,
        conf: SourceSettings,
        session: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics,
        on_batch: OnBatch,
        *,
        backoff: Backoff,
        silence_polls: float,
        parser: FrameParser | None = None,
    ) -> None:
        self.adapter = adapter
        self.name = adapter.source
        self.conf = conf
        self.session = session
        self.clock = clock
        self.metrics = metrics
        self.on_batch = on_batch
        self.backoff = backoff
        self.silence_polls = silence_polls
        self.parser = parser or FrameParser()

    def transport(self) -> RestPoller | WsClient:
        a, poll_s, timeout_s = self.adapter, self.conf.poll_ms / 1000, self.conf.timeout_ms / 1000
        if a.transport == "rest":
            return RestPoller(
                self.session,
                a.requests(),
                self.clock,
                poll_s=poll_s,
                timeout_s=timeout_s,
                max_body_bytes=self.conf.max_body_bytes,
            )
        return WsClient(
            self.session,
            a.ws_endpoint(),
            self.clock,
            subscriptions=a.subscriptions(),
            timeout_s=timeout_s,
            silence_s=self.silence_polls * poll_s,
            heartbeat_s=a.ws_heartbeat_s,
            ping_text=a.ws_ping,
            pong_text=a.ws_pong,
            ping_s=a.ws_ping_s,
            max_body_bytes=self.conf.max_body_bytes,
        )

    async def run(self) -> None:
        self.metrics.set_source_up(self.name, False)
        try:
            while True:
                await self.clock.sleep(await self._attempt())
        finally:
            self.metrics.set_source_up(self.name, False)

    async def _attempt(self) -> float:
        """One connection (or polling run) until it fails; returns how long to wait before the next."""
        retry_after = None
        try:
            async with contextlib.aclosing(self.transport().frames()) as frames:
                async for frame in frames:
                    await self._handle(frame)
        except TransportError as exc:
            log.warning("source %s: %s (%s)", self.name, exc.code, exc)
            self._error(exc.code)
            retry_after = exc.retry_after
        except Exception:
            log.exception("source %s: unexpected failure", self.name)
            self._error("internal")
        self.metrics.set_source_up(self.name, False)
        return self.backoff.next(retry_after)

    async def _handle(self, frame: Frame) -> None:
        if frame.error is not None:
            log.info("source %s: %s for %s", self.name, frame.error, ",".join(frame.pairs))
            self._error(frame.error.code)
            return
        result = await self.parser.parse(self.adapter, frame)
        for error in result.errors:
            log.debug("source %s: %s %s: %s", self.name, error.code, error.pair or "frame", error.detail)
            self._error(error.code)
        if result.batch is not None:
            self.metrics.quote_received(self.name, len(result.batch))
            self._deliver(result.batch)
            # Only quotes prove recovery, and only a steady flow of them: a venue that sends one good
            # quote per connection and then drops us must keep backing off (see Backoff.healthy).
            self.backoff.healthy(frame.received_ts)
            self.metrics.set_source_up(self.name, True)
        elif any(e.pair is None for e in result.errors):
            self.metrics.set_source_up(self.name, False)  # the whole frame was unusable

    def _deliver(self, batch: QuoteBatch) -> None:
        try:
            self.on_batch(batch)
        except Exception:  # the consumer's bug must not take the feed down
            log.exception("source %s: on_batch failed for %s", self.name, ",".join(batch.pair[:5]))
            self._error("internal")

    def _error(self, code: str) -> None:
        self.metrics.source_error(self.name, code)


class FeedRunner:
    """Every configured source, each in its own supervised task.

    `backoff_initial_s`/`backoff_max_s` bound the retry delays, and a source's failures are forgotten
    after `backoff_healthy_s` of good quotes without one; `silence_polls` × poll_ms without a
    WebSocket frame counts as a dead connection. Raises ConfigError at construction for a source
    its adapter cannot serve (a WebSocket for a REST-only venue, http_json without base_url).
    """

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        clock: Clock,
        metrics: Metrics,
        on_batch: OnBatch,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        backoff_healthy_s: float = 10.0,
        silence_polls: float = 20,
        rng: random.Random | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.parser = FrameParser()  # one worker process for every source's big frames
        self.feeds = [
            SourceFeed(
                adapter,
                settings.sources[name],
                session,
                clock,
                metrics,
                on_batch,
                backoff=Backoff(
                    backoff_initial_s, backoff_max_s, random.Random(rng.random()), healthy_s=backoff_healthy_s
                ),
                silence_polls=silence_polls,
                parser=self.parser,
            )
            for name, adapter in build_adapters(settings).items()
        ]

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for feed in self.feeds:
                    group.create_task(feed.run(), name=f"feed:{feed.name}")
        finally:
            self.parser.close()
