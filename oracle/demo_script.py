"""What `markd demo` plays and what it notices: the scripted incidents, and the event log.

Both are pure: `IncidentPlayer.due(elapsed)` says which steps start now (the demo applies their
shocks to the simulated venues), and `EventLog.observe(...)` turns successive views of the oracle
(marks, excluded quotes, disputes) into the lines the demo scrolls. Tests drive them directly and
through the running demo.

The incidents, announced on screen as they start (then every CYCLE_S again):
  1. one exchange prints BTC 30 % high: markd excludes that quote as `deviation`; the mark does not move.
  2. every exchange pumps SOL 30 % while Pyth and Chainlink (the fallback tier) do not follow: the
     mark is held at its last validated price and a detector opens a dispute: `divergence` (the
     fallback tier disagrees with tier 1), and `anchor` too when tier 1 keeps its quorum through
     the jump (the candidate is 30 % from the hour's mean; during the instant pump the exchanges
     usually exclude one another for a tick, the market steps to its fallback tier, and only the
     divergence detector sees it).
  3. the pump ends: the detectors' disputes revert by themselves and the mark is `ok` again.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from disputes.model import Dispute
from oracle.models import Excluded, Mark, Status

EXCHANGES = ("coinbase", "kraken", "bitstamp", "binance", "okx", "bybit")
SPIKE_VENUE, SPIKE_COIN = "kraken", "BTC"
PUMP_COIN = "SOL"
SHOCK = 1.30  # +30 %


@dataclass(frozen=True, slots=True)
class Timing:
    """When the incidents start and end, in seconds after the demo starts (per cycle)."""

    spike_at: float = 20.0
    spike_end: float = 35.0
    pump_at: float = 50.0
    pump_end: float = 75.0
    cycle: float = 120.0  # the script starts again this long after it started


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float
    announce: str
    shocks: tuple[tuple[str, str, float], ...]  # (venue, base coin, factor); factor 1.0 ends a shock


def incident_script(timing: Timing = Timing()) -> list[Step]:
    spike = f"{SPIKE_VENUE} prints {SPIKE_COIN} {SHOCK - 1:+.0%}"
    pump = f"every exchange pumps {PUMP_COIN} {SHOCK - 1:+.0%}; Pyth and Chainlink do not follow"
    return [
        Step(
            timing.spike_at,
            f"INCIDENT: {spike}. Expect: that quote excluded as deviation, the {SPIKE_COIN}-USD mark unmoved.",
            ((SPIKE_VENUE, SPIKE_COIN, SHOCK),),
        ),
        Step(
            timing.spike_end,
            f"incident over: {SPIKE_VENUE} quotes {SPIKE_COIN} honestly again.",
            ((SPIKE_VENUE, SPIKE_COIN, 1.0),),
        ),
        Step(
            timing.pump_at,
            f"INCIDENT: {pump}. Expect: the {PUMP_COIN}-USD mark held, a detector's dispute opened.",
            tuple((venue, PUMP_COIN, SHOCK) for venue in EXCHANGES),
        ),
        Step(
            timing.pump_end,
            f"incident over: the {PUMP_COIN} pump ends. Expect: the disputes reverted, the mark ok again.",
            tuple((venue, PUMP_COIN, 1.0) for venue in EXCHANGES),
        ),
    ]


class IncidentPlayer:
    """Hands out each step once when its time comes; the script repeats every `timing.cycle`."""

    def __init__(self, steps: list[Step], cycle: float) -> None:
        self.steps = sorted(steps, key=lambda s: s.at_s)
        self.cycle = cycle
        self._next = 0  # index into the endless sequence cycle 0 steps, cycle 1 steps, ...

    def due(self, elapsed_s: float) -> list[Step]:
        out: list[Step] = []
        while self.steps:
            n, i = divmod(self._next, len(self.steps))
            if n * self.cycle + self.steps[i].at_s > elapsed_s:
                break
            out.append(self.steps[i])
            self._next += 1
        return out


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the demo's event log. `kind`: incident, tier, held, released, excluded,
    readmitted, dispute_opened, dispute_closed."""

    ts: float
    kind: str
    market: str
    text: str

    def line(self) -> str:
        return f"{time.strftime('%H:%M:%S', time.localtime(self.ts))}  {self.text}"


@dataclass
class EventLog:
    """Diffs successive views of the oracle into events; keeps every event and the latest `keep` lines."""

    keep: int = 12
    events: list[Event] = field(default_factory=list)
    recent: deque[Event] = field(default_factory=deque)
    _status: dict[str, tuple[Status, int]] = field(default_factory=dict)
    _excluded: dict[tuple[str, str], str] = field(default_factory=dict)  # (market, source) -> reason
    _disputes: dict[str, bool] = field(default_factory=dict)  # id -> open

    def add(self, ts: float, kind: str, market: str, text: str) -> None:
        event = Event(ts, kind, market, text)
        self.events.append(event)
        self.recent.append(event)
        while len(self.recent) > self.keep:
            self.recent.popleft()

    def observe(
        self,
        now: float,
        marks: Mapping[str, Mark | None],
        excluded: Mapping[str, Iterable[Excluded]],
        disputes: Iterable[Dispute],
    ) -> None:
        for market, mark in marks.items():
            if mark is not None:
                self._mark(now, market, mark)
        for market, quotes in excluded.items():
            self._exclusions(now, market, quotes)
        for d in disputes:
            self._dispute(now, d)

    def _mark(self, now: float, market: str, mark: Mark) -> None:
        before = self._status.get(market)
        self._status[market] = (mark.status, mark.tier)
        if before is None:
            return
        status, tier = before
        if tier != mark.tier and mark.tier:
            self.add(now, "tier", market, f"{market}: tier {tier} -> {mark.tier} ({mark.status})")
        if mark.status is Status.HELD and status is not Status.HELD:
            self.add(now, "held", market, f"{market}: HELD at its last validated price {mark.price:.6g}")
        elif status is Status.HELD and mark.status is not Status.HELD:
            self.add(now, "released", market, f"{market}: released, {mark.status} at {mark.price:.6g}")
        elif status is not mark.status and tier == mark.tier:
            self.add(now, "status", market, f"{market}: {status} -> {mark.status}")

    def _exclusions(self, now: float, market: str, quotes: Iterable[Excluded]) -> None:
        # Only the reasons a viewer can act on; a quote aging out during an outage is the outage.
        now_out = {(market, e.source): e for e in quotes if e.reason.value in ("deviation", "sanity", "frozen")}
        for key, e in now_out.items():
            if self._excluded.get(key) != e.reason.value:
                shown = f" ({e.price:.6g})" if math.isfinite(e.price) else ""
                self.add(now, "excluded", market, f"{market}: {e.source} {e.pair}{shown} excluded: {e.reason}")
        for key in [k for k in self._excluded if k[0] == market and k not in now_out]:
            self.add(now, "readmitted", market, f"{market}: {key[1]} counts again")
        for key in [k for k in self._excluded if k[0] == market]:
            del self._excluded[key]
        self._excluded.update({k: e.reason.value for k, e in now_out.items()})

    def _dispute(self, now: float, d: Dispute) -> None:
        was_open = self._disputes.get(d.id)
        self._disputes[d.id] = d.is_open
        if was_open is None:  # new to us (even if it opened and closed between two looks)
            origin = "a detector" if d.origin == "detector" else "an operator"
            self.add(now, "dispute_opened", d.market, f"{d.market}: dispute {d.id} OPENED ({d.reason}, by {origin})")
        if not d.is_open and was_open is not False:
            self.add(now, "dispute_closed", d.market, f"{d.market}: dispute {d.id} closed: {d.outcome}")
