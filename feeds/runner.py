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
from dataclasses import dataclass

import aiohttp

from feeds.adapter import Adapter, QuoteBatch
from feeds.errors import TransportError
from feeds.parsing import FrameParser
from feeds.redis_hash import FIELDS, RedisHash
from feeds.registry import adapter_class
from feeds.transport import Frame, RedisHashPoller, RestPoller, WsClient
from oracle.backoff import Backoff
from oracle.clock import Clock
from oracle.metrics import Metrics
from oracle.settings import ConfigError, Settings, SourceRef, SourceSettings

__all__ = ["FeedRunner", "Restarts", "SourceFeed", "build_adapters", "refs_by_source", "source_signatures"]

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

    def transport(self) -> RestPoller | WsClient | RedisHashPoller:
        a, poll_s, timeout_s = self.adapter, self.conf.poll_ms / 1000, self.conf.timeout_ms / 1000
        if isinstance(a, RedisHash):  # the one source read from Redis, not over HTTP
            pairs = tuple(a.keys)
            keys = [a.keys[p] for p in pairs]
            return RedisHashPoller(a.base_url, keys, pairs, FIELDS, self.clock, poll_s=poll_s, timeout_s=timeout_s)
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
    `reconfigure` (a config reload) restarts only the sources whose entry or pairs changed.
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
        self.session, self.clock, self.metrics, self.on_batch = session, clock, metrics, on_batch
        self._backoff = (backoff_initial_s, backoff_max_s, backoff_healthy_s)
        self.silence_polls = silence_polls
        self.rng = rng or random.Random()
        self.parser = FrameParser()  # one worker process for every source's big frames
        self.feeds: list[SourceFeed] = []
        self._signatures: dict[str, SourceSignature] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._build(settings, build_adapters(settings), set(refs_by_source(settings)))

    def _feed(self, adapter: Adapter, conf: SourceSettings) -> SourceFeed:
        initial, most, healthy = self._backoff
        return SourceFeed(
            adapter,
            conf,
            self.session,
            self.clock,
            self.metrics,
            self.on_batch,
            backoff=Backoff(initial, most, random.Random(self.rng.random()), healthy_s=healthy),
            silence_polls=self.silence_polls,
            parser=self.parser,
        )

    def _build(self, settings: Settings, adapters: dict[str, Adapter], names: set[str]) -> None:
        """(Re)create the feeds of `names` from `adapters`; the others are kept as they are."""
        kept = [f for f in self.feeds if f.name not in names]
        fresh = [self._feed(adapters[n], settings.sources[n]) for n in adapters if n in names]
        self.feeds = kept + fresh
        self._signatures = source_signatures(settings)

    async def run(self) -> None:
        """Until cancelled; cancellation stops every source and the parser."""
        self._running = True
        try:
            for feed in self.feeds:
                self._start(feed)
            await asyncio.Event().wait()  # the sources run in their own tasks
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.parser.close()

    def _start(self, feed: SourceFeed) -> None:
        self._tasks[feed.name] = asyncio.create_task(feed.run(), name=f"feed:{feed.name}")

    async def reconfigure(self, settings: Settings) -> Restarts:
        """Bring the sources in line with `settings`: a source no market uses any more stops, a new
        one starts, and one whose config entry or served pairs changed reconnects; every other
        source keeps its connection. Raises ConfigError (changing nothing) for an unservable source."""
        new = source_signatures(settings)
        adapters = build_adapters(settings)  # first: an error here must leave every feed running
        old = self._signatures
        changes = Restarts(
            started=tuple(sorted(set(new) - set(old))),
            stopped=tuple(sorted(set(old) - set(new))),
            restarted=tuple(sorted(n for n in set(new) & set(old) if new[n] != old[n])),
        )
        going = set(changes.stopped) | set(changes.restarted)
        tasks = [self._tasks.pop(n) for n in going if n in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.feeds = [f for f in self.feeds if f.name not in set(changes.stopped)]
        self._build(settings, adapters, set(changes.started) | set(changes.restarted))
        if self._running:
            for feed in self.feeds:
                if feed.name not in self._tasks:
                    self._start(feed)
        return changes


@dataclass(frozen=True)
class Restarts:
    """What a FeedRunner.reconfigure did to the sources, by name."""

    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()


# What a source's connection depends on: its config entry and what its adapter reads of each entry it
# serves (the pair and how the venue names it), not what a market does with the quotes (convert, weight).
SourceSignature = tuple[SourceSettings, frozenset[tuple[object, ...]]]


def source_signatures(settings: Settings) -> dict[str, SourceSignature]:
    return {
        name: (
            settings.sources[name],
            frozenset(
                (r.pair, r.id, r.address, r.decimals, r.heartbeat_s, r.path, r.bid_path, r.ask_path, r.last_path, r.key)
                for r in refs
            ),
        )
        for name, refs in refs_by_source(settings).items()
    }
