"""The shared transport: a REST poller and a WebSocket client that both yield raw `Frame`s, and the
Redis hash poller of the `redis_hash` source (the operator's own matching engine).

Adapters never open sockets; they hand their requests or subscriptions to one of these, over the
process's one aiohttp ClientSession (the Redis poller opens its own client to the engine's Redis).
This is the only module that knows aiohttp's and redis-py's exceptions: they are mapped here, once,
to the TransportError tree of feeds.errors. Retrying is the caller's job
(feeds.runner), helped by `Backoff`; these iterators raise and stop on the first venue failure.

Both read at most `max_body_bytes` per REST answer or WebSocket message (TooLarge beyond it, before
the rest arrives): a venue that answers 50 MB must cost us a few MB of memory, not the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import redis.exceptions
from redis.asyncio import Redis

from feeds.adapter import Request
from feeds.errors import ConnectError, FeedTimeout, HttpError, RateLimited, TooLarge, TransportError
from oracle.backoff import Backoff
from oracle.clock import Clock
from oracle.connection import connect, redact
from oracle.settings import RedisSettings

__all__ = ["Backoff", "Frame", "RedisHashPoller", "RestPoller", "WsClient", "parse_retry_after"]

# Binance answers 418 to a client that ignored its 429s: the same "slow down", only louder.
_RATE_LIMIT_STATUSES = frozenset({418, 429})


@dataclass(frozen=True, slots=True)
class Frame:
    """One raw message and when we received it. `error` marks a request the venue refused."""

    body: str | bytes
    received_ts: float
    pairs: tuple[str, ...] = ()
    error: HttpError | None = None


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

DEFAULT_MAX_BODY = 4 * 1024 * 1024  # as SourceSettings.max_body_bytes
_CHUNK = 64 * 1024


def _too_large(what: str, limit: int) -> TooLarge:
    return TooLarge(f"{what} is over max_body_bytes ({limit} bytes); dropped unread")


async def _read_capped(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The body, or TooLarge as soon as it passes `limit` (from Content-Length when the venue sends
    one, else while reading: a chunked body has none). Counts decoded bytes, so gzip cannot hide
    a bomb."""
    if resp.content_length is not None and resp.content_length > limit:
        raise _too_large(f"{what}: an answer of {resp.content_length} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(f"{what}: the answer", limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.session = session
        self.requests = list(requests)
        self.clock = clock
        self.poll_s = poll_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_body_bytes = max_body_bytes

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
                body = await _read_capped(resp, self.max_body_bytes, request.url)
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
        max_body_bytes: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.session = session
        self.url = url
        self.max_body_bytes = max_body_bytes
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
                ws = await self.session.ws_connect(
                    self.url, timeout=self.timeout, heartbeat=self.heartbeat_s, max_msg_size=self.max_body_bytes
                )
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
            raise self._failure(msg.data if isinstance(msg.data, BaseException) else ws.exception())
        raise ConnectError(f"{self.url}: closed by the venue ({ws.close_code})")

    def _failure(self, exc: BaseException | None) -> TransportError:
        """A receive error as ours: aiohttp reports an oversized message as a WebSocketError with
        close code 1009 in the message itself (`ws.exception()` is then None)."""
        if isinstance(exc, aiohttp.WebSocketError) and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            return _too_large(f"{self.url}: a message", self.max_body_bytes)
        if exc is None:
            return ConnectError(f"{self.url}: the connection failed without a reason")
        return ConnectError(f"{self.url}: {type(exc).__name__}: {exc}")

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self.ping_text is not None
        while not ws.closed:
            await self.clock.sleep(self.ping_s)
            with contextlib.suppress(*_LOW_LEVEL):  # a dead socket shows up in the receive loop
                await ws.send_str(self.ping_text)


class RedisHashPoller:
    """Every `poll_s`, one pipelined HMGET of `fields` per key from the Redis at `url`, yielded as
    one Frame: a JSON list in the order of `keys` (and of `pairs`), each entry the key's values
    (null = absent) or the text of the error Redis answered for that key (WRONGTYPE, NOPERM...).

    The client is this poller's own (opened on first use, closed when the iteration ends), without
    redis-py's retries: a refused connection, a timeout or a failed login raises here, once, and the
    runner backs off. Bytes that are not UTF-8 read as U+FFFD, so a garbled field fails its pair's
    parse, not the connection. Why poll and not keyspace notifications: README, "The venue's own
    book from Redis".
    """

    def __init__(
        self,
        url: str,
        keys: Sequence[str],
        pairs: Sequence[str],
        fields: Sequence[str],
        clock: Clock,
        *,
        poll_s: float,
        timeout_s: float,
    ) -> None:
        self.url = url
        self.keys = list(keys)
        self.pairs = tuple(pairs)
        self.fields = list(fields)
        self.clock = clock
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._commands: list[bytes] | None = None

    def _packed(self, conn: Any) -> list[bytes]:
        """The poll's commands, packed once: they are the same every poll."""
        if self._commands is None:
            self._commands = conn.pack_commands([("HMGET", key, *self.fields) for key in self.keys])
        return self._commands

    async def frames(self) -> AsyncGenerator[Frame, None]:
        client = connect(RedisSettings(url=self.url), timeout_s=self.timeout_s, encoding_errors="replace")
        # No per-reply socket timeout: redis-py wraps each reply's read in asyncio.timeout(), and with a
        # thousand replies a poll on Python 3.11 a cancellation (the daemon stopping, a reload) was
        # lost and the poller ran on (seen with 1,000 keys on a loaded machine). One timeout bounds
        # the whole poll instead, in fetch().
        assert isinstance(client, Redis)  # a single node: no cluster, no Sentinel in these settings
        client.connection_pool.connection_kwargs["socket_timeout"] = None
        try:
            while True:
                started = self.clock.now()
                yield await self.fetch(client)
                await self.clock.sleep(self.poll_s - (self.clock.now() - started))
        finally:
            await client.aclose()

    async def fetch(self, client: Any) -> Frame:
        """One round trip: every HMGET written at once, then every reply read (pipelining by hand on
        one pooled connection, as oracle.connection does for the publisher's scripts). A failure or
        a cancellation drops the connection, so no reply is left behind on it."""
        pool = client.connection_pool
        try:
            async with asyncio.timeout(self.timeout_s):
                conn = await pool.get_connection()
                try:
                    await conn.send_packed_command(self._packed(conn), check_health=False)
                    replies = [await _reply(conn) for _ in self.keys]
                except BaseException:
                    await conn.disconnect(nowait=True)
                    raise
                finally:
                    await pool.release(conn)
        except (TimeoutError, redis.exceptions.TimeoutError) as exc:
            raise FeedTimeout(f"{redact(self.url)}: no answer in time") from exc
        except (redis.exceptions.ConnectionError, OSError) as exc:  # refused, reset, AUTH failed
            raise ConnectError(f"{redact(self.url)}: {type(exc).__name__}: {exc}") from exc
        received = self.clock.now()
        doc = []
        for reply in replies:
            if isinstance(reply, redis.exceptions.ConnectionError):  # NOAUTH: for every key, not one
                raise ConnectError(f"{redact(self.url)}: {type(reply).__name__}: {reply}")
            doc.append(str(reply) if isinstance(reply, Exception) else reply)
        return Frame(msgspec.json.encode(doc), received, self.pairs)


async def _reply(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except redis.exceptions.ResponseError as exc:  # this key's own error (WRONGTYPE): returned, not raised
        return exc
