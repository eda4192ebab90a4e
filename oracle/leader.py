"""The leader lease: of several replicas running one config against one Redis, exactly one publishes.

The lease is `P:{leader}`, holding "<replica_id>:<token>", taken with SET NX PX and renewed each tick
by its holder only while the value is still its own. Taking it increments `P:{leader}:epoch`; the new
value is the holder's **fencing token**, which the publisher passes to every write
(`publish(marks, fence=lease.token)`), and the publish script refuses writes made with an older
token (see oracle.publish). So a leader paused past its TTL (GC, a stalled VM) that wakes up and
writes is refused, even before it notices that it lost the lease.

A holder also steps down on its own once a TTL has passed since its last successful renewal, so a
replica cut off from Redis stops claiming leadership by the time a standby can take over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from oracle.clock import Clock
from oracle.connection import RedisClient, Script, connect, redact
from oracle.metrics import Metrics
from oracle.schema import Keys
from oracle.settings import RedisSettings

log = logging.getLogger(__name__)

__all__ = ["LeaderLease"]

# KEYS: lease, epoch. ARGV: replica id, ttl_ms. Returns the new token, or nil when the lease is held.
ACQUIRE_LUA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'KEEPTTL')
return token
"""

# KEYS: lease. ARGV: our value, ttl_ms. 1 when renewed, 0 when the lease is no longer ours.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
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
        self._timeout_s = timeout_s
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

    async def tick(self) -> bool:
        """Acquire the lease if it is free, renew it if it is ours; return whether we lead now."""
        started = self._clock.now()
        try:
            async with asyncio.timeout(self._timeout_s):
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
        renewed = await _RENEW.run(self._redis, [self._keys.lease], [self._value, self.ttl_ms])
        if renewed == 1:
            self._valid_until = started + self.ttl_ms / 1000.0
        else:
            self._step_down("another replica holds the lease")

    def _step_down(self, why: str) -> None:
        log.warning("replica %s stops leading (token %s): %s", self.replica_id, self._token, why)
        self._token = None

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.set_leader(self._token is not None)
