"""The leader lease: of several replicas running one config against one Redis, exactly one publishes.

The lease is `P:{leader}`, holding "<replica_id>:<token>", taken with SET NX PX and renewed each tick
by its holder only while the value is still its own. Taking it increments `P:{leader}:epoch`; the new
value is the holder's **fencing token**, which the publisher passes to every write
(`publish(marks, fence=lease.token)`), and the publish script refuses writes made with an older
token (see oracle.publish). So a leader paused past its TTL (GC, a stalled VM) that wakes up and
writes is refused, even before it notices that it lost the lease.

A holder also steps down on its own once a TTL has passed since its last successful renewal, so a
replica cut off from Redis stops claiming leadership by the time a standby can take over. A lease
that lapsed while nobody else took it (its holder was slow, not gone) is retaken with the same token,
and the log says so.

The daemon keeps its lease through `LeaseKeeper`: the same LeaderLease, ticked from a thread of its
own with its own event loop and Redis connection, so that nothing on the daemon's loop (a /metrics
scrape, a big venue document, a slow tick) can delay a renewal past the TTL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import secrets
import threading
import time

from oracle.clock import Clock
from oracle.connection import RedisClient, Script, connect, redact
from oracle.metrics import Metrics
from oracle.schema import Keys
from oracle.settings import RedisSettings

log = logging.getLogger(__name__)

__all__ = ["LeaderLease", "LeaseKeeper"]

# KEYS: lease, epoch. ARGV: replica id, ttl_ms. Returns the new token, or nil when the lease is held.
ACQUIRE_LUA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'KEEPTTL')
return token
"""

# KEYS: lease, epoch. ARGV: our value, ttl_ms, our token. 1 when renewed; 2 when it had lapsed and
# nobody took it since (the epoch is still our token, so no one else ever wrote with a newer one):
# retaken with the same token; 0 when another replica holds it or took it in between.
RENEW_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# KEYS: lease. ARGV: our value. 1 when released, 0 when the lease is no longer ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

_ACQUIRE = Script(ACQUIRE_LUA)
_RENEW = Script(RENEW_LUA)
_RELEASE = Script(RELEASE_LUA)


class LeaderLease:
    """Call `tick()` once per tick; publish only when it returns True, with `fence=lease.token`."""

    def __init__(
        self,
        settings: RedisSettings,
        replica_id: str,
        ttl_ms: int,
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        timeout_s: float = 0.25,
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        self.replica_id = replica_id or secrets.token_hex(4)
        self.ttl_ms = ttl_ms
        self._clock = clock
        self._metrics = metrics
        self._keys = Keys(settings.prefix)
        self._url = settings.url
        self.timeout_s = timeout_s
        self._redis: RedisClient = connect(settings, timeout_s=timeout_s)
        self._token: int | None = None
        self._valid_until = 0.0  # our clock's time at which our last renewal lapses
        self._failing = False  # the last tick could not reach Redis

    def __repr__(self) -> str:
        return f"LeaderLease({redact(self._url)}, replica_id={self.replica_id!r}, token={self._token})"

    @property
    def token(self) -> int | None:
        """The fencing token while we lead, else None."""
        return self._token

    @property
    def leading(self) -> bool:
        return self._token is not None

    @property
    def held_until(self) -> float:
        """Our clock's time at which our last renewal lapses."""
        return self._valid_until

    async def tick(self) -> bool:
        """Acquire the lease if it is free, renew it if it is ours; return whether we lead now."""
        started = self._clock.now()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._token is None:
                    await self._acquire(started)
                else:
                    await self._renew(started)
        except Exception as exc:  # Redis unreachable: lead only while our last renewal holds
            # Once per outage at warning level: a replica ticks several times a second.
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "lease %s failed: %s", "renewal" if self._token else "attempt", type(exc).__name__)
            self._failing = True
            if self._token is not None and self._clock.now() >= self._valid_until:
                self._step_down("its TTL passed without a renewal")
        else:
            self._failing = False
        self._report()
        return self._token is not None

    async def release(self) -> None:
        """Give the lease up now (graceful shutdown), so a standby need not wait for the TTL."""
        if self._token is not None:
            try:
                await _RELEASE.run(self._redis, [self._keys.lease], [self._value])
            except Exception as exc:
                log.warning("lease release failed: %s", type(exc).__name__)
            self._step_down("released")
            self._report()

    async def close(self) -> None:
        await self.release()
        await self._redis.aclose()

    @property
    def _value(self) -> str:
        return f"{self.replica_id}:{self._token}"

    async def _acquire(self, started: float) -> None:
        keys = [self._keys.lease, self._keys.epoch]
        token = await _ACQUIRE.run(self._redis, keys, [self.replica_id, self.ttl_ms])
        if token is not None:
            self._token = int(token)
            self._valid_until = started + self.ttl_ms / 1000.0
            log.info("replica %s leads with token %d", self.replica_id, self._token)

    async def _renew(self, started: float) -> None:
        keys = [self._keys.lease, self._keys.epoch]
        renewed = await _RENEW.run(self._redis, keys, [self._value, self.ttl_ms, str(self._token)])
        if renewed == 2:
            late = started - (self._valid_until - self.ttl_ms / 1000.0)
            log.warning(
                "replica %s: the lease lapsed (no renewal for %.1f s) and nobody took it: retaken with token %s",
                self.replica_id,
                late,
                self._token,
            )
        if renewed in (1, 2):
            self._valid_until = started + self.ttl_ms / 1000.0
        else:
            self._step_down("another replica holds the lease")

    def _step_down(self, why: str) -> None:
        log.warning("replica %s stops leading (token %s): %s", self.replica_id, self._token, why)
        self._token = None

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.set_leader(self._token is not None)


class LeaseKeeper:
    """A LeaderLease ticked every `every_s` from a thread of its own (own event loop, own Redis
    connection), with the LeaderLease's call: `await keeper.tick()` each tick says whether we lead,
    `keeper.token` is the fencing token. The first `tick()` starts the thread and waits (at most
    `timeout_s` more) for its first attempt, so a lone daemon leads from its first tick.

    The daemon's `tick()` is also its heartbeat: past `stall_s` without one, the keeper stops renewing
    and releases the lease, so a loop stuck for good cannot keep a healthy standby from taking over,
    while a loop busy for a second (what a scrape at 5,000 markets did) no longer loses it. `token`
    is None as soon as the last renewal has lapsed, even before the thread notices."""

    def __init__(self, lease: LeaderLease, clock: Clock, *, every_s: float, stall_s: float) -> None:
        self.lease = lease
        self._clock = clock
        self._every_s = every_s
        self._stall_s = stall_s
        self._beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._first: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._keeping: asyncio.Task[None] | None = None  # on the thread's loop
        self._stalled = False

    @property
    def token(self) -> int | None:
        token = self.lease.token
        return token if token is not None and self._clock.now() < self.lease.held_until else None

    async def tick(self) -> bool:
        self._beat = time.monotonic()
        if self._thread is None:
            self._start()
            with contextlib.suppress(TimeoutError):  # the thread goes on trying; we lead once it can
                await asyncio.wait_for(asyncio.wrap_future(self._first), self.lease.timeout_s + 1.0)
        return self.token is not None

    async def close(self) -> None:
        """Stop the thread; the lease is released (a standby need not wait for the TTL)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self._stop(), loop)
        await asyncio.wrap_future(done)
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 2.0)

    def _start(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="markd-lease", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._keep(), loop)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _keep(self) -> None:
        self._keeping = asyncio.current_task()
        while True:
            try:
                await self._keep_once()
            except Exception:  # a bug must not end the renewals silently
                log.exception("lease_keeper_failed")
            if not self._first.done():
                self._first.set_result(None)
            await asyncio.sleep(self._every_s)

    async def _keep_once(self) -> None:
        stalled = time.monotonic() - self._beat > self._stall_s
        if stalled and not self._stalled:
            log.warning("the tick loop stalled for over %.1f s: the lease is given up", self._stall_s)
            await self.lease.release()
        elif not stalled:
            if self._stalled:
                log.info("the tick loop runs again: the lease may be taken again")
            await self.lease.tick()
        self._stalled = stalled

    async def _stop(self) -> None:
        task = self._keeping
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.lease.close()
