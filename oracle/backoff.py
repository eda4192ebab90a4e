"""How long to wait before retrying something that failed: markd's one retry policy, used by the
feeds' transport, the Redis publisher's reconnect, the mark reader's subscription and the webhook.

    backoff = Backoff(initial_s=0.5, max_s=30.0, healthy_s=10.0)
    delay = backoff.next(retry_after)   # after each failure
    backoff.healthy(now)                # at each sign of health (a good quote)

The delay doubles per failure up to `max_s`, with 'equal jitter' (half the step fixed, half random)
so that replicas and sources do not reconnect in lockstep. Only a connection that stayed healthy for
`healthy_s` forgets the failures: a venue that accepts us, sends one good quote and drops us again
must keep backing off, not be hammered once a second.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self, initial_s: float, max_s: float, rng: random.Random | None = None, *, healthy_s: float = 10.0
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.healthy_s = healthy_s
        self._rng = rng or random.Random()
        self._failures = 0
        self._healthy_since: float | None = None  # the first sign of health since the last failure

    @property
    def failures(self) -> int:
        """Failures not yet forgiven by a healthy spell."""
        return self._failures

    def next(self, retry_after: float | None = None) -> float:
        """A failure: the delay before the next attempt."""
        step = min(self.max_s, self.initial_s * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        self._healthy_since = None
        delay = step / 2 + self._rng.uniform(0, step / 2)
        # A venue's Retry-After is a floor: retrying sooner only extends a ban.
        return max(delay, retry_after or 0.0)

    def healthy(self, now: float) -> None:
        """A sign of health at `now`. The failures are forgotten once the signs have lasted
        `healthy_s` without a failure in between, not at the first one."""
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.healthy_s:
            self._failures = 0

    def reset(self) -> None:
        """Forget the failures now (a caller that knows better, e.g. after a config change)."""
        self._failures = 0
        self._healthy_since = None
