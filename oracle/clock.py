"""The one clock. Everything that needs "now" takes a Clock; nothing calls time.time() itself.

Live mode injects WallClock; the replay harness and the tests inject VirtualClock, whose time only
moves when told to, so runs are deterministic and tests never sleep. ScaledClock is wall time sped
up: the daemon's real sockets and tasks run unchanged while its policy times (ages, windows, ticks)
pass faster, so a test can live through a 40 s outage in a fraction of that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Time that moves only by advance()/set(); sleep() advances it instead of waiting."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"virtual time cannot go back ({t} < {self._now})")
        self._now = float(t)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class ScaledClock:
    """Wall time running `rate` times faster from the moment it is made; sleep() waits 1/rate as long."""

    def __init__(self, rate: float, start: float | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self._start = time.time() if start is None else float(start)
        self._origin = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._origin) * self.rate

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.rate)
