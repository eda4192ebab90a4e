"""One tick of the oracle, shared by the daemon and the replay harness.

snapshot the QuoteBook > aggregate level by level > the dispute stage turns each candidate into the
market's mark > the marks to publish. No I/O here: the caller publishes (Redis in the daemon, an
in-memory sink in a replay), which is what keeps a replay faithful to the live path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disputes.model import Event
from oracle.aggregate import FROZEN, Aggregator, BlockResult, accepted_names, candidate
from oracle.metrics import Metrics
from oracle.models import Candidate, Exclusion, Mark, PerpMark
from oracle.perp import PerpPlan, PerpStage
from oracle.quotebook import BookSnapshot, QuoteBook
from oracle.settings import Settings
from oracle.validation.stage import DisputeStage
from oracle.validation.state import DEGRADED, OK, Lanes, MarkList, MarkTable, advance_quiet, publish_due, quiet_mask


@dataclass
class TickOutput:
    marks: MarkTable  # every market's mark this tick (seq not yet assigned), built when read
    publish: Sequence[Mark]  # the ones due for publication
    candidates: list[Candidate]  # those of the markets validated one by one (any with an exclusion)
    events: list[Event] = field(default_factory=list)  # dispute-stage events, for logs and notifications
    perps: list[PerpMark] = field(default_factory=list)  # every perp market's perp mark this tick
    perp_publish: list[PerpMark] = field(default_factory=list)  # the ones due for publication


@dataclass
class _Layout:
    """Where a block's lanes go in the validation stage's (markets, tiers) view, built once."""

    at: np.ndarray  # (markets,) the block's markets' positions in the tick's MarkTable
    plan: np.ndarray  # (markets,) their plan indices
    lane_j: np.ndarray  # (rows,) each lane's market, 0.. within the block
    lane_t: np.ndarray  # (rows,) each lane's tier - 1
    row_at: np.ndarray  # (markets, tiers) the lane of each market's tier, -1 where none
    n_tiers: np.ndarray  # (markets,)
    names: np.ndarray  # (rows,) object: each lane's source names
    rows: np.ndarray  # (markets,) rows in the stage's StateArrays (-1: unknown to it)
    generation: int  # the stage's row numbering `rows` is for


class Pipeline:
    # Below this many markets a block (or an aggregated level) goes one by one through the dispute
    # stage: the array steps cost a fixed ~0.3-0.5 ms, a market one by one ~20-60 µs (a replay's
    # handful of markets). Both paths give the same answers (tests/oracle/test_validation.py).
    array_min_markets = 24

    def __init__(self, settings: Settings, book: QuoteBook, metrics: Metrics, stage: DisputeStage) -> None:
        self.settings = settings
        self.book = book
        self.metrics = metrics
        self.stage = stage
        self.aggregator = Aggregator(settings, book)
        self._snapshot = book.snapshot()
        plan = PerpPlan.build(settings, book, self.aggregator.plan.index)
        self.perp = PerpStage(plan) if plan else None  # None: no market has a [markets.M.perp] table
        self._layouts = self._lay_out()
        self._order = [self.aggregator.plan.markets[i] for ls in self._layouts for lay in ls for i in lay.plan.tolist()]
        self._position = {m: k for k, m in enumerate(self._order)}  # a market's place in the MarkTable

    def layouts(self, level: int) -> list[_Layout]:
        """Where the level's blocks' markets go: their rows in the stage (kept up to date) and their
        positions in a tick's MarkTable."""
        return [self._rows(lay) for lay in self._layouts[level]]

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
        table = MarkTable(self._order)
        out = TickOutput(table, [], [])
        due: list[np.ndarray] = []
        layouts = iter(self._layouts)

        def validate(results: list[BlockResult], ready: list[Candidate] | None) -> tuple[np.ndarray, Any, Any]:
            lays = next(layouts)
            if ready is not None:  # aggregated already: one by one
                return self._validate_candidates(ready, table, out, due, now)
            for result, lay in zip(results, lays, strict=True):
                due.append(self._validate(result, self._rows(lay), table, out, now))
            at = np.concatenate([lay.plan for lay in lays])
            rows = np.concatenate([lay.rows for lay in lays])
            cols = self.stage.cols
            return at, cols.last_price[rows], cols.last_ts[rows]

        self.aggregator.run_levels(snapshot, now, validate, done)
        out.publish = MarkList(table, np.concatenate(due).tolist() if due else [])
        if self.perp is not None:
            agg = self.aggregator
            every = table.by_market()
            by_market = {m: every[m] for m in self.perp.plan.markets if m in every}
            out.perps = self.perp.tick(snapshot, now, by_market, agg.rates, agg.rate_ts, agg.plan.conv_max_age_s)
            out.perp_publish = self.perp.due(out.perps, {m.market for m in out.publish})
            for p in out.perps:
                self.metrics.perp_mark(p)
        return out

    def _validate_candidates(
        self, cands: list[Candidate], table: MarkTable, out: TickOutput, due: list[np.ndarray], now: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A level aggregated already (a replay chunk): the same split as `_validate`, the lanes read
        from the candidates. Returns its marks' plan indices, prices and times."""
        cols, n = self.stage.cols, len(cands)
        if n < self.array_min_markets:
            return self._one_by_one(cands, table, out, due, now)
        tiers = [c.tiers for c in cands]
        n_tiers = np.array([len(ts) for ts in tiers], dtype=np.intp)
        k = max(1, int(n_tiers.max(initial=1)))
        price, confidence = np.full((n, k), np.nan), np.full((n, k), np.nan)
        quorum = np.zeros((n, k), dtype=bool)
        cells = [(j, t.tier - 1, t.price, t.confidence, t.quorum) for j, ts in enumerate(tiers) for t in ts]
        if cells:
            j_, t_, p_, c_, q_ = (list(x) for x in zip(*cells, strict=True))
            price[j_, t_], confidence[j_, t_], quorum[j_, t_] = p_, c_, q_
        excluded = np.array([bool(c.excluded) for c in cands], dtype=bool)
        frozen = np.array([any(e.reason is Exclusion.FROZEN for e in c.excluded) for c in cands], dtype=bool)
        lanes = Lanes(price, confidence, quorum, quorum, n_tiers, excluded, frozen)
        rows = np.array([self.stage.rows.get(c.market, -1) for c in cands], dtype=np.intp)
        at = np.array([self._position[c.market] for c in cands], dtype=np.intp)
        quiet = quiet_mask(cols, rows, lanes, now)
        publish = np.zeros(n, dtype=bool)
        for j in np.flatnonzero(~quiet.mask).tolist():
            decision = self.stage.process(cands[j], now)
            table.put(int(at[j]), decision.mark)
            publish[j] = decision.publish
            out.events += decision.events
        calm = np.flatnonzero(quiet.mask)
        if calm.size:
            tier = quiet.tier[calm]
            sources = np.empty(n, dtype=object)
            for j, t in zip(calm.tolist(), tier.tolist(), strict=True):
                sources[j] = tiers[j][t - 1].sources
            advance_quiet(cols, rows, quiet, lanes, sources, now, self.stage.close_buckets)
            status = np.where(tier == 1, OK, DEGRADED).astype(np.int8)
            publish[calm] = publish_due(cols, rows[calm], status, now)
            table.fill(at[calm], cols, rows[calm], status)
            for j in calm[excluded[calm]].tolist():
                table.exclude(int(at[j]), cands[j].excluded)
        for cand in cands:
            for ex in cand.excluded:
                self.metrics.quote_excluded(cand.market, ex.source, ex.reason.value)
        out.candidates += cands
        due.append(at[publish])
        index = self.aggregator.plan.index
        plan = np.array([index[c.market] for c in cands], dtype=np.intp)
        return plan, cols.last_price[rows], cols.last_ts[rows]

    def _one_by_one(
        self, cands: list[Candidate], table: MarkTable, out: TickOutput, due: list[np.ndarray], now: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates one by one through the dispute stage, in order (dispute ids count up)."""
        index = self.aggregator.plan.index
        at, price, ts, publish = [], [], [], []
        for cand in cands:
            decision = self.stage.process(cand, now)
            mark, k = decision.mark, self._position[cand.market]
            table.put(k, mark)
            if decision.publish:
                publish.append(k)
            out.events += decision.events
            for ex in cand.excluded:
                self.metrics.quote_excluded(cand.market, ex.source, ex.reason.value)
            at.append(index[mark.market])
            price.append(mark.price)
            ts.append(mark.ts)
        out.candidates += cands
        due.append(np.array(publish, dtype=np.intp))
        return np.array(at, dtype=np.intp), np.array(price), np.array(ts)

    def _validate(self, result: BlockResult, lay: _Layout, table: MarkTable, out: TickOutput, now: float) -> np.ndarray:
        """Turn one block's results into marks: the quiet markets in a few array steps, the others
        one by one through the dispute stage. Returns the table positions of the marks due."""
        cols = self.stage.cols
        publish = np.zeros(len(lay.at), dtype=bool)
        markets = self.aggregator.plan.markets
        if len(lay.at) < self.array_min_markets:
            quiet, slow = None, list(range(len(lay.at)))
        else:
            lanes = self._lanes(result, lay)
            quiet = quiet_mask(cols, lay.rows, lanes, now)
            slow = np.flatnonzero(~quiet.mask).tolist()
        for j in slow:
            lane_rows = lay.row_at[j, : lay.n_tiers[j]].tolist()
            cand = candidate(result, markets[lay.plan[j]], lane_rows, now)
            decision = self.stage.process(cand, now)
            table.put(int(lay.at[j]), decision.mark)
            publish[j] = decision.publish
            out.events += decision.events
            out.candidates.append(cand)
            for ex in cand.excluded:
                self.metrics.quote_excluded(cand.market, ex.source, ex.reason.value)
        calm = np.flatnonzero(quiet.mask) if quiet is not None else np.zeros(0, dtype=np.intp)
        if calm.size and quiet is not None:
            tier = quiet.tier[calm]
            sources = self._sources(result, lay, lanes, calm, tier)
            advance_quiet(cols, lay.rows, quiet, lanes, sources, now, self.stage.close_buckets)
            rows = lay.rows[calm]
            status = np.where(tier == 1, OK, DEGRADED).astype(np.int8)
            publish[calm] = publish_due(cols, rows, status, now)
            table.fill(lay.at[calm], cols, rows, status)
            for j in calm[lanes.excluded[calm]].tolist():  # a source down, an outlier: named in the mark
                cand = candidate(result, markets[lay.plan[j]], lay.row_at[j, : lay.n_tiers[j]].tolist(), now)
                table.exclude(int(lay.at[j]), cand.excluded)
                out.candidates.append(cand)
                for ex in cand.excluded:
                    self.metrics.quote_excluded(cand.market, ex.source, ex.reason.value)
        return lay.at[publish]

    @staticmethod
    def _sources(result: BlockResult, lay: _Layout, lanes: Lanes, calm: np.ndarray, tier: np.ndarray) -> np.ndarray:
        """The accepted sources of each quiet market's tier in use (object array over the block)."""
        sources = np.empty(len(lay.at), dtype=object)
        lane = lay.row_at[calm, tier - 1]
        sources[calm] = lay.names[lane]
        partly = ~lanes.every[calm, tier - 1]  # not every source accepted: name those that were
        for j, r in zip(calm[partly].tolist(), lane[partly].tolist(), strict=True):
            sources[j] = accepted_names(lay.names[r], result.accepted[r])
        return sources

    @staticmethod
    def _lanes(result: BlockResult, lay: _Layout) -> Lanes:
        n, k = lay.row_at.shape
        price = np.full((n, k), np.nan)
        confidence = np.full((n, k), np.nan)
        quorum = np.zeros((n, k), dtype=bool)
        every = np.zeros((n, k), dtype=bool)
        where = (lay.lane_j, lay.lane_t)
        price[where] = result.price
        confidence[where] = result.confidence
        quorum[where] = result.quorum
        every[where] = (result.accepted == result.block.present_cols).all(axis=1)
        excluded = np.zeros(n, dtype=bool)
        excluded[lay.lane_j[result.reason.any(axis=1)]] = True
        frozen = np.zeros(n, dtype=bool)
        frozen[lay.lane_j[(result.reason == FROZEN).any(axis=1)]] = True
        return Lanes(price, confidence, quorum, every, lay.n_tiers, excluded, frozen)

    def _rows(self, lay: _Layout) -> _Layout:
        """`lay` with its markets' rows in the stage (renumbered by a reload of the stage)."""
        if lay.generation != self.stage.generation:
            markets = self.aggregator.plan.markets
            lay.rows = np.array([self.stage.rows.get(markets[i], -1) for i in lay.plan.tolist()], dtype=np.intp)
            lay.generation = self.stage.generation
        return lay

    def _lay_out(self) -> list[list[_Layout]]:
        out: list[list[_Layout]] = []
        at = 0
        for level in self.aggregator.plan.levels:
            out.append([])
            for block in level:
                plan = np.array(block.markets, dtype=np.intp)
                local = {m: j for j, m in enumerate(block.markets)}
                lane_j = np.array([local[m] for m in block.row_market.tolist()], dtype=np.intp)
                lane_t = block.row_tier - 1
                n_tiers = np.bincount(lane_j, minlength=len(plan))
                row_at = np.full((len(plan), max(1, int(n_tiers.max(initial=1)))), -1, dtype=np.intp)
                row_at[lane_j, lane_t] = np.arange(len(lane_j))
                names = np.empty(len(lane_j), dtype=object)
                for r, n in enumerate(block.names):
                    names[r] = n
                positions = np.arange(at, at + len(plan))
                at += len(plan)
                out[-1].append(_Layout(positions, plan, lane_j, lane_t, row_at, n_tiers, names, plan, -1))
        return out
