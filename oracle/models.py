"""Domain values shared by every stage: a venue's Quote, the aggregator's Candidate, the published Mark.

All times are Unix seconds (float). Prices are floats; the publisher writes them as the shortest
decimal string that round-trips (repr), so nothing is lost on the way to Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"  # tier 1 reached quorum
    DEGRADED = "degraded"  # a fallback tier produced the price
    HELD = "held"  # a dispute or the jump guard holds the market at the last validated price
    STALE = "stale"  # no tier has quorum; the last validated price ages

    def __str__(self) -> str:
        return self.value


class Exclusion(StrEnum):
    """Why a quote did not count. The value is the `reason` label of markd_quote_excluded_total."""

    STALE = "stale"  # older than max_age_ms by receive time
    SANITY = "sanity"  # non-finite, <= 0, or outside min_price/max_price
    CONVERSION = "conversion"  # its convert market has no fresh validated mark
    DEVIATION = "deviation"  # beyond max_deviation_bps of the tier median
    FROZEN = "frozen"  # stuck while its peers moved beyond its freeze_bps (oracle/freeze.py)
    FUTURE = "future"  # venue timestamp ahead of the clock by more than max_age_ms

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Quote:
    """One price from one venue for one pair, with both timestamps (venue's and ours)."""

    source: str
    pair: str
    price: float
    received_ts: float
    bid: float | None = None
    ask: float | None = None
    venue_ts: float | None = None
    confidence: float | None = None  # the venue's own uncertainty (Pyth conf), price units
    last: float | None = None  # the last trade, kept beside the mid for the perp mark's book (oracle.perp)

    @staticmethod
    def from_book(
        source: str,
        pair: str,
        received_ts: float,
        *,
        bid: float | None,
        ask: float | None,
        last: float | None,
        venue_ts: float | None = None,
        confidence: float | None = None,
    ) -> Quote:
        """Price is the bid/ask mid where both exist, else the last trade. Callers reject crossed books."""
        if bid is not None and ask is not None:
            price = (bid + ask) / 2.0
        elif last is not None:
            price = last
        else:
            raise ValueError("quote has neither a two-sided book nor a last price")
        return Quote(source, pair, price, received_ts, bid, ask, venue_ts, confidence, last)


@dataclass(frozen=True, slots=True)
class Excluded:
    """A quote left out of a mark, and why."""

    source: str
    pair: str
    reason: Exclusion
    price: float  # as quoted (before conversion); NaN when the source had nothing


@dataclass(frozen=True, slots=True)
class TierResult:
    """What one tier of one market produced this tick (quorum or not)."""

    tier: int  # 1 = primary, 2.. = fallbacks
    price: float  # NaN without quorum
    confidence: float
    sources: tuple[str, ...]  # the accepted sources
    quorum: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    """The aggregator's proposal for one market this tick, before the dispute stage.

    `tier` is the first tier with quorum (0 when none has it); `tiers` holds every tier's result so
    the dispute stage can apply hysteresis and cross-check tiers.
    """

    market: str
    ts: float
    tiers: tuple[TierResult, ...]
    excluded: tuple[Excluded, ...] = ()

    @property
    def tier(self) -> int:
        return next((t.tier for t in self.tiers if t.quorum), 0)

    def result(self, tier: int) -> TierResult | None:
        return self.tiers[tier - 1] if 0 < tier <= len(self.tiers) else None

    @property
    def price(self) -> float:
        r = self.result(self.tier)
        return r.price if r else math.nan


@dataclass(frozen=True, slots=True)
class Mark:
    """What the margin engine reads: the latest validated price with the market's current status.

    `price` and `ts` belong to the last validation; when the status is held or stale they keep
    their old values while `seq` moves on. `candidate` is the latest proposal (display only).
    """

    market: str
    price: float
    confidence: float
    ts: float  # when `price` was validated
    seq: int
    status: Status
    tier: int
    sources: tuple[str, ...]
    excluded: tuple[Excluded, ...] = field(default=(), compare=False)
    candidate: float = field(default=math.nan, compare=False)

    @property
    def ts_ms(self) -> int:
        return round(self.ts * 1000)

    def with_seq(self, seq: int) -> Mark:
        """This mark with its publication `seq`: dataclasses.replace, spelled out (a sink calls it
        for every mark it writes, and `replace` costs several times more per call)."""
        return Mark(
            self.market, self.price, self.confidence, self.ts, seq, self.status, self.tier, self.sources,
            self.excluded, self.candidate,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PerpMark:
    """A market's perpetual mark (oracle.perp): what a perp venue's margin engine liquidates with.

    `status` is the index's; when the index is not usable (`held`, `stale`) `price` and `ts` are the
    last computed ones and c1..c3 are NaN. `index` is the index price it was computed against.
    """

    market: str
    price: float
    index: float
    c1: float
    c2: float
    c3: float
    ts: float  # when `price` was computed
    seq: int
    status: Status
    # c3 is the index: no external perp counted this tick (replay's report.json counts it). Not part
    # of the Redis hash, so a perp mark read back has False and still equals the one written.
    c3_fallback: bool = field(default=False, compare=False)

    @property
    def ts_ms(self) -> int:
        return round(self.ts * 1000)

    @property
    def premium_bps(self) -> float:
        return (self.price / self.index - 1.0) * 1e4
