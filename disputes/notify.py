"""Webhook notifications of dispute and tier events, off the tick loop.

`send()` only puts the event on a bounded queue and returns: a slow or dead receiver must never
delay a tick. A task drains the queue, POSTing each event as JSON with retries and exponential
backoff. When the queue is full the *oldest* event is dropped (the newest says more about the
market's state now), counted in `dropped` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

import aiohttp

from disputes.model import NOTIFIED, Event, EventKind
from oracle.backoff import Backoff
from oracle.settings import NotifySettings

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000


class Notifier:
    """`start()` inside the running loop, `await close()` at the end. A no-op when `[notify] url` is empty."""

    def __init__(
        self,
        settings: NotifySettings,
        *,
        queue_size: int = QUEUE_SIZE,
        backoff_s: float = 0.25,
        max_backoff_s: float = 10.0,
        kinds: Collection[EventKind] = NOTIFIED,
    ) -> None:
        self.url = settings.url
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_ms / 1000.0)
        self.max_retries = settings.max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.kinds = frozenset(kinds)
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._owned = False
        self._started = False  # start() was called: a reload that sets a url starts delivering
        self._offered: aiohttp.ClientSession | None = None  # the session start() was given
        self.sent = 0
        self.failed = 0  # events given up on after every retry
        self.dropped = 0  # events pushed out of a full queue

    def reconfigure(self, settings: NotifySettings) -> None:
        """A reloaded `[notify]`: the next delivery uses it (the queue is kept; an empty url stops
        queueing new events, and the queued ones are still tried)."""
        self.url = settings.url
        self.timeout = aiohttp.ClientTimeout(total=settings.timeout_ms / 1000.0)
        self.max_retries = settings.max_retries
        if self._started and self._task is None:  # off at start, on now
            self.start(self._offered)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def send(self, event: Event) -> None:
        """Queue `event` for delivery; never blocks, never raises."""
        if not self.enabled or event.kind not in self.kinds:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("notify_dropped", extra={"dropped": self.dropped})
        self._queue.put_nowait(event)

    def start(self, session: aiohttp.ClientSession | None = None) -> None:
        """Start the delivery task; `session` is borrowed (left open), else one is made and owned."""
        self._started, self._offered = True, session
        if self.enabled and self._task is None:
            self._owned = session is None
            self._session = session or aiohttp.ClientSession()
            self._task = asyncio.create_task(self._drain(), name="markd-notify")

    async def flush(self) -> None:
        """Wait until every queued event was delivered or given up on (tests, shutdown)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None and self._owned:
            await self._session.close()
        self._session = None

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: Event) -> None:
        body = event.to_json()
        backoff = Backoff(self.backoff_s, self.max_backoff_s)  # per event: each starts afresh
        for attempt in range(self.max_retries + 1):
            if await self._post(body):
                self.sent += 1
                return
            if attempt < self.max_retries:
                await asyncio.sleep(backoff.next())
        self.failed += 1
        log.warning("notify_failed", extra={"kind": event.kind.value, "market": event.market})

    async def _post(self, body: str) -> bool:
        assert self._session is not None
        try:
            headers = {"Content-Type": "application/json"}
            async with self._session.post(self.url, data=body, headers=headers, timeout=self.timeout) as resp:
                if resp.status < 300:
                    return True
                log.info("notify_retry", extra={"status": resp.status})
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("notify_retry", extra={"error": type(exc).__name__})
        return False
