"""The jump guard: a large move waits out a dispute window before it may validate.

An ordinary move (within `max_jump_bps` of the last validated price) validates at once. A larger one
opens a `DisputeWindow` and the market is held at the last validated price. When the window ends
with no dispute open and the candidate still within `max_deviation_bps` of where it stood when the
window opened, the jump validates; otherwise the window restarts from the new candidate. The delay
is what gives operators and detectors time to object before a liquidation-grade price goes out.

After an operator *upholds* a dispute the guard holds with no window at all, until the candidate
comes back within `max_jump_bps` of the last validated price: a bad price must not validate just
because it persisted for one more window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from disputes.model import deviation_bps
from oracle.validation.state import Column, StateArrays


class Verdict(Enum):
    VALIDATE = "validate"
    HOLD = "hold"


class Change(Enum):
    """What happened to the window this tick (the stage turns these into events)."""

    NONE = "none"
    OPENED = "opened"
    RESTARTED = "restarted"
    PASSED = "passed"  # the window ended quietly and the jump validated
    CLOSED = "closed"  # the candidate came back to an ordinary move


@dataclass(frozen=True, slots=True)
class DisputeWindow:
    opened_ts: float
    reference: float  # the candidate when the window opened

    def ended(self, now: float, length_s: float) -> bool:
        return now - self.opened_ts >= length_s


@dataclass(frozen=True, slots=True)
class GuardStep:
    verdict: Verdict
    change: Change = Change.NONE


class JumpGuard:
    """The guard of one market. `max_jump_bps = 0` turns the guard off. The state lives in a row of
    a StateArrays (oracle.validation), its own unless one is given."""

    max_jump_bps = Column("g_max_jump", float)
    window_s = Column("g_window_s", float)
    max_deviation_bps = Column("g_max_dev", float)
    upheld = Column("g_upheld", bool)  # an upheld dispute: hold until the sources return

    def __init__(
        self,
        max_jump_bps: float,
        dispute_window_ms: int,
        max_deviation_bps: float,
        cols: StateArrays | None = None,
        row: int = 0,
    ) -> None:
        self._cols, self._row = cols if cols is not None else StateArrays(1), row
        self.max_jump_bps = max_jump_bps
        self.window_s = dispute_window_ms / 1000.0
        self.max_deviation_bps = max_deviation_bps
        self.window = None
        self.upheld = False

    @property
    def window(self) -> DisputeWindow | None:
        opened = float(self._cols.g_opened[self._row])
        return None if math.isnan(opened) else DisputeWindow(opened, float(self._cols.g_reference[self._row]))

    @window.setter
    def window(self, w: DisputeWindow | None) -> None:
        i = self._row
        self._cols.g_opened[i], self._cols.g_reference[i] = (
            (math.nan, math.nan) if w is None else (w.opened_ts, w.reference)
        )

    def step(self, price: float, last_validated: float, now: float, disputed: bool) -> GuardStep:
        """`disputed`: a dispute is open on the market, so nothing may validate."""
        if math.isnan(last_validated) and not disputed:
            return GuardStep(Verdict.VALIDATE)  # the first mark: nothing to jump from
        ordinary = not self.max_jump_bps or deviation_bps(price, last_validated) <= self.max_jump_bps
        if self.upheld:
            return self._after_uphold(ordinary, disputed)
        if ordinary:
            change = Change.CLOSED if self.window else Change.NONE
            self.window = None
            return GuardStep(Verdict.HOLD if disputed else Verdict.VALIDATE, change)
        return self._jump(price, now, disputed)

    def retune(self, max_jump_bps: float, dispute_window_ms: int, max_deviation_bps: float) -> None:
        """New thresholds (a config reload); an open window keeps its start and reference."""
        self.max_jump_bps = max_jump_bps
        self.window_s = dispute_window_ms / 1000.0
        self.max_deviation_bps = max_deviation_bps

    def interrupt(self) -> None:
        """No tier has quorum: a window must watch the candidate without a gap, so it starts over."""
        self.window = None

    def uphold(self) -> None:
        self.window, self.upheld = None, True

    def clear(self) -> None:
        """A rejected dispute: the candidate validates now, no window left to wait out."""
        self.window, self.upheld = None, False

    def _after_uphold(self, ordinary: bool, disputed: bool) -> GuardStep:
        if ordinary and not disputed:
            self.upheld = False
            return GuardStep(Verdict.VALIDATE)
        return GuardStep(Verdict.HOLD)

    def _jump(self, price: float, now: float, disputed: bool) -> GuardStep:
        # The window runs while a dispute is open too, but can only pass once none is.
        if self.window is None:
            self.window = DisputeWindow(now, price)
            return GuardStep(Verdict.HOLD, Change.OPENED)
        if not self.window.ended(now, self.window_s):
            return GuardStep(Verdict.HOLD)
        if not disputed and deviation_bps(price, self.window.reference) <= self.max_deviation_bps:
            self.window = None
            return GuardStep(Verdict.VALIDATE, Change.PASSED)
        self.window = DisputeWindow(now, price)
        return GuardStep(Verdict.HOLD, Change.RESTARTED)
