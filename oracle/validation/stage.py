"""The dispute stage: turns each tick's Candidate into the market's Mark, plus events.

Pure and deterministic: no I/O, no clock of its own (`now` comes in), no randomness, so the replay
harness gets byte-identical marks and events from the same input. Per market and tick:

    tier machine (hysteresis) ► detectors (open / self-close disputes) ► jump guard ► Mark

An open dispute holds the market at its last validated price until it is resolved (or, for a
detector's own dispute, until its condition clears). Manual disputes come in through
`open_dispute`/`resolve`; their events are the caller's to record (see
`disputes.model.dispute_event`). The records, their store, API and webhook live in disputes/.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from disputes.model import (
    Action,
    Decision,
    Dispute,
    DisputeClosed,
    Event,
    EventKind,
    Origin,
    Outcome,
    Reason,
    UnknownDispute,
    UnknownMarket,
    dispute_event,
    finite_or_none,
)
from oracle.models import Candidate, Exclusion, Mark, Status, TierResult
from oracle.settings import Policy, Settings
from oracle.validation.detectors import Anchor, anchor_breached, confirming_tier, divergent_tiers
from oracle.validation.guard import Change, JumpGuard, Verdict
from oracle.validation.state import MUTE_ANCHOR, MUTE_DIVERGENCE, STATUS_CODE, Column, StateArrays
from oracle.validation.tiers import NO_TIER, TierMachine

_URL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # an id goes into a URL path
KEEP_CLOSED = 10_000  # closed disputes kept in memory (for replay's disputes.csv); Redis keeps all

_WINDOW_EVENTS = {
    Change.OPENED: EventKind.JUMP_HELD,
    Change.RESTARTED: EventKind.WINDOW_RESTARTED,
    Change.PASSED: EventKind.JUMP_VALIDATED,
}


@dataclass(frozen=True, slots=True)
class Validated:
    """The last validated price of a market and where it came from."""

    price: float
    confidence: float
    ts: float
    tier: int
    sources: tuple[str, ...]


NOTHING_VALIDATED = Validated(math.nan, math.nan, 0.0, NO_TIER, ())


class MarketState:
    """The validation state of one market: a view of its row of a StateArrays (oracle.validation),
    which the quiet path advances in bulk. Only what is not a number lives here: the policy, the
    frozen sources and the anchor's closed buckets."""

    published_ts = Column("pub_ts", float)
    anchor_confirmed = Column("anchor_confirmed", bool)

    def __init__(self, policy: Policy, cols: StateArrays | None = None, row: int = 0) -> None:
        cols = cols if cols is not None else StateArrays(1)
        cols.reset_row(row)
        self._cols, self._row = cols, row
        self.tiers = TierMachine(policy.recover_ticks, policy.max_deviation_bps, cols, row)
        self.guard = JumpGuard(policy.max_jump_bps, policy.dispute_window_ms, policy.max_deviation_bps, cols, row)
        self.anchor = Anchor(policy.anchor_window_s, cols=cols, row=row)
        self.policy = policy
        self._frozen: frozenset[str] = frozenset()
        cols.live[row] = True

    def rebind(self, cols: StateArrays, row: int) -> None:
        """Point this view (and its machines) at another row, which already holds its state."""
        for view in (self, self.tiers, self.guard, self.anchor):
            view._cols, view._row = cols, row

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._policy = policy
        c, i = self._cols, self._row
        c.pol_max_dev[i], c.pol_anchor_dev[i] = policy.max_deviation_bps, policy.anchor_deviation_bps
        c.pol_heartbeat_ms[i] = policy.heartbeat_ms

    @property
    def last(self) -> Validated:
        c, i = self._cols, self._row  # .item: a Python scalar, as the scalar code always had
        return Validated(
            c.last_price.item(i), c.last_conf.item(i), c.last_ts.item(i), c.last_tier.item(i), c.last_sources[i]
        )

    @last.setter
    def last(self, v: Validated) -> None:
        c, i = self._cols, self._row
        c.last_price[i], c.last_conf[i], c.last_ts[i], c.last_tier[i] = v.price, v.confidence, v.ts, v.tier
        c.last_sources[i] = v.sources

    @property
    def candidate(self) -> TierResult | None:
        """The tier in use's result at the latest tick."""
        c, i = self._cols, self._row
        if not c.cand_has[i]:
            return None
        return TierResult(
            int(c.cand_tier[i]),
            float(c.cand_price[i]),
            float(c.cand_conf[i]),
            c.cand_sources[i],
            bool(c.cand_quorum[i]),
        )

    @candidate.setter
    def candidate(self, r: TierResult | None) -> None:
        c, i = self._cols, self._row
        if r is None:
            c.cand_has[i], c.cand_price[i] = False, math.nan
            return
        c.cand_has[i], c.cand_tier[i], c.cand_price[i], c.cand_conf[i] = True, r.tier, r.price, r.confidence
        c.cand_sources[i], c.cand_quorum[i] = r.sources, r.quorum

    @property
    def frozen(self) -> frozenset[str]:
        return self._frozen

    @frozen.setter
    def frozen(self, sources: frozenset[str]) -> None:
        self._frozen = sources
        self._cols.frozen_any[self._row] = bool(sources)

    @property
    def muted(self) -> frozenset[Reason]:
        """Detectors silenced until their condition clears."""
        bits = int(self._cols.muted[self._row])
        return frozenset(r for r, bit in _MUTE_BITS.items() if bits & bit)

    def mute(self, reason: Reason) -> None:
        self._cols.muted[self._row] |= _MUTE_BITS[reason]

    def unmute(self, reason: Reason) -> None:
        self._cols.muted[self._row] &= ~_MUTE_BITS[reason]

    def retune(self, policy: Policy) -> None:
        """New thresholds for the same history (a config reload)."""
        self.policy = policy
        self.tiers.recover_ticks, self.tiers.max_deviation_bps = policy.recover_ticks, policy.max_deviation_bps
        self.guard.retune(policy.max_jump_bps, policy.dispute_window_ms, policy.max_deviation_bps)
        self.anchor.rewindow(policy.anchor_window_s)


_MUTE_BITS = {Reason.ANCHOR: MUTE_ANCHOR, Reason.DIVERGENCE: MUTE_DIVERGENCE}


class DisputeStage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._markets: dict[str, MarketState] = {}
        self._open: dict[str, dict[str, Dispute]] = {}  # market -> id -> open dispute
        # Every market's validation state, a row each (oracle.validation); a MarketState is a view.
        self.rows: dict[str, int] = {m: i for i, m in enumerate(settings.market_order())}
        self.cols = StateArrays(len(self.rows), _max_tiers(settings))
        self.generation = 0  # bumped when the rows are renumbered (a reload)
        self._row_names: list[str] | None = None
        self._closed: dict[str, Dispute] = {}  # the latest KEEP_CLOSED closed ones, oldest first
        self._counter = 0

    # --- the tick ---
    def process(self, candidate: Candidate, now: float) -> Decision:
        st = self._state(candidate.market)
        events: list[Event] = []
        step = st.tiers.step(candidate)
        if step.changed:
            detail = {"from": step.previous, "to": step.tier, "status": step.status.value}
            events.append(Event(EventKind.TIER_CHANGED, candidate.market, now, detail))
        events += self._frozen_events(st, candidate, now)
        result = candidate.result(step.tier)
        st.candidate = result
        events += self._detect(st, candidate, result, now)
        status = step.status
        if result is None:
            st.guard.interrupt()
        else:
            held, window_events = self._guard(st, candidate.market, result, now)
            events += window_events
            status = Status.HELD if held else step.status
        st.anchor.observe(st.last.price, now)
        mark = self._mark(st, candidate, status, step.tier)
        return Decision(mark, self._should_publish(st, mark, now), events)

    def _guard(self, st: MarketState, market: str, result: TierResult, now: float) -> tuple[bool, list[Event]]:
        """Run the jump guard; validate the candidate unless held. True when held."""
        g = st.guard.step(result.price, st.last.price, now, self._is_disputed(market))
        events = []
        if (kind := _WINDOW_EVENTS.get(g.change)) is not None:
            detail = {"candidate": finite_or_none(result.price), "last": finite_or_none(st.last.price)}
            events.append(Event(kind, market, now, detail))
        if g.verdict is Verdict.HOLD:
            return True, events
        st.last = Validated(result.price, result.confidence, now, result.tier, result.sources)
        return False, events

    def close_buckets(self, rows: Iterable[int], index: int) -> None:
        """Close the anchor bucket of the markets at `rows` of `cols`: time has entered bucket `index`
        (the quiet path of oracle.validation feeds the anchor in bulk, but closes buckets here)."""
        markets = self._by_row()
        for i in rows:
            self._markets[markets[i]].anchor._close_bucket(index)

    def _by_row(self) -> list[str]:
        if self._row_names is None or len(self._row_names) != len(self.rows):
            self._row_names = list(self.rows)
        return self._row_names

    # --- detectors ---
    def _detect(self, st: MarketState, c: Candidate, result: TierResult | None, now: float) -> list[Event]:
        events = self._divergence(st, c, now)
        if result is not None and not math.isnan(st.last.price) and st.anchor.enabled:
            events += self._anchor(st, c, result, now)
        return events

    def _anchor(self, st: MarketState, c: Candidate, result: TierResult, now: float) -> list[Event]:
        anchor = st.anchor.mean()
        if not anchor_breached(result.price, anchor, st.policy.anchor_deviation_bps):
            st.unmute(Reason.ANCHOR)
            st.anchor_confirmed = False
            return self._revert(c.market, Reason.ANCHOR, now)
        confirmed_by = confirming_tier(result.price, result.tier, c.tiers, st.policy.max_deviation_bps)
        if confirmed_by is not None:
            # Genuine: the market really moved, as an independent tier confirms. That clears the
            # detector's condition, so a dispute it opened before the confirmation reverts.
            events = self._revert(c.market, Reason.ANCHOR, now)
            if not st.anchor_confirmed:
                detail = {"anchor": anchor, "candidate": result.price, "confirmed_by": confirmed_by}
                events.append(Event(EventKind.ANCHOR_CONFIRMED, c.market, now, detail))
            st.anchor_confirmed = True
            return events
        st.anchor_confirmed = False
        return self._detector_opens(st, c.market, Reason.ANCHOR, result.price, now, f"anchor {anchor!r}")

    def _divergence(self, st: MarketState, c: Candidate, now: float) -> list[Event]:
        pair = divergent_tiers(c.tiers, st.policy.max_deviation_bps)
        if pair is None:
            st.unmute(Reason.DIVERGENCE)
            return self._revert(c.market, Reason.DIVERGENCE, now)
        price = st.candidate.price if st.candidate is not None else math.nan
        note = f"tiers {pair[0]} and {pair[1]} disagree"
        return self._detector_opens(st, c.market, Reason.DIVERGENCE, price, now, note)

    def _detector_opens(
        self, st: MarketState, market: str, reason: Reason, price: float, now: float, note: str
    ) -> list[Event]:
        if reason in st.muted or self._open_of(market, reason, "detector"):
            return []
        d = self._new_dispute(market, reason, now, "detector", note, price)
        return [dispute_event(d)]

    def _revert(self, market: str, reason: Reason, now: float) -> list[Event]:
        if not self._open.get(market):
            return []  # nothing open, nothing to revert (the usual tick)
        events = []
        for d in self._open_of(market, reason, "detector"):
            events.append(dispute_event(self._close(d, Outcome.REVERTED, now)))
        return events

    def _frozen_events(self, st: MarketState, c: Candidate, now: float) -> list[Event]:
        if not st.frozen and not c.excluded:
            return []  # the usual tick: nothing was frozen, nothing is
        frozen = frozenset(e.source for e in c.excluded if e.reason is Exclusion.FROZEN)
        thawed, newly = st.frozen - frozen, frozen - st.frozen
        changes = ((EventKind.SOURCE_FROZEN, newly), (EventKind.SOURCE_THAWED, thawed))
        events = [Event(kind, c.market, now, {"source": s}) for kind, new in changes for s in sorted(new)]
        st.frozen = frozen
        return events

    # --- disputes ---
    def open_dispute(self, market: str, reason: Reason | str, now: float, *, note: str = "") -> Dispute:
        """Open a manual dispute; the market is held from its next tick until it is resolved."""
        st = self._state(market)
        code = Reason(reason)  # ValueError on an unknown code: the API checks codes first
        price = st.candidate.price if st.candidate is not None else math.nan
        return self._new_dispute(market, code, now, "manual", note, price)

    def resolve(self, dispute_id: str, action: Action, now: float) -> Dispute:
        d = self.dispute(dispute_id)
        if not d.is_open:
            raise DisputeClosed(dispute_id)
        return self._rule(d, Outcome.of(action), now)

    def adopt(self, d: Dispute) -> None:
        """Take in a dispute as another replica (sharing the store) opened or closed it."""
        known = self._find(d.id)
        self._counter = max(self._counter, _serial(d.id))
        if d.market not in self.settings.markets:
            return
        if known is None and d.is_open:
            self._add(d)
        elif known is not None and known.is_open and d.outcome is not None:
            self._rule(known, d.outcome, d.closed_ts if d.closed_ts is not None else d.opened_ts)

    def reconfigure(self, settings: Settings) -> None:
        """A reloaded config, applied from the next tick. A kept market keeps its tier state, jump
        guard window, anchor history, last validated price and open disputes, under its new policy's
        thresholds; a removed market is forgotten here (its disputes stay in the store, and come back
        through `adopt` if it is added again); an added one starts afresh at its first tick."""
        for market in [m for m in self._markets if m not in settings.markets]:
            del self._markets[market]
        for market in [m for m in self._open if m not in settings.markets]:
            del self._open[market]
        rows = {m: i for i, m in enumerate(settings.market_order())}
        cols = StateArrays(len(rows), _max_tiers(settings))
        for market, st in self._markets.items():
            cols.copy_row(rows[market], self.cols, self.rows[market])
            st.rebind(cols, rows[market])
        for market, ds in self._open.items():
            cols.open_n[rows[market]] = len(ds)
        self.rows, self.cols, self.generation = rows, cols, self.generation + 1
        self._row_names = None
        for market, st in self._markets.items():
            policy = settings.policy_for(market)
            if policy != st.policy:
                st.retune(policy)
        self.settings = settings

    def dispute(self, dispute_id: str) -> Dispute:
        """Raises UnknownDispute (also for a closed one older than the latest KEEP_CLOSED)."""
        d = self._find(dispute_id)
        if d is None:
            raise UnknownDispute(dispute_id)
        return d

    def open_counts(self) -> dict[str, int]:
        """Open disputes per market, every configured market included (the disputes_open gauge)."""
        return {m: len(self._open.get(m, ())) for m in self.settings.markets}

    def disputes(self) -> list[Dispute]:
        everything = [*self._closed.values(), *(d for ds in self._open.values() for d in ds.values())]
        return sorted(everything, key=lambda d: (d.opened_ts, _serial(d.id)))

    def restore(self, disputes: Iterable[Dispute], marks: Iterable[Mark] = ()) -> None:
        """After a restart: open disputes come back (their markets held), and so do the last marks.

        Without the last validated marks the stage holds a disputed market at no price at all, and
        the jump guard has nothing to compare the first candidate with; pass them when Redis has them.
        """
        for m in marks:
            if m.market in self.settings.markets and math.isfinite(m.price):
                st = self._state(m.market)
                st.last = Validated(m.price, m.confidence, m.ts, m.tier, m.sources)
                st.anchor.observe(m.price, m.ts)
        for d in disputes:
            self.adopt(d)

    def _rule(self, d: Dispute, outcome: Outcome, now: float) -> Dispute:
        """Close `d` and apply its outcome to the market."""
        closed = self._close(d, outcome, now)
        if outcome is Outcome.REVERTED:
            return closed
        st = self._state(d.market)
        if d.reason in (Reason.ANCHOR, Reason.DIVERGENCE):
            st.mute(d.reason)  # a ruled-on condition must not reopen its dispute next tick
        if outcome is Outcome.UPHELD:
            st.guard.uphold()
        else:
            self._accept_candidate(st, d.market, now)
        return closed

    def _accept_candidate(self, st: MarketState, market: str, now: float) -> None:
        st.guard.clear()
        c = st.candidate
        if c is None or not c.quorum or self._is_disputed(market):
            return
        st.last = Validated(c.price, c.confidence, now, c.tier, c.sources)
        if anchor_breached(c.price, st.anchor.mean(), st.policy.anchor_deviation_bps):
            st.anchor.reset(c.price, now)  # the operator ruled this is the level now

    def _new_dispute(self, market: str, reason: Reason, now: float, origin: Origin, note: str, price: float) -> Dispute:
        self._counter += 1
        d = Dispute(
            id=f"{_URL_UNSAFE.sub('_', market)}.{round(now * 1000)}.{self._counter}",
            market=market,
            reason=reason,
            opened_ts=now,
            origin=origin,
            note=note,
            candidate=price,
        )
        self._add(d)
        return d

    def _add(self, d: Dispute) -> None:
        self._open.setdefault(d.market, {})[d.id] = d
        self.cols.open_n[self.rows[d.market]] += 1

    def _close(self, d: Dispute, outcome: Outcome, now: float) -> Dispute:
        del self._open[d.market][d.id]
        self.cols.open_n[self.rows[d.market]] -= 1
        closed = self._closed[d.id] = d.closed(outcome, now)
        while len(self._closed) > KEEP_CLOSED:
            del self._closed[next(iter(self._closed))]
        return closed

    def _find(self, dispute_id: str) -> Dispute | None:
        for ds in self._open.values():
            if dispute_id in ds:
                return ds[dispute_id]
        return self._closed.get(dispute_id)

    def _open_of(self, market: str, reason: Reason, origin: Origin) -> list[Dispute]:
        ds = self._open.get(market)
        if not ds:
            return []  # the usual tick: nothing open on the market
        return [d for d in ds.values() if d.reason is reason and d.origin == origin]

    def _is_disputed(self, market: str) -> bool:
        return bool(self._open.get(market))

    # --- marks ---
    def _state(self, market: str) -> MarketState:
        st = self._markets.get(market)
        if st is None:
            if market not in self.settings.markets:
                raise UnknownMarket(market)
            st = MarketState(self.settings.policy_for(market), self.cols, self.rows[market])
            self._markets[market] = st
        return st

    def _mark(self, st: MarketState, c: Candidate, status: Status, tier: int) -> Mark:
        """Status and tier say where the market is now; price, ts and sources are the last validation's."""
        last = st.last
        return Mark(
            market=c.market,
            price=last.price,
            confidence=last.confidence,
            ts=last.ts,
            seq=0,
            status=status,
            tier=tier,
            sources=last.sources,
            excluded=c.excluded,
            candidate=st.candidate.price if st.candidate is not None else math.nan,
        )

    def _should_publish(self, st: MarketState, mark: Mark, now: float) -> bool:
        if math.isnan(mark.price):
            return False  # nothing validated yet: nothing the margin engine could use
        c, i = st._cols, st._row  # the last published mark's fields
        status = STATUS_CODE[mark.status]
        changed = (
            not c.pub_has[i]
            or (c.pub_price[i], c.pub_status[i], c.pub_tier[i]) != (mark.price, status, mark.tier)
            or not _same(float(c.pub_conf[i]), mark.confidence)
        )
        due = (now - st.published_ts) * 1000.0 >= st.policy.heartbeat_ms
        if changed or due:
            c.pub_has[i], c.pub_price[i], c.pub_status[i], c.pub_tier[i] = True, mark.price, status, mark.tier
            c.pub_conf[i], st.published_ts = mark.confidence, now
            return True
        return False


def _max_tiers(settings: Settings) -> int:
    return max((len(m.tiers) for m in settings.markets.values()), default=1)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _serial(dispute_id: str) -> int:
    tail = dispute_id.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0
