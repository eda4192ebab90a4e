"""Drive the daemon's own pipeline over a ticks table on virtual time.

Ticks fall on the absolute grid of `tick_ms` (multiples of it in Unix time, as in the daemon), so a
replay of a recorded session ticks at the same instants the daemon did. Before each tick, every quote
received up to that instant enters the QuoteBook through the daemon's own `QuoteBook.write`, after
the live parser's checks on whole rows (`feeds.adapter.row_problems`: a crossed book or a venue time
older than the source's `heartbeat_s` never reaches the book); then `Pipeline.tick` runs exactly as
live, and the marks due go to an in-memory sink with the publisher's seq rules. Nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from disputes.model import Dispute
from feeds.adapter import CROSSED, STALE_VENUE_TIME, row_problems
from oracle.metrics import Metrics
from oracle.models import Mark, PerpMark, Status
from oracle.pipeline import Pipeline, TickOutput
from oracle.publish import MemorySink
from oracle.quotebook import QuoteBook, QuoteColumns
from oracle.replay.chunked import ChunkRunner, FrameFill, chunk_ticks
from oracle.replay.runs import ChunkMarks, PublishedFields
from oracle.settings import Settings
from oracle.ticks import Ticks
from oracle.validation.stage import DisputeStage

STATUS_CODES = {s: i for i, s in enumerate(Status)}  # per-tick status series are small ints


@dataclass
class Series:
    """One market's mark at every tick of a run."""

    price: np.ndarray
    confidence: np.ndarray
    status: np.ndarray  # index into list(Status)
    tier: np.ndarray


class Published(Sequence[Mark]):
    """Every mark a run published, seq assigned, in order. A chunk's marks (oracle.replay.runs) are
    built only when read: marks.csv reads the attacked run's, and nothing reads the reference run's."""

    def __init__(self) -> None:
        self._parts: list[list[Mark] | tuple[ChunkMarks, list[int]]] = []
        self._n = 0
        self._all: list[Mark] | None = None  # built on the first read by index

    def append(self, mark: Mark) -> None:
        if not self._parts or not isinstance(self._parts[-1], list):
            self._parts.append([])
        self._parts[-1].append(mark)  # type: ignore[union-attr]
        self._n += 1
        self._all = None

    def add_chunk(self, chunk: ChunkMarks, first_seq: list[int], count: int) -> None:
        self._parts.append((chunk, first_seq))
        self._n += count
        self._all = None

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Mark]:
        for part in self._parts:
            yield from part if isinstance(part, list) else part[0].published(part[1])

    def fields(self) -> Iterator[PublishedFields]:
        """The same marks as tuples of Mark's fields (a writer of every mark builds no objects)."""
        for part in self._parts:
            if isinstance(part, list):
                for m in part:
                    yield (m.market, m.price, m.confidence, m.ts, m.seq, m.status, m.tier, m.sources, m.excluded,
                           m.candidate)  # fmt: skip
            else:
                yield from part[0].published_fields(part[1])

    @overload
    def __getitem__(self, k: int) -> Mark: ...
    @overload
    def __getitem__(self, k: slice) -> list[Mark]: ...
    def __getitem__(self, k: int | slice) -> Mark | list[Mark]:
        if self._all is None:
            self._all = list(self)
        return self._all[k]


@dataclass
class RunResult:
    grid: np.ndarray  # tick instants
    published: Published  # every mark the sink took, seq assigned, in order
    publish_ts: list[float]  # the tick at which each was published
    series: dict[str, Series]
    disputes: list[Dispute]
    # Per market, the first `keep_excluded` exclusions: (tick, source, pair, price as quoted, reason).
    excluded: dict[str, list[tuple[float, str, str, float, str]]] = field(default_factory=dict)
    perps: list[tuple[float, PerpMark]] = field(default_factory=list)  # every perp mark computed, by tick
    seconds: float = 0.0

    @property
    def ticks_per_s(self) -> float:
        return len(self.grid) / self.seconds if self.seconds > 0 else math.inf


def tick_grid(first_ts: float, last_ts: float, tick_s: float) -> np.ndarray:
    """Every multiple of tick_s from the first quote's instant to the last one's (inclusive)."""
    start = math.ceil(first_ts / tick_s - 1e-9) * tick_s
    n = max(1, math.floor((last_ts - start) / tick_s + 1e-9) + 1)
    return start + tick_s * np.arange(n)


def replay(
    settings: Settings,
    ticks: Ticks,
    progress: Callable[[float], None] | None = None,
    keep_excluded: int = 20_000,
    chunk: int | None = None,
) -> RunResult:
    """`chunk`: ticks aggregated per pass (oracle.replay.chunked; None: `chunk_ticks`, by the plan's
    size); 1 runs the daemon's own tick path, `Pipeline.tick` on the QuoteBook, tick by tick. The
    outputs are the same.

    No event loop: nothing here waits (the sink is in memory), and `asyncio.run` of a coroutine
    that returns a day's RunResult spent ~1 s formatting its repr (3.11's runner checks its SIGINT
    handler through `signal.getsignal`, which formats the handler, the task and so its result)."""
    return _replay(settings, ticks, progress, keep_excluded, chunk)


def _replay(
    settings: Settings, ticks: Ticks, progress: Callable[[float], None] | None, keep_excluded: int, chunk: int | None
) -> RunResult:
    book = QuoteBook.for_settings(settings)
    stage = DisputeStage(settings)
    pipeline = Pipeline(settings, book, Metrics(), stage)
    sink = MemorySink()
    tick_s = settings.service.tick_ms / 1000
    known = np.array([k in book.slot for k in ticks.keys], dtype=bool)
    ticks = ticks.take(known[ticks.feed]) if len(ticks.keys) else ticks
    grid = tick_grid(float(ticks.ts[0]), float(ticks.ts[-1]), tick_s) if len(ticks) else np.zeros(0)
    markets = pipeline.aggregator.plan.markets
    series = {m: _empty_series(len(grid)) for m in markets}
    result = RunResult(grid, Published(), [], series, [], {m: [] for m in markets})
    ticks = checked(ticks, settings)
    feed = _Feeder(ticks, book, grid)
    started = time.perf_counter()
    for k, t, out in _outputs(pipeline, feed, grid, chunk):
        if isinstance(out, ChunkMarks):
            _take_chunk(out, sink, result, keep_excluded)
        else:
            _take_tick(k, t, out, sink, result, keep_excluded)
        if progress is not None and (k // 1000 != (k + _ticks(out) - 1) // 1000 or k % 1000 == 0):
            progress(k / max(1, len(grid)))
    result.seconds = time.perf_counter() - started
    if progress is not None:
        progress(1.0)
    result.disputes = sorted(stage.disputes(), key=lambda d: (d.opened_ts, d.id))
    return result


def _take_tick(k: int, t: float, out: TickOutput, sink: MemorySink, result: RunResult, keep: int) -> None:
    """One tick's output into the run's result: its marks due through the sink, every mark in the series."""
    for mark in sink.write(out.publish):
        result.published.append(mark)
        result.publish_ts.append(t)
    for mark in out.marks:
        _record(result.series[mark.market], k, mark)
    result.perps += [(t, p) for p in out.perps]
    for cand in out.candidates:
        bucket = result.excluded[cand.market]
        if len(bucket) < keep:
            bucket += [(t, ex.source, ex.pair, ex.price, ex.reason.value) for ex in cand.excluded]


def _take_chunk(out: ChunkMarks, sink: MemorySink, result: RunResult, keep: int) -> None:
    """A chunk's marks (oracle.replay.runs) into the run's result, as its ticks one by one would."""
    k0, k1 = out.k0, out.k0 + len(out.nows)
    for j, market in enumerate(out.markets):
        s = result.series[market]
        s.price[k0:k1], s.confidence[k0:k1] = out.price[:, j], out.confidence[:, j]
        s.status[k0:k1], s.tier[k0:k1] = out.status[:, j], out.tier[:, j]
    first_seq = [sink.next_seq(m) for m in out.markets]
    counts = out.publish.sum(axis=0).tolist()
    for market, n in zip(out.markets, counts, strict=True):
        sink.skip(market, n)
    result.published.add_chunk(out, first_seq, sum(counts))
    nows = out.nows.tolist()
    result.publish_ts += [nows[t] for t in np.nonzero(out.publish)[0].tolist()]
    for (t, j), excluded in sorted(out.excluded.items()):
        bucket = result.excluded[out.markets[j]]
        if len(bucket) < keep:
            bucket += [(nows[t], ex.source, ex.pair, ex.price, ex.reason.value) for ex in excluded]


def _ticks(out: TickOutput | ChunkMarks) -> int:
    return len(out.nows) if isinstance(out, ChunkMarks) else 1


def _outputs(
    pipeline: Pipeline, feed: _Feeder, grid: np.ndarray, chunk: int | None
) -> Iterator[tuple[int, float, TickOutput | ChunkMarks]]:
    """The outputs, in order: tick by tick through the QuoteBook (`chunk` 1, or rows out of
    receive-time order, which the book would refuse), else `chunk` ticks a pass (a ChunkMarks of the
    whole chunk, or a TickOutput per tick: oracle.replay.chunked). The int is the first tick's index."""
    rows = feed.rows()
    chunk = chunk_ticks(pipeline, len(grid)) if chunk is None else chunk
    if chunk <= 1 or not FrameFill.in_order(rows):
        for k, t in enumerate(grid.tolist()):
            feed.until(k)
            yield k, t, pipeline.tick(t)
        return
    fill = FrameFill(rows, feed.batch, len(pipeline.book.keys))
    runner = ChunkRunner(pipeline)
    for k0 in range(0, len(grid), chunk):
        k1 = min(k0 + chunk, len(grid))
        k = k0
        for out in runner.run(fill.frames(k0, k1), k0, grid[k0:k1]):
            yield k, float(grid[k]), out
            k += _ticks(out)


def checked(ticks: Ticks, settings: Settings) -> Ticks:
    """The rows the live parser would let through: no crossed book, no venue time older than the
    source's `heartbeat_s`; a one-sided book loses its side, as live (the price stays the row's);
    a row without a book has its price as its last trade, as live."""
    heartbeat: dict[tuple[str, str], float] = {}
    for market in settings.markets.values():
        for tier in market.tiers:
            for ref in tier:  # the adapter keeps a (source, pair)'s first ref, and so does this
                heartbeat.setdefault((ref.source, ref.pair), math.nan if ref.heartbeat_s is None else ref.heartbeat_s)
    limit = np.array([heartbeat.get(k, math.nan) for k in ticks.keys])[ticks.feed]
    problem = row_problems(ticks.bid, ticks.ask, ticks.price, ticks.venue_ts, ticks.ts, limit)
    keep = (problem != CROSSED) & (problem != STALE_VENUE_TIME)
    if not keep.all():
        ticks = ticks.take(keep)
    one_sided = np.isnan(ticks.bid) != np.isnan(ticks.ask)
    if one_sided.any():
        bid, ask = np.where(one_sided, np.nan, ticks.bid), np.where(one_sided, np.nan, ticks.ask)
        ticks = dataclasses.replace(ticks, bid=bid, ask=ask)
    return _price_is_last_without_book(ticks)


def _price_is_last_without_book(ticks: Ticks) -> Ticks:
    """A row without a two-sided book quotes a last trade: live, such a quote's price *is* its last
    (feeds.adapter.book_price), and the perp mark's c2 reads it. A file that leaves `last` empty
    there (`markd synth`, a hand-written file) gets its price as last, so c2 sees what the daemon would."""
    no_last = np.isnan(ticks.last) & np.isnan(ticks.bid)  # bid and ask are a pair by now
    if not no_last.any():
        return ticks
    return dataclasses.replace(ticks, last=np.where(no_last, ticks.price, ticks.last))


class _Feeder:
    """Hands the QuoteBook, before tick k, every quote received up to grid[k], as one `write`.

    The daemon writes each venue frame as it arrives; here the rows between two ticks go in as one
    batch. The two are the same because the rows are in time order (the book never sees an older
    quote) and, of several rows of one slot between two ticks, only the last counts: the earlier ones
    would have been overwritten before the tick looked at the book (dropped here up front, so that
    each write names a slot once).
    """

    def __init__(self, ticks: Ticks, book: QuoteBook, grid: np.ndarray) -> None:
        self.book = book
        slot_of_key = np.array([book.slot.get(k, -1) for k in ticks.keys], dtype=np.intp)
        slot = slot_of_key[ticks.feed] if len(ticks) else np.zeros(0, dtype=np.intp)
        batch = np.searchsorted(grid, ticks.ts, side="left")  # tick k takes the rows with ts <= grid[k]
        order = np.lexsort((np.arange(len(slot)), slot))  # by slot, then time
        superseded = np.zeros(len(slot), dtype=bool)
        same = (slot[order[1:]] == slot[order[:-1]]) & (batch[order[1:]] == batch[order[:-1]])
        superseded[order[:-1]] = same
        keep = np.flatnonzero(~superseded & (batch < len(grid)))
        self.slot, self.batch = slot[keep], batch[keep]
        cols = (ticks.price, ticks.bid, ticks.ask, ticks.venue_ts, ticks.ts, ticks.confidence, ticks.last)
        self.cols = tuple(c[keep] for c in cols)
        ticks_idx = np.arange(len(grid))
        self.start = np.searchsorted(self.batch, ticks_idx, side="left").tolist()
        self.end = np.searchsorted(self.batch, ticks_idx, side="right").tolist()

    def rows(self) -> QuoteColumns:
        """Every row it hands the book, in order (`self.batch[i]`: the tick before which row i goes in)."""
        return QuoteColumns(self.slot, *self.cols)

    def until(self, k: int) -> None:
        a, b = self.start[k], self.end[k]
        if a < b:
            self.book.write(QuoteColumns(self.slot[a:b], *(c[a:b] for c in self.cols)))


def _empty_series(n: int) -> Series:
    return Series(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8))


def _record(s: Series, k: int, mark: Mark) -> None:
    s.price[k] = mark.price
    s.confidence[k] = mark.confidence
    s.status[k] = STATUS_CODES[mark.status]
    s.tier[k] = mark.tier


def terminal_progress(unit: str = "ticks", after_s: float = 2.0) -> Callable[[float], None] | None:
    """A progress bar with the time left (rich) on stderr when it is a terminal, shown only once the
    run has taken `after_s` seconds (a quick replay prints nothing extra); None (silence) otherwise.
    Its clock starts here: make it when the run starts (the bar's elapsed time is the run's)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return _LateProgress(console, unit, after_s)


class _LateProgress:
    def __init__(self, console: Console, unit: str, after_s: float) -> None:
        self.console, self.unit, self.after_s = console, unit, after_s
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.done = False

    def __call__(self, fraction: float) -> None:
        if self.done:
            return
        if self.bar is None:
            if fraction >= 1.0 or time.monotonic() - self.started < self.after_s:
                return
            columns = (TextColumn(f"replaying {self.unit}"), BarColumn(), TaskProgressColumn())
            self.bar = Progress(*columns, TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                console=self.console, transient=True)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("replay", total=1.0)
            self.bar.tasks[0].start_time = self.started  # the elapsed time counts from the run's start
        assert self.task is not None
        self.bar.update(self.task, completed=min(fraction, 1.0), refresh=True)
        if fraction >= 1.0:
            self.bar.stop()
            self.done = True
