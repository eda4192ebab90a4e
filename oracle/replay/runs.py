"""A replay chunk validated along time: each market's quiet ticks in runs, the others one by one.

Chunked (oracle.replay.chunked), level 0 is aggregated for a whole chunk in one pass, but validating
it tick by tick still costs ~50 µs a tick for a replay's handful of markets: the dispute stage, one
market at a time. Yet on almost every tick nothing happens to a market (the quiet path of
oracle.validation), and over consecutive quiet ticks its state moves in a way numpy can follow
along time: the streaks count up, the candidate is validated, the anchor's sums grow by a cumulative
sum, the publish cadence compares each tick with the one before. So here, per market:

- `quiet_run` finds how many ticks from the market's next one on are quiet, and `advance_run`
  takes it through them at once, with their marks and publish decisions as columns;
- the tick that ends a run (a tier change, a hold, an exclusion as frozen, a bucket of the anchor
  closing...) goes through `DisputeStage.process`, exactly as the tick path would send it;
- those ticks are taken in the live order, tick then market, so dispute ids count up as live.

Markets' states are independent of one another, so one market can be ahead of another in time. That
holds only for a plan of one level without perp marks (a later level converts through the marks of
the level before at the same tick): other plans run tick by tick (`Pipeline.tick_on`).
tests/replay/test_chunked.py holds both to byte-identical outputs on every scenario.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from oracle.aggregate import FROZEN, BlockResult, accepted_names, candidate
from oracle.models import Candidate, Excluded, Mark, Status
from oracle.pipeline import Pipeline
from oracle.validation.state import DEGRADED, OK, STATUS_CODE, STATUSES, TimeLanes, advance_run, quiet_run

# The first look ahead for a quiet run, in ticks (then doubled): about one anchor bucket at 1 s ticks.
LOOKAHEAD = 64


@dataclass
class ChunkMarks:
    """Every market's mark at every tick of a chunk: (ticks, markets) columns, markets in the
    order of the tick path's MarkTable. A mark the dispute stage made has its fields here too."""

    k0: int  # the chunk's first tick on the replay's grid
    nows: np.ndarray  # (ticks,)
    markets: list[str]
    price: np.ndarray
    confidence: np.ndarray
    ts: np.ndarray
    candidate: np.ndarray
    tier: np.ndarray
    status: np.ndarray  # codes of oracle.validation.STATUSES
    sources: np.ndarray  # object: tuples of names
    publish: np.ndarray  # bool: due for publication
    excluded: dict[tuple[int, int], tuple[Excluded, ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls, k0: int, nows: np.ndarray, markets: list[str]) -> ChunkMarks:
        shape = (len(nows), len(markets))
        nan = np.full(shape, math.nan)
        sources = np.empty(shape, dtype=object)
        return cls(k0, nows, markets, nan, nan.copy(), np.zeros(shape), nan.copy(), np.zeros(shape, dtype=np.int64),
                   np.zeros(shape, dtype=np.int8), sources, np.zeros(shape, dtype=bool))  # fmt: skip

    def published(self, first_seq: list[int]) -> list[Mark]:
        """The marks due, tick by tick and each tick's in table order, numbered from each market's
        `first_seq` on (the sink's next seq, by column)."""
        return [Mark(*fields) for fields in self.published_fields(first_seq)]

    def _due(self, first_seq: list[int]) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """Where the marks due are, tick then column, and each one's seq (from its market's `first_seq` on)."""
        ticks, cols = np.nonzero(self.publish)
        seq = np.cumsum(self.publish, axis=0) - 1 + np.array(first_seq, dtype=np.int64)
        return (ticks, cols), seq[ticks, cols]

    def published_fields(self, first_seq: list[int]) -> Iterator[PublishedFields]:
        """`published`'s marks as tuples of Mark's fields, in its order (no objects to build)."""
        at, seq = self._due(first_seq)
        ticks, cols = at
        fields = zip(ticks.tolist(), cols.tolist(), self.price[at].tolist(), self.confidence[at].tolist(),
                     self.ts[at].tolist(), seq.tolist(), self.status[at].tolist(), self.tier[at].tolist(),
                     self.sources[at].tolist(), self.candidate[at].tolist(), strict=True)  # fmt: skip
        excluded, markets = self.excluded, self.markets
        for t, j, price, conf, ts, n, status, tier, sources, cand in fields:
            yield markets[j], price, conf, ts, n, STATUSES[status], tier, sources, excluded.get((t, j), ()), cand

    def published_columns(self, first_seq: list[int]) -> PublishedColumns:
        """What marks.csv writes of `published`'s marks, in its order, as columns (lists)."""
        at, seq = self._due(first_seq)
        ticks, cols = at
        markets = self.markets
        return PublishedColumns(ticks.tolist(), [markets[j] for j in cols.tolist()], self.price[at].tolist(),
                                self.confidence[at].tolist(), seq.tolist(), self.status[at].tolist(),
                                self.tier[at].tolist(), self.sources[at].tolist())  # fmt: skip


@dataclass
class PublishedColumns:
    tick: list[int]  # index into the chunk's nows
    market: list[str]
    price: list[float]
    confidence: list[float]
    seq: list[int]
    status: list[int]  # codes of STATUSES
    tier: list[int]
    sources: list[tuple[str, ...]]


# Mark's fields in order: market, price, confidence, ts, seq, status, tier, sources, excluded, candidate.
PublishedFields = tuple[str, float, float, float, int, Status, int, tuple[str, ...], tuple[Excluded, ...], float]


def mark_fields(m: Mark) -> PublishedFields:
    return m.market, m.price, m.confidence, m.ts, m.seq, m.status, m.tier, m.sources, m.excluded, m.candidate


@dataclass
class _Market:
    """One market of level 0 over a chunk: where it is in the tiled block result."""

    name: str
    j: int  # its column in ChunkMarks
    plan: int  # its plan index
    result: BlockResult  # its block's pass over the chunk (tick t's rows at t x rows_per_tick)
    lane_rows: list[int]  # its tiers' rows in one tick's block, tier order
    lanes: TimeLanes
    every: np.ndarray  # (ticks, tiers) every configured source of the lane accepted
    excluded: np.ndarray  # (ticks,) any quote of it excluded
    names: list[tuple[str, ...]]  # each tier's configured source names


class RunValidator:
    """Validates a chunk of level 0 along time (see the module docstring)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.stage = pipeline.stage

    @staticmethod
    def applies(pipeline: Pipeline) -> bool:
        return len(pipeline.aggregator.plan.levels) == 1 and pipeline.perp is None

    def validate(self, results: list[BlockResult], k0: int, nows: np.ndarray) -> ChunkMarks:
        markets = self._markets(results, len(nows))
        out = ChunkMarks.empty(k0, nows, [m.name for m in markets])
        nxt = np.array([self._run(m, 0, out) for m in markets], dtype=np.intp)  # each one's next tick to take
        while len(nxt) and (t := int(nxt.min())) < len(nows):
            for p in np.flatnonzero(nxt == t).tolist():  # in table order: dispute ids count up as live
                self._one(markets[p], t, out)
                nxt[p] = self._run(markets[p], t + 1, out)
        agg, cols = self.pipeline.aggregator, self.stage.cols
        for m in markets:  # the rates a tick leaves: each market's validated price and time
            r = self.stage.rows.get(m.name, -1)
            if r >= 0:
                agg.rates[m.plan], agg.rate_ts[m.plan] = cols.last_price[r], cols.last_ts[r]
        return out

    def _markets(self, results: list[BlockResult], ticks: int) -> list[_Market]:
        plan = self.pipeline.aggregator.plan
        out = []
        for result, lay in zip(results, self.pipeline.layouts(0), strict=True):
            block = result.block
            rows, cols = len(block.row_market), result.accepted.shape[1]
            price = result.price.reshape(ticks, rows)
            conf = result.confidence.reshape(ticks, rows)
            reason = result.reason.reshape(ticks, rows, cols)
            every = (result.accepted.reshape(ticks, rows, cols) == block.present_cols).all(axis=2)
            for j, p in enumerate(lay.plan.tolist()):
                lane = lay.row_at[j, : lay.n_tiers[j]]
                mine = reason[:, lane]
                lanes = TimeLanes(price[:, lane], conf[:, lane], ~np.isnan(price[:, lane]), len(lane),
                                  (mine == FROZEN).any(axis=(1, 2)))  # fmt: skip
                names = [block.names[i] for i in lane.tolist()]
                m = _Market(plan.markets[p], int(lay.at[j]), p, result, lane.tolist(), lanes, every[:, lane],
                            np.asarray(mine.any(axis=(1, 2))), names)  # fmt: skip
                out.append(m)
        return out

    def _candidate(self, m: _Market, t: int, now: float) -> Candidate:
        result = m.result
        n = len(result.block.row_market)
        a, b = t * n, (t + 1) * n
        one = BlockResult(result.block, result.price[a:b], result.confidence[a:b], result.accepted[a:b],
                          result.reason[a:b], result.raw[a:b])  # fmt: skip
        return candidate(one, m.name, m.lane_rows, now)

    def _sources(self, m: _Market, t: int, tier: int) -> tuple[str, ...]:
        """Tick t's accepted names of the market's tier `tier` (all of them, the usual case)."""
        names = m.names[tier - 1]
        if m.every[t, tier - 1]:
            return names
        n = len(m.result.block.row_market)
        return accepted_names(names, m.result.accepted[t * n + m.lane_rows[tier - 1]])

    def _run(self, m: _Market, a: int, out: ChunkMarks) -> int:
        """Take market `m` through its quiet ticks from tick `a` on; returns the first tick that is
        not quiet (or the chunk's end). It looks ahead a window at a time, doubling: a run usually
        ends within a minute of ticks (an anchor bucket closes), and a window costs its length."""
        r = self.stage.rows.get(m.name, -1)
        window = LOOKAHEAD
        while a < len(out.nows) and r >= 0:
            b = self._window(m, r, a, min(len(out.nows), a + window), out)
            if b < a + window:
                return b
            a, window = b, 2 * window
        return a

    def _window(self, m: _Market, r: int, a: int, end: int, out: ChunkMarks) -> int:
        """The quiet run within ticks a .. end - 1, advanced and recorded; returns the tick after it."""
        nows = out.nows[a:end]
        lanes = TimeLanes(m.lanes.price[a:end], m.lanes.confidence[a:end], m.lanes.quorum[a:end], m.lanes.n_tiers,
                          m.lanes.frozen[a:end])  # fmt: skip
        run = quiet_run(self.stage.cols, r, lanes, nows)
        if run is None:
            return a
        b = a + run.length
        sources = [self._sources(m, t, run.tier) for t in range(a, b)]
        go = advance_run(self.stage.cols, r, run, lanes, sources, nows)
        j, price = m.j, lanes.price[: run.length, run.tier - 1]
        out.price[a:b, j], out.candidate[a:b, j] = price, price
        out.confidence[a:b, j], out.ts[a:b, j] = lanes.confidence[: run.length, run.tier - 1], nows[: run.length]
        out.tier[a:b, j], out.status[a:b, j] = run.tier, OK if run.tier == 1 else DEGRADED
        out.sources[a:b, j] = np.fromiter(sources, dtype=object, count=len(sources))  # tuples kept whole
        out.publish[a:b, j] = go
        for t in (a + np.flatnonzero(m.excluded[a:b])).tolist():  # a source down, an outlier: named in the mark
            self._exclusions(m, t, out, self._candidate(m, t, float(out.nows[t])).excluded)
        return b

    def _one(self, m: _Market, t: int, out: ChunkMarks) -> None:
        """Tick t of market `m` through the dispute stage, as the tick path does when not quiet."""
        now = float(out.nows[t])
        cand = self._candidate(m, t, now)
        decision = self.stage.process(cand, now)
        mark, j = decision.mark, m.j
        out.price[t, j], out.confidence[t, j], out.ts[t, j] = mark.price, mark.confidence, mark.ts
        out.candidate[t, j], out.tier[t, j] = mark.candidate, mark.tier
        out.status[t, j], out.sources[t, j] = STATUS_CODE[mark.status], mark.sources
        out.publish[t, j] = decision.publish
        self._exclusions(m, t, out, cand.excluded)

    def _exclusions(self, m: _Market, t: int, out: ChunkMarks, excluded: tuple[Excluded, ...]) -> None:
        if excluded:
            out.excluded[(t, m.j)] = excluded
            for ex in excluded:
                self.pipeline.metrics.quote_excluded(m.name, ex.source, ex.reason.value)
