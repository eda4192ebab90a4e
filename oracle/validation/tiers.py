"""Which tier a market uses, with hysteresis on the way back up.

A market falls to a lower tier as soon as the tier in use loses quorum, but climbs back to a higher
one only after that tier has had quorum for `recover_ticks` consecutive ticks *and* agrees with the
tier in use within `max_deviation_bps`. Without the streak a flapping primary would toggle the
mark between tiers every tick; without the agreement check a primary that comes back wrong (one
venue recovering into a manipulated book) would take over at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from disputes.model import deviation_bps
from oracle.models import Candidate, Status, TierResult
from oracle.validation.state import Column, StateArrays

NO_TIER = 0


@dataclass(frozen=True, slots=True)
class TierStep:
    tier: int  # the tier in use after this tick; NO_TIER when none has quorum
    previous: int

    @property
    def changed(self) -> bool:
        return self.tier != self.previous

    @property
    def status(self) -> Status:
        if self.tier == NO_TIER:
            return Status.STALE
        return Status.OK if self.tier == 1 else Status.DEGRADED


class TierMachine:
    """The tier state of one market. `step` once per tick. The state lives in a row of a
    StateArrays (oracle.validation), its own unless one is given: the quiet path advances it there."""

    recover_ticks = Column("recover_ticks", int)
    max_deviation_bps = Column("tier_max_dev", float)
    tier = Column("tier", int)

    def __init__(
        self, recover_ticks: int, max_deviation_bps: float, cols: StateArrays | None = None, row: int = 0
    ) -> None:
        self._cols, self._row = cols if cols is not None else StateArrays(1), row
        self.recover_ticks = recover_ticks
        self.max_deviation_bps = max_deviation_bps
        self.tier = NO_TIER
        self._cols.streak[row] = 0  # tier t's consecutive ticks with quorum at [t - 1]

    def step(self, candidate: Candidate) -> TierStep:
        previous = self.tier
        self._count_streaks(candidate.tiers)
        in_use = candidate.result(self.tier)
        if in_use is None or not in_use.quorum:
            self.tier = candidate.tier  # fall through to the first tier that has quorum
        else:
            self.tier = self._recovered(candidate.tiers, in_use) or self.tier
        return TierStep(self.tier, previous)

    def _count_streaks(self, tiers: tuple[TierResult, ...]) -> None:
        self._cols.widen(max((t.tier for t in tiers), default=0))
        row = self._cols.streak[self._row]
        counts = [int(row[t.tier - 1]) + 1 if t.quorum else 0 for t in tiers]
        row[:] = 0  # a tier the candidate does not have has no streak
        for t, n in zip(tiers, counts, strict=True):
            row[t.tier - 1] = n

    def _recovered(self, tiers: tuple[TierResult, ...], in_use: TierResult) -> int | None:
        """The highest tier above the one in use that has earned its way back, if any."""
        for t in tiers:
            if t.tier >= in_use.tier:
                return None
            if (
                int(self._cols.streak[self._row, t.tier - 1]) >= max(self.recover_ticks, 1)
                and deviation_bps(t.price, in_use.price) <= self.max_deviation_bps
            ):
                return t.tier
        return None
