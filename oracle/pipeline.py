"""One tick of the oracle, shared by the daemon and the replay harness.

snapshot the QuoteBook > aggregate level by level > the dispute stage turns each candidate into the
market's mark > the marks to publish. No I/O here: the caller publishes (Redis in the daemon, an
in-memory sink in a replay), which is what keeps a replay faithful to the live path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from disputes.model import Event
from disputes.stage import DisputeStage
from oracle.aggregate import Aggregator
from oracle.metrics import Metrics
from oracle.models import Candidate, Mark
from oracle.quotebook import QuoteBook
from oracle.settings import Settings


@dataclass
class TickOutput:
    marks: list[Mark]  # every market's mark this tick (seq not yet assigned)
    publish: list[Mark]  # the ones due for publication
    candidates: list[Candidate]
    events: list[Event] = field(default_factory=list)  # dispute-stage events, for logs and notifications


class Pipeline:
    def __init__(self, settings: Settings, book: QuoteBook, metrics: Metrics, stage: DisputeStage) -> None:
        self.settings = settings
        self.book = book
        self.metrics = metrics
        self.stage = stage
        self.aggregator = Aggregator(settings, book)
        self._snapshot = book.snapshot()

    def tick(self, now: float) -> TickOutput:
        started, cpu_started = time.perf_counter(), time.thread_time()
        out = TickOutput([], [], [])

        def validate(cands: list[Candidate]) -> list[Mark]:
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

        out.marks = self.aggregator.run(self.book.snapshot(self._snapshot), now, validate)
        self.metrics.aggregation_seconds.observe(time.perf_counter() - started)
        self.metrics.tick_cpu_seconds.observe(time.thread_time() - cpu_started)
        return out
