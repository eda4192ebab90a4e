"""A replay's ticks many at a time: level 0 of the plan aggregated for a chunk of ticks in one pass.

Tick by tick, a replay spends most of its time in a fixed cost per tick: dozens of small numpy calls
on a matrix of a few rows. But aggregation is stateless within a tick, and so, for T ticks, the book
at each tick (a forward fill of the quotes over the tick grid) can be stacked into one (T x slots)
matrix, the block's rows tiled T times, each copy pointing into its own tick's book, and `run_block`
run once for the T ticks. Only the state machines are sequential:

- the freeze rule advances one tick after another inside that one pass (`oracle.freeze.FreezeChunk`:
  the peers' medians for all T ticks at once, the recurrences as scans along time);
- the dispute stage then validates the ticks one by one, in order (`Pipeline.tick_on` with level 0
  `done`), and the later levels, whose quotes convert through level 0's validated marks of the same
  tick, are aggregated tick by tick as live, between two validations. So every market is validated
  in the live order (tick, then level, then market), and the dispute ids count up as live.

The daemon and the replay run the same functions (`run_block`, `candidates`, `Pipeline.tick_on`);
only the batch shape differs. tests/replay/test_chunked.py holds chunked and tick-by-tick replays of
every scenario to byte-identical outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from oracle.aggregate import Block, BlockResult, run_block, tick_candidates
from oracle.freeze import FreezeChunk
from oracle.models import Candidate
from oracle.pipeline import Pipeline, TickOutput
from oracle.quotebook import BookSnapshot, QuoteColumns, half_width
from oracle.replay.runs import ChunkMarks, RunValidator

# Ticks per pass by default: about PASS_ROWS rows of level 0 a pass, within CHUNK_TICKS ..
# MAX_CHUNK_TICKS. Past a few hundred ticks the per-pass overhead (~1 ms) is mostly paid off, and a
# replay of a few markets gains up to 25 % more by larger passes (1,024 ticks rather than 256 for one
# market); a plan of many rows keeps its stacked matrices (ticks x rows x sources) small for the cache.
CHUNK_TICKS = 256
MAX_CHUNK_TICKS = 4096
PASS_ROWS = 16_384

_FIELDS = ("price", "bid", "ask", "venue_ts", "received_ts", "confidence", "half_width", "last")


class Frames:
    """The book at each tick of a chunk: per field a (ticks, slots + 1) matrix, row t = tick t."""

    def __init__(self, matrices: dict[str, np.ndarray]) -> None:
        self.m = matrices
        self.ticks, self.stride = matrices["price"].shape

    def at(self, t: int) -> BookSnapshot:
        """Tick t's book (views)."""
        return BookSnapshot(*(self.m[f][t] for f in _FIELDS))

    def stacked(self) -> BookSnapshot:
        """Every tick's book end to end: tick t's slot s sits at t x stride + s."""
        return BookSnapshot(*(self.m[f].reshape(-1) for f in _FIELDS))


class FrameFill:
    """The book before each tick, as `QuoteBook.write` of each tick's rows would leave it.

    `rows`: the quotes to write, one per slot and tick at most (the replay's `_Feeder` keeps the last
    of several), `tick[i]` the tick before which row i is written. The book keeps the latest quote of
    each slot, so row t of a chunk is a forward fill along the ticks of the rows written so far. Exact
    because the rows come in receive-time order, so `write` would take every one (it refuses only a
    quote older than the stored one): a replay's pieces are in time order (oracle.replay.pieces
    raises NotInTimeOrder otherwise, and the file is then read whole and sorted).
    """

    def __init__(
        self, rows: QuoteColumns, tick: np.ndarray, n_slots: int, current: dict[str, np.ndarray] | None = None
    ) -> None:
        """`current`: the book before the first of these rows (an earlier FrameFill's `current`; empty when None)."""
        self.rows, self.tick = rows, tick
        self.hw = half_width(rows.bid, rows.ask, rows.confidence)
        self.current = current or {f: np.full(n_slots + 1, np.nan) for f in _FIELDS}  # the book before the chunk
        self.next_row = 0

    def frames(self, k0: int, k1: int) -> Frames:
        """The book before each of the ticks k0 .. k1 - 1 (called for consecutive chunks)."""
        n = k1 - k0
        a = self.next_row
        b = int(np.searchsorted(self.tick, k1, side="left"))  # rows before ticks < k1
        self.next_row = b
        stride = len(self.current["price"])
        # idx[t, s]: where tick t's slot s comes from: s in `current`, or stride + i for chunk row i.
        idx = np.broadcast_to(np.arange(stride), (n, stride)).copy()
        idx[self.tick[a:b] - k0, self.rows.slot[a:b]] = stride + np.arange(b - a)
        np.maximum.accumulate(idx, axis=0, out=idx)  # later rows have larger indices: a forward fill
        out = {}
        for f in _FIELDS:
            col = self.hw if f == "half_width" else getattr(self.rows, f)
            out[f] = np.concatenate((self.current[f], col[a:b]))[idx]
            self.current[f] = out[f][-1].copy()
        return Frames(out)


def tiled(block: Block, ticks: int, stride: int) -> Block:
    """`block` for `ticks` ticks in one pass: its rows repeated per tick, tick t's reading tick t's
    book (slots offset by t x stride in `Frames.stacked`)."""
    rows = len(block.row_market)
    offsets = (np.arange(ticks) * stride)[:, None, None]
    tiles: dict[str, object] = {}
    for f in dataclasses.fields(block):
        value = getattr(block, f.name)
        if f.name == "slot":
            tiles[f.name] = (value[None] + offsets).reshape(-1, value.shape[1])
        elif f.name == "method_rows":
            starts = (np.arange(ticks) * rows)[:, None]
            tiles[f.name] = tuple((idx[None] + starts).reshape(-1) for idx in value)
        elif isinstance(value, np.ndarray) and f.name != "markets":
            tiles[f.name] = np.tile(value, (ticks,) + (1,) * (value.ndim - 1))
    return dataclasses.replace(block, **tiles)  # type: ignore[arg-type]


def chunk_ticks(pipeline: Pipeline, ticks: int | None) -> int:
    """The default ticks per pass for `pipeline` over `ticks` ticks (see PASS_ROWS; None: unknown, a
    stream), and at least eight passes where a pass would be over CHUNK_TICKS."""
    rows = sum(len(b.row_market) for b in pipeline.aggregator.plan.levels[0])
    per_pass = PASS_ROWS // max(1, rows)
    return min(MAX_CHUNK_TICKS, max(CHUNK_TICKS, per_pass if ticks is None else min(per_pass, ticks // 8)))


class ChunkRunner:
    """Runs a pipeline over frames, many ticks a pass (see the module's docstring)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        agg = pipeline.aggregator
        # Level 0 converts nothing (a conversion depends on another market, hence a later level).
        assert not any(b.converts for b in agg.plan.levels[0])
        self._tiled: dict[tuple[int, int], list[Block]] = {}
        self.runs = RunValidator(pipeline) if RunValidator.applies(pipeline) else None

    def _blocks(self, ticks: int, stride: int) -> list[Block]:
        key = (ticks, stride)
        if key not in self._tiled:
            self._tiled[key] = [tiled(b, ticks, stride) for b in self.pipeline.aggregator.plan.levels[0]]
        return self._tiled[key]

    def run(self, frames: Frames, k0: int, nows: np.ndarray) -> Iterator[TickOutput | ChunkMarks]:
        """The chunk's outputs: one ChunkMarks for the whole chunk when it can be validated along
        time (oracle.replay.runs), else a TickOutput per tick."""
        agg = self.pipeline.aggregator
        plan = agg.plan
        times = nows.tolist()
        stacked = frames.stacked()
        results = []  # each block's pass over the chunk, against the untiled block: tick t's rows at t x rows
        for block, big, state in zip(
            plan.levels[0], self._blocks(frames.ticks, frames.stride), agg.freeze[0], strict=True
        ):
            now = np.repeat(nows, len(block.row_market))[:, None]
            freeze = FreezeChunk(state, frames.ticks)
            r = run_block(big, stacked, now, agg.rates, agg.rate_ts, plan.conv_max_age_s, freeze)
            results.append(BlockResult(block, r.price, r.confidence, r.accepted, r.reason, r.raw))
        if self.runs is not None:
            yield self.runs.validate(results, k0, nows)
            return
        done: list[list[Candidate]] = [[] for _ in times]  # level 0's candidates, per tick
        for block, result in zip(plan.levels[0], results, strict=True):
            for cands, more in zip(done, tick_candidates(result, block, plan.markets, times), strict=True):
                cands += more
        for t, now_t in enumerate(times):
            yield self.pipeline.tick_on(frames.at(t), now_t, (done[t],))
