"""One tick of the oracle, shared by the daemon and the replay harness.

snapshot the QuoteBook > aggregate level by level > the dispute stage turns each candidate into the
market's mark > the marks to publish. No I/O here: the caller publishes (Redis in the daemon, an
in-memory sink in a replay), which is what keeps a replay faithful to the live path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from disputes.model import Event
from disputes.stage import DisputeStage
from oracle.aggregate import Aggregator
from oracle.metrics import Metrics
from oracle.models import Candidate, Mark, PerpMark
from oracle.perp import PerpPlan, PerpStage
from oracle.quotebook import BookSnapshot, QuoteBook
from oracle.settings import Settings


@dataclass
class TickOutput:
    marks: list[Mark]  # every market's mark this tick (seq not yet assigned)
    publish: list[Mark]  # the ones due for publication
    candidates: list[Candidate]
    events: list[Event] = field(default_factory=list)  # dispute-stage events, for logs and notifications
    perps: list[PerpMark] = field(default_factory=list)  # every perp market's perp mark this tick
    perp_publish: list[PerpMark] = field(default_factory=list)  # the ones due for publication


class Pipeline:
    def __init__(self, settings: Settings, book: QuoteBook, metrics: Metrics, stage: DisputeStage) -> None:
        self.settings = settings
        self.book = book
        self.metrics = metrics
        self.stage = stage
        self.aggregator = Aggregator(settings, book)
        self._snapshot = book.snapshot()
        plan = PerpPlan.build(settings, book, self.aggregator.plan.index)
        self.perp = PerpStage(plan) if plan else None  # None: no market has a [markets.M.perp] table

    def carry(self, old: Pipeline) -> None:
        """Take over the tick-to-tick memory of `old` (a config reload builds a new pipeline): the
        freeze rule's, the conversion rates' and the perp marks' state of what both configs have."""
        self.aggregator.carry(old.aggregator)
        if self.perp is not None and old.perp is not None:
            self.perp.carry(old.perp)

    def tick(self, now: float) -> TickOutput:
        started, cpu_started = time.perf_counter(), time.thread_time()
        snapshot = self.book.snapshot(self._snapshot)
        out = self.tick_on(snapshot, now)
        self.metrics.aggregation_seconds.observe(time.perf_counter() - started)
        self.metrics.tick_cpu_seconds.observe(time.thread_time() - cpu_started)
        return out

    def tick_on(self, snapshot: BookSnapshot, now: float, done: Sequence[list[Candidate]] = ()) -> TickOutput:
        """The tick on a given view of the book; `done`: the candidates of the first levels, already
        aggregated (a replay chunk aggregates level 0 for many ticks at once: oracle.replay.chunked)."""
        out = TickOutput([], [], [])
        out.marks = self.aggregator.run(snapshot, now, lambda cands: self._validate(cands, now, out), done)
        if self.perp is not None:
            agg = self.aggregator
            by_market = {m.market: m for m in out.marks}
            out.perps = self.perp.tick(snapshot, now, by_market, agg.rates, agg.rate_ts, agg.plan.conv_max_age_s)
            out.perp_publish = self.perp.due(out.perps, {m.market for m in out.publish})
            for p in out.perps:
                self.metrics.perp_mark(p)
        return out

    def _validate(self, cands: list[Candidate], now: float, out: TickOutput) -> list[Mark]:
        """The dispute stage turns a level's candidates into marks, in order (dispute ids count up)."""
        marks = []
        for cand in cands:
            decision = self.stage.process(cand, now)
            marks.append(decision.mark)
            if decision.publish:
                out.publish.append(decision.mark)
            out.events += decision.events
            for ex in cand.excluded:
                self.metrics.quote_excluded(cand.market, ex.source, ex.reason.value)
        out.candidates += cands
        return marks
