"""The values of the dispute stage: a Dispute, an Event, a Decision, and the errors it raises.

Errors (all subclass DisputeError, which the API maps to HTTP statuses):

    DisputeError
    ├── UnknownMarket     the market is not in the config            (400)
    ├── UnknownDispute    no dispute has this id                     (404)
    ├── DisputeClosed     the dispute was already resolved/reverted  (409)
    └── TooManyOpen       the market has disputes.max_open_per_market open already (429)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from oracle.models import Mark

Action = Literal["uphold", "reject"]
Origin = Literal["manual", "detector"]


class Reason(StrEnum):
    """Why a dispute was opened: a fixed code set, so it is safe as a metric label."""

    MANUAL = "manual"
    JUMP = "jump"
    ANCHOR = "anchor"
    DIVERGENCE = "divergence"

    def __str__(self) -> str:
        return self.value


class Outcome(StrEnum):
    UPHELD = "upheld"  # the candidate was bad: hold the last validated price until sources return
    REJECTED = "rejected"  # the candidate was fine: validate it now
    REVERTED = "reverted"  # a detector's condition cleared by itself (the attack ended)

    def __str__(self) -> str:
        return self.value

    @staticmethod
    def of(action: Action) -> Outcome:
        """The outcome an operator's resolve action rules."""
        return Outcome.UPHELD if action == "uphold" else Outcome.REJECTED


class EventKind(StrEnum):
    TIER_CHANGED = "tier_changed"
    DISPUTE_OPENED = "dispute_opened"
    DISPUTE_CLOSED = "dispute_closed"
    JUMP_HELD = "jump_held"  # a jump opened a dispute window
    JUMP_VALIDATED = "jump_validated"  # the window ended quietly and the jump validated
    WINDOW_RESTARTED = "window_restarted"  # the candidate kept moving, or a dispute was open
    ANCHOR_CONFIRMED = "anchor_confirmed"  # far from the anchor, but another tier agrees: genuine
    SOURCE_FROZEN = "source_frozen"
    SOURCE_THAWED = "source_thawed"

    def __str__(self) -> str:
        return self.value


# The events an operator wants pushed to them (webhook); the rest are only audited.
NOTIFIED = frozenset({EventKind.TIER_CHANGED, EventKind.DISPUTE_OPENED, EventKind.DISPUTE_CLOSED})


class DisputeError(Exception):
    """Base of every error the dispute stage raises."""


class UnknownMarket(DisputeError):
    pass


class UnknownDispute(DisputeError):
    pass


class DisputeClosed(DisputeError):
    pass


class TooManyOpen(DisputeError):
    def __init__(self, market: str, limit: int) -> None:
        super().__init__(f"{market} has {limit} open disputes (disputes.max_open_per_market): resolve one first")
        self.market = market
        self.limit = limit


# Where a listing resumes: after the dispute with this (opened_ts, id), the listing's order.
Cursor = tuple[float, str]


def listing_key(d: Dispute) -> Cursor:
    return (d.opened_ts, d.id)


def wanted(d: Dispute, status: str | None, market: str | None, after: Cursor | None) -> bool:
    """Whether a listing filtered by `status` and `market` shows `d` on a page after `after`."""
    return (
        (status is None or d.status == status)
        and (market is None or d.market == market)
        and (after is None or listing_key(d) > after)
    )


def page_of(
    disputes: Iterable[Dispute], status: str | None, market: str | None, limit: int, after: Cursor | None
) -> tuple[list[Dispute], bool]:
    """One page of a listing from disputes in memory, oldest first; True when more follow."""
    matching = sorted((d for d in disputes if wanted(d, status, market, after)), key=listing_key)
    return matching[:limit], len(matching) > limit


@dataclass(frozen=True, slots=True)
class Dispute:
    """One dispute of one market. `note` is the operator's free text; `reason` is always a code."""

    id: str
    market: str
    reason: Reason
    opened_ts: float
    origin: Origin = "manual"
    note: str = ""
    candidate: float = math.nan  # the candidate price when it was opened
    closed_ts: float | None = None
    outcome: Outcome | None = None

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    @property
    def status(self) -> str:
        return "open" if self.is_open else "closed"

    def closed(self, outcome: Outcome, now: float) -> Dispute:
        return replace(self, outcome=outcome, closed_ts=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "market": self.market,
            "reason": self.reason.value,
            "status": self.status,
            "opened_ts": self.opened_ts,
            "origin": self.origin,
            "note": self.note,
            "candidate": None if math.isnan(self.candidate) else self.candidate,
            "closed_ts": self.closed_ts,
            "outcome": None if self.outcome is None else self.outcome.value,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Dispute:
        origin: Origin = "detector" if d.get("origin") == "detector" else "manual"
        candidate = d.get("candidate")
        outcome = d.get("outcome")
        return Dispute(
            id=str(d["id"]),
            market=str(d["market"]),
            reason=Reason(d["reason"]),
            opened_ts=float(d["opened_ts"]),
            origin=origin,
            note=str(d.get("note", "")),
            candidate=math.nan if candidate is None else float(candidate),
            closed_ts=None if d.get("closed_ts") is None else float(d["closed_ts"]),
            outcome=None if outcome is None else Outcome(outcome),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Event:
    """Something the stage decided that an operator may care about (audited in `P:disputes`)."""

    kind: EventKind
    market: str
    ts: float
    detail: Mapping[str, str | float | int | None] = field(default_factory=dict)
    dispute: Dispute | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "market": self.market, "ts": self.ts}
        out.update(self.detail)
        if self.dispute is not None:
            out["dispute"] = self.dispute.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def log_fields(self) -> dict[str, Any]:
        """Flat context for a structured log line (`log.info(event.kind, extra=...)`)."""
        out: dict[str, Any] = {"market": self.market, **self.detail}
        if self.dispute is not None and self.dispute.note:
            out["note"] = self.dispute.note
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """The stage's answer for one market and tick."""

    mark: Mark
    publish: bool
    events: list[Event]


def deviation_bps(price: float, reference: float) -> float:
    """|price - reference| in basis points of reference (inf when either is unusable)."""
    if not (math.isfinite(price) and math.isfinite(reference)) or reference <= 0:
        return math.inf
    return abs(price - reference) / reference * 10_000.0


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def dispute_event(d: Dispute) -> Event:
    """The audit event of a dispute opening or closing (the `ts` is when that happened)."""
    detail: dict[str, str | None] = {"id": d.id, "reason": d.reason.value}
    if d.is_open:
        return Event(EventKind.DISPUTE_OPENED, d.market, d.opened_ts, detail, d)
    detail["outcome"] = d.outcome.value if d.outcome else None
    ts = d.opened_ts if d.closed_ts is None else d.closed_ts
    return Event(EventKind.DISPUTE_CLOSED, d.market, ts, detail, d)
