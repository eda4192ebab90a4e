"""The shared transport: a REST poller and a WebSocket client that both yield raw `Frame`s.

Adapters never open sockets; they hand their requests or subscriptions to one of these, over the
process's one aiohttp ClientSession. This is the only module that knows aiohttp's exceptions: they
are mapped here, once, to the TransportError tree of feeds.errors. Retrying is the caller's job
(feeds.runner), helped by `Backoff`; these iterators raise and stop on the first venue failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import aiohttp

from feeds.adapter import Request
from feeds.errors import ConnectError, FeedTimeout, HttpError, RateLimited, TransportError
from oracle.clock import Clock

__all__ = ["Backoff", "Frame", "RestPoller", "WsClient", "parse_retry_after"]

# Binance answers 418 to a client that ignored its 429s: the same "slow down", only louder.
_RATE_LIMIT_STATUSES = frozenset({418, 429})


@dataclass(frozen=True, slots=True)
class Frame:
    """One raw message and when we received it. `error` marks a request the venue refused."""

    body: str | bytes
    received_ts: float
    pairs: tuple[str, ...] = ()
    error: HttpError | None = None


class Backoff:
    """Exponential backoff with 'equal jitter': half the step is fixed, half random."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self, retry_after: float | None = None) -> float:
        step = min(self.max_s, self.initial_s * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        delay = step / 2 + self._rng.uniform(0, step / 2)
        # A venue's Retry-After is a floor: retrying sooner only extends a ban.
        return max(delay, retry_after or 0.0)

    def reset(self) -> None:
        self._failures = 0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _mapped(exc: BaseException, what: str, now: float) -> TransportError:
    """The one place low-level errors become ours."""
    if isinstance(exc, TimeoutError):  # asyncio's and aiohttp's timeouts are both TimeoutErrors
        return FeedTimeout(f"{what}: no answer in time")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return _status_error(exc.status, exc.headers.get("Retry-After") if exc.headers else None, now)
    return ConnectError(f"{what}: {type(exc).__name__}: {exc}")


def _status_error(status: int, retry_after: str | None, now: float) -> HttpError:
    if status in _RATE_LIMIT_STATUSES:
        return RateLimited(status, parse_retry_after(retry_after, now))
    return HttpError(status)


_LOW_LEVEL = (aiohttp.ClientError, OSError, TimeoutError)


class RestPoller:
    """Runs a venue's requests every `poll_s`, yielding each answer as a Frame.

    A 4xx other than a rate limit concerns one request (an unknown product), so it is yielded as
    an error Frame and the poll goes on; timeouts, refusals, 5xx and rate limits concern the venue,
    so they are raised.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        requests: Sequence[Request],
        clock: Clock,
        *,
        poll_s: float,
        timeout_s: float,
    ) -> None:
        self.session = session
        self.requests = list(requests)
        self.clock = clock
        self.poll_s = poll_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def frames(self) -> AsyncGenerator[Frame, None]:
        while True:
            started = self.clock.now()
            for request in self.requests:
                yield await self.fetch(request)
            await self.clock.sleep(self.poll_s - (self.clock.now() - started))

    async def fetch(self, request: Request) -> Frame:
        method = "GET" if request.json is None else "POST"
        try:
            async with self.session.request(
                method, request.url, params=list(request.params), json=request.json, timeout=self.timeout
            ) as resp:
                body = await resp.read()
        except _LOW_LEVEL as exc:
            raise _mapped(exc, request.url, self.clock.now()) from exc
        received = self.clock.now()
        if resp.status < 400:
            return Frame(body, received, request.pairs)
        error = _status_error(resp.status, resp.headers.get("Retry-After"), received)
        if error.code == "http_4xx":
            return Frame(body, received, request.pairs, error)
        raise error


class WsClient:
    """One WebSocket connection: connect, subscribe, yield every text or binary message.

    Raises ConnectError when the venue closes, FeedTimeout when nothing arrives for `silence_s`
    (the silence watchdog). Sends `ping_text` every `ping_s` for venues that want an
    application-level ping (OKX), swallowing its `pong_text` answers, and leaves protocol pings
    to aiohttp's `heartbeat`.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        clock: Clock,
        *,
        subscriptions: Sequence[str] = (),
        timeout_s: float,
        silence_s: float,
        heartbeat_s: float | None = None,
        ping_text: str | None = None,
        pong_text: str | None = None,
        ping_s: float = 20.0,
    ) -> None:
        self.session = session
        self.url = url
        self.clock = clock
        self.subscriptions = list(subscriptions)
        self.timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=timeout_s)
        self.connect_timeout = timeout_s
        self.silence_s = silence_s
        self.heartbeat_s = heartbeat_s
        self.ping_text = ping_text
        self.pong_text = pong_text
        self.ping_s = ping_s

    async def frames(self) -> AsyncGenerator[Frame, None]:
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await self.session.ws_connect(self.url, timeout=self.timeout, heartbeat=self.heartbeat_s)
        except _LOW_LEVEL as exc:
            raise _mapped(exc, self.url, self.clock.now()) from exc
        pinger = asyncio.create_task(self._ping(ws)) if self.ping_text else None
        try:
            for message in self.subscriptions:
                await ws.send_str(message)
            while True:
                yield await self._receive(ws)
        except _LOW_LEVEL as exc:
            raise _mapped(exc, self.url, self.clock.now()) from exc
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pinger
            await ws.close()

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> Frame:
        try:
            async with asyncio.timeout(self.silence_s):
                msg = await ws.receive()
                # The answer to our own ping proves the socket, not the feed: it does not reset
                # the watchdog, and no parser sees it.
                while self.pong_text is not None and msg.data == self.pong_text:
                    msg = await ws.receive()
        except TimeoutError:
            raise FeedTimeout(f"{self.url}: silent for {self.silence_s}s") from None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return Frame(msg.data, self.clock.now())  # a stream names its pairs itself
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise ConnectError(f"{self.url}: {ws.exception()}")
        raise ConnectError(f"{self.url}: closed by the venue ({ws.close_code})")

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self.ping_text is not None
        while not ws.closed:
            await self.clock.sleep(self.ping_s)
            with contextlib.suppress(*_LOW_LEVEL):  # a dead socket shows up in the receive loop
                await ws.send_str(self.ping_text)
