"""Redis connections for the publisher, the lease and the reader: one way to open them, one way to
run a Lua script, and `redact` so a password in the URL never reaches a log line or a message.

With `redis.sentinels` the client asks the Sentinels for the primary of `sentinel_service` each time
it opens a connection, so after a failover the next connection (the callers reconnect after any
error) reaches the promoted replica; a connection to a primary since demoted fails on its first
write (READONLY) and is dropped the same way. `url` then only supplies credentials, db and TLS.

Clients are built without redis-py's own retries: each caller owns its failure policy (the publisher
retries in the background, the reader raises, the lease steps down), and a hidden retry with backoff
would break the publisher's time budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from oracle.settings import RedisSettings

RedisClient: TypeAlias = Redis | RedisCluster
Pipeline: TypeAlias = Any  # redis.asyncio.client.Pipeline | ClusterPipeline (no common base class)

_T = TypeVar("_T")
_SECRET_PARAMS = frozenset({"password", "pass", "auth"})


def redact(url: str) -> str:
    """The URL with its password (or a lone userinfo, which may be one) and secret params as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{parts.scheme}://{netloc}{parts.path}{tail}"  # not urlunsplit: it drops unix:// slashes


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's pure-Python asyncio packer, which was
    half the publisher's CPU time at 1,000 markets a tick. Multi-word commands ("CLIENT SETINFO")
    and values hiredis refuses keep the original packer."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if not (isinstance(name, str) and " " in name) and not (isinstance(name, bytes) and b" " in name):
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # a value hiredis does not take: redis-py encodes it or raises its own DataError
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


class _FastConnection(_HiredisPacking, Connection):
    pass


class _FastSSLConnection(_HiredisPacking, SSLConnection):
    pass


class _FastSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass


class _FastSentinelSSLConnection(_HiredisPacking, SentinelManagedSSLConnection):
    pass


PRIMARY_CHECK_S = 1.0  # how often a Sentinel-managed pool asks whether the primary has moved


class _FollowingPool(SentinelConnectionPool):
    """Asks the Sentinels for the primary at most once a `PRIMARY_CHECK_S` when lending a connection,
    not only when opening one: after a failover that leaves the old primary up (a manual failover,
    a partition), pooled connections to it would go on writing there, unseen by every reader, until
    Sentinel demotes it. A moved primary disconnects the idle connections, so this one reconnects."""

    _checked = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if self.is_master and now - self._checked >= PRIMARY_CHECK_S:
            self._checked = now
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.get_master_address()  # on a change, disconnects the idle connections
        return await super().get_connection(*args, **kwargs)


async def primary_moved(client: Redis, connection: Any) -> bool:
    """Whether the Sentinels now name another primary than the one `connection` is to (always False
    without Sentinels). For a long-lived connection outside the pool's rotation, such as pub/sub's."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool) or connection is None:
        return False
    try:
        address = await pool.sentinel_manager.discover_master(pool.service_name)
    except (RedisConnectionError, RedisTimeoutError):
        return False
    return tuple(address) != (connection.host, connection.port)


class _SentinelRedis(Redis):
    """The primary's client; closing it also closes its connections to the Sentinels."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            for client in self.sentinels.sentinels:
                await client.aclose()


def connect(settings: RedisSettings, *, timeout_s: float, encoding_errors: str = "strict") -> RedisClient:
    """A lazy client (it connects on first use) for a server or, with `settings.cluster`, a Cluster.
    `encoding_errors="replace"` reads bytes that are not UTF-8 as U+FFFD instead of failing the whole
    reply (for a Redis written by someone else: the redis_hash source)."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": encoding_errors,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.cluster:
        if settings.url.startswith("unix://"):
            raise ValueError("redis.cluster needs a redis:// or rediss:// url")
        cluster: RedisCluster = RedisCluster.from_url(settings.url, **kwargs)
        return cluster
    if settings.sentinels:
        return _via_sentinels(settings, kwargs)
    scheme = settings.url.partition("://")[0]
    if scheme in ("redis", "rediss"):
        kwargs["connection_class"] = _FastSSLConnection if scheme == "rediss" else _FastConnection
    client: Redis = Redis.from_url(settings.url, **kwargs)
    return client


def connect_node(settings: RedisSettings, *, timeout_s: float) -> Redis:
    """A plain client to the node the URL names (with Sentinels: to the primary). In a Cluster,
    pub/sub messages reach every node, and redis-py's asyncio RedisCluster has no pub/sub, so
    subscribers use this."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": None,  # a subscriber waits for messages indefinitely
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.sentinels:
        return _via_sentinels(settings, kwargs)
    client: Redis = Redis.from_url(settings.url, **kwargs)
    return client


def _via_sentinels(settings: RedisSettings, kwargs: dict[str, Any]) -> Redis:
    """A client of the primary the Sentinels name. Credentials, db and TLS come from the URL; the
    Sentinels themselves are asked with the same TLS settings but no credentials, and each gets
    one connect timeout to answer before the next is asked."""
    options = {k: v for k, v in parse_url(settings.url).items() if k not in ("host", "port", "path")}
    tls = options.pop("connection_class", None) is SSLConnection
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": kwargs["socket_connect_timeout"],
        "socket_connect_timeout": kwargs["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
    }
    if tls:
        sentinel_kwargs.update(ssl=True, **{k: v for k, v in options.items() if k.startswith("ssl_")})
    sentinel = Sentinel(settings.sentinel_addresses, sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(
        settings.sentinel_service,
        redis_class=_SentinelRedis,
        connection_pool_class=_FollowingPool,
        connection_class=_FastSentinelSSLConnection if tls else _FastSentinelConnection,
        **options,
        **kwargs,
    )
    assert isinstance(client, _SentinelRedis)
    client.sentinels = sentinel
    return client


class Script:
    """A Lua script run by EVALSHA, falling back to EVAL (which also caches it) on NOSCRIPT: after a
    server restart or on a Cluster node that has not seen it yet."""

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()

    async def run(self, client: RedisClient, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.execute_command("EVAL", self.body, len(keys), *keys, *args)

    async def run_many(
        self, client: RedisClient, calls: Iterable[tuple[Sequence[str], Sequence[str | int]]]
    ) -> list[Any]:
        """Every call in one pipeline round trip (a second one only for NOSCRIPT); errors are returned.

        On a single server `calls` is consumed lazily, each call sent as soon as it is built, so Redis
        runs the first scripts while we still build the rest. A Cluster pipeline needs them all first.
        """
        made: list[tuple[Sequence[str], Sequence[str | int]]] = []
        by_sha = ((self.sha, True, *call) for call in _recorded(calls, made))
        if isinstance(client, Redis):
            results = await _streamed(client, by_sha)
        else:
            results = await _pipelined(client, list(by_sha))
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:
            again = await _pipelined(client, [(self.body, False, *made[i]) for i in retry])
            for i, r in zip(retry, again, strict=True):
                results[i] = r
        return results


_Call: TypeAlias = tuple[str, bool, Sequence[str], Sequence[str | int]]


def _recorded(calls: Iterable[_T], into: list[_T]) -> Iterator[_T]:
    for call in calls:
        into.append(call)
        yield call


async def _streamed(client: Redis, calls: Iterable[_Call]) -> list[Any]:
    """Pipelining by hand on one pooled connection: send each command as it comes, then read every
    reply. Any failure or cancellation drops the connection, so no reply is left behind on it."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        sent = 0
        for script, by_sha, keys, args in calls:
            command = conn.pack_command("EVALSHA" if by_sha else "EVAL", script, len(keys), *keys, *args)
            await conn.send_packed_command(command, check_health=False)
            sent += 1
        return [await _reply(conn) for _ in range(sent)]
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


async def _reply(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:  # a script's own error: returned like a pipeline's, not raised
        return exc


async def _pipelined(client: RedisClient, calls: Sequence[_Call]) -> list[Any]:
    pipe: Pipeline = client.pipeline(transaction=False)
    async with pipe:
        for script, by_sha, keys, args in calls:
            # execute_command, not pipe.evalsha(): redis-py blocks that method on a Cluster pipeline
            # (it cannot load scripts there); our NOSCRIPT fallback makes it safe.
            pipe.execute_command("EVALSHA" if by_sha else "EVAL", script, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


__all__ = ["RedisClient", "Script", "connect", "connect_node", "primary_moved", "redact"]
