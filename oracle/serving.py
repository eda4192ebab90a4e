"""Serving HTTP to clients we do not trust: a connection cap, timeouts, and logs that stay small.

aiohttp serves the daemon's routes (oracle.http); this module is the plumbing around it, so that
no client, however many sockets it opens or however slowly it talks, stops /healthz answering:

- At most `http_max_connections` connections. A new one beyond the cap evicts the oldest that has
  no request in flight (an idle keep-alive, or one still sending its headers): a flood of idle
  sockets pushes out its own oldest members, while a probe, which sends its request at once, is
  served. Only when every connection is busy is the newcomer refused with a bare 503.
- A connection must complete its first request's headers within `http_header_timeout_ms`, may sit
  idle between requests for `http_idle_timeout_ms`, and a request (its body included) must be
  answered within `http_request_timeout_ms` (408 otherwise).
- Out of file descriptors (EMFILE), asyncio stops accepting for a second and logs the error each
  time: that becomes one warning per `LOG_EVERY_S`, with the count since the last one. Evictions
  are summarised the same way. A malformed request is the client's problem: DEBUG, not ERROR.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from oracle.settings import ServiceSettings

__all__ = ["HttpLimits", "LimitedSite", "QuietServerLog", "RateLimitedLog", "limits_middleware", "quiet_accept_errors"]

log = logging.getLogger("markd.http")

LOG_EVERY_S = 10.0
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class RateLimitedLog:
    """One warning per `every_s` for a recurring condition, carrying how often it happened since."""

    def __init__(self, event: str, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.event = event
        self.every_s = every_s
        self.clock = clock
        self.count = 0  # occurrences not yet reported
        self.total = 0
        self._last = -float("inf")

    def hit(self, **fields: Any) -> None:
        self.count += 1
        self.total += 1
        now = self.clock()
        if now - self._last >= self.every_s:
            log.warning(self.event, extra={**fields, "count": self.count, "total": self.total})
            self._last = now
            self.count = 0


class HttpLimits:
    """The limits of one HTTP server, and what it has seen of the connections."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.max_connections = settings.http_max_connections
        self.header_timeout_s = settings.http_header_timeout_ms / 1000
        self.idle_timeout_s = settings.http_idle_timeout_ms / 1000
        self.request_timeout_s = settings.http_request_timeout_ms / 1000
        # By connection (aiohttp's handlers take no weak references): requests running on it, and
        # the connections that have sent a request. `served` is pruned of closed ones as it grows.
        self.in_flight: dict[object, int] = {}
        self.served: set[object] = set()
        self.evictions = RateLimitedLog("http_connection_evicted")
        self.refusals = RateLimitedLog("http_connection_refused")

    @property
    def backlog(self) -> int:
        return min(128, self.max_connections)

    def descriptors_needed(self) -> int:
        """Descriptors the HTTP server may hold at once under a flood: the cap, one accept batch,
        and the previous batch's evictions still closing."""
        return self.max_connections + 2 * self.backlog

    def handler_args(self) -> dict[str, Any]:
        """RequestHandler options for web.AppRunner: aiohttp's keep-alive timer is our idle timeout
        (it also runs from the moment a connection opens), and malformed requests log quietly."""
        return {"keepalive_timeout": self.idle_timeout_s, "logger": QuietServerLog()}


def limits_middleware(limits: HttpLimits) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Marks the connection busy while a request runs (so it is never evicted mid-answer) and bounds
    the request's time, its body's reading included."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = request.protocol
        limits.served.add(conn)
        limits.in_flight[conn] = limits.in_flight.get(conn, 0) + 1
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                return await handler(request)
        except TimeoutError:
            raise web.HTTPRequestTimeout(text="request not completed in time") from None
        finally:
            left = limits.in_flight.get(conn, 1) - 1
            if left:
                limits.in_flight[conn] = left
            else:
                limits.in_flight.pop(conn, None)

    return middleware


class _Refuse(asyncio.Protocol):
    """A connection over the cap while every other one is busy: a bare 503, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _GuardedFactory:
    """The protocol factory asyncio's server calls once per accepted connection."""

    def __init__(self, server: web.Server, limits: HttpLimits) -> None:
        self.server = server
        self.limits = limits

    def __call__(self) -> asyncio.Protocol:
        # Oldest first (aiohttp keeps them in a dict); one we closed has no transport any more.
        live = [h for h in self.server.connections if h.transport is not None]
        if len(live) >= self.limits.max_connections and not self._evict(live):
            self.limits.refusals.hit(limit=self.limits.max_connections)
            return _Refuse()
        if len(self.limits.served) > 2 * self.limits.max_connections:
            self.limits.served.intersection_update(live)
        handler = self.server()
        asyncio.get_running_loop().call_later(self.limits.header_timeout_s, self._headers_due, handler)
        return handler

    def _evict(self, live: list[RequestHandler]) -> bool:
        victim = next((h for h in live if h not in self.limits.in_flight), None)
        if victim is None:
            return False
        victim.force_close()
        self.limits.evictions.hit(limit=self.limits.max_connections)
        return True

    def _headers_due(self, handler: RequestHandler) -> None:
        if handler not in self.limits.served and handler.transport is not None:
            handler.force_close()  # no complete request within the header timeout


class LimitedSite(web.TCPSite):
    """web.TCPSite whose connections pass through the cap. Its start() is TCPSite's with the factory
    wrapped (aiohttp has no hook for it), so it sets the same two attributes TCPSite does."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limits: HttpLimits, **kwargs: Any) -> None:
        # asyncio accepts up to `backlog` sockets per loop pass before any reaches the cap, and the
        # ones evicted in the previous pass are still closing: keep that batch within the cap too.
        super().__init__(runner, host, port, backlog=limits.backlog, **kwargs)
        self.limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, web.Server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            _GuardedFactory(server, self.limits),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


class QuietServerLog(logging.LoggerAdapter):
    """aiohttp's server logger, with a malformed request (bad request line, headers too long or
    invalid, not HTTP at all) at DEBUG: any client can send one, and at ERROR a flood of them
    would bury the oracle's own errors. A failure of our own handlers stays at ERROR."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.debug(msg, *args, exc_info=exc_info, **kwargs)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> RateLimitedLog:
    """Route asyncio's 'socket.accept() out of system resource' (logged at every retry, once a second
    per listening socket, for as long as descriptors are short) to one warning per LOG_EVERY_S;
    every other loop error goes to the handler that was there before."""
    previous = loop.get_exception_handler()
    out_of_fds = RateLimitedLog("http_accept_out_of_descriptors")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS and "accept" in context.get("message", ""):
            out_of_fds.hit(error=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return out_of_fds
