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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, overload

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
from oracle.replay.chunked import CHUNK_TICKS, ChunkRunner, FrameFill, chunk_ticks
from oracle.replay.pieces import TableSource, in_time
from oracle.replay.runs import ChunkMarks, PublishedFields, mark_fields
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
                yield from map(mark_fields, part)
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


def replay(settings: Settings, ticks: Ticks, keep_excluded: int = 20_000, chunk: int | None = None) -> RunResult:
    """One run over a table of ticks sorted by `ts` (a `Run` fed its slices).

    `chunk`: ticks aggregated per pass (oracle.replay.chunked; None: `chunk_ticks`, by the plan's
    size); 1 runs the daemon's own tick path, `Pipeline.tick` on the QuoteBook, tick by tick. The
    outputs are the same.

    No event loop: nothing here waits (the sink is in memory), and `asyncio.run` of a coroutine
    that returns a day's RunResult spent ~1 s formatting its repr (3.11's runner checks its SIGINT
    handler through `signal.getsignal`, which formats the handler, the task and so its result)."""
    source = TableSource(ticks)
    run = Run(settings, keep_excluded, chunk, times=source.times)
    for piece in in_time(source):
        run.feed(piece)
    return run.finish()


class MarksOut(Protocol):
    """Where a run's published marks go when they are not kept: marks.csv, written as they come."""

    def rows(self, publish_ts: Iterable[float], fields: Iterable[PublishedFields]) -> None:
        """Marks of the tick path, each published at its tick's time."""

    def chunk(self, out: ChunkMarks, first_seq: list[int]) -> None:
        """A chunk's marks due (oracle.replay.runs), numbered from each market's `first_seq`."""


class _Discard:
    def rows(self, publish_ts: Iterable[float], fields: Iterable[PublishedFields]) -> None:
        return None  # `fields` is lazy: nothing is built

    def chunk(self, out: ChunkMarks, first_seq: list[int]) -> None:
        return None


DISCARD: MarksOut = _Discard()  # a run whose published marks nobody reads (a replay's reference run)


class Run:
    """One run of the pipeline over ticks that come in pieces in time order (oracle.replay.pieces),
    each piece's rows all older than the next piece's: a month of ticks streams through it.

    A piece completes the ticks up to its last instant (a tick takes the rows received up to it, and
    no later piece holds such a row); they run at once, in whole passes of `chunk` ticks (the last,
    shorter pass waits for `finish`), and the rows of the ticks still open wait for the next piece.
    Each pass is what the run over the whole table does for those ticks, from the same state: the
    outputs are the same, whatever the pieces (tests/replay/test_pieces.py).

    The tick grid runs from the first configured quote's instant to the last one's, as
    `tick_grid` of the whole table: its length is known only at the end, so the series grow."""

    def __init__(
        self,
        settings: Settings,
        keep_excluded: int = 20_000,
        chunk: int | None = None,
        marks: MarksOut | None = None,
        times: tuple[float, float] | None = None,
    ) -> None:
        """`times`: the first and last quote's instants when known before the run (a table in
        memory): the default `chunk` then keeps at least eight passes (chunk_ticks)."""
        self.book = QuoteBook.for_settings(settings)
        self.stage = DisputeStage(settings)
        self.pipeline = Pipeline(settings, self.book, Metrics(), self.stage)
        self.sink = MemorySink(history=False)  # a month of marks: the run keeps (or writes) its own
        self.settings, self.keep, self.marks = settings, keep_excluded, marks
        self.tick_s = settings.service.tick_ms / 1000
        self.heartbeat = heartbeats(settings)
        self.markets = self.pipeline.aggregator.plan.markets
        ticks = None if times is None else int((times[1] - times[0]) / self.tick_s) + 1
        self.chunk = chunk_ticks(self.pipeline, ticks) if chunk is None else chunk
        self.runner = ChunkRunner(self.pipeline) if self.chunk > 1 else None
        self.fill: dict[str, np.ndarray] | None = None  # FrameFill's book after the last pass
        self.start: float | None = None  # the grid's first tick
        self.last_ts = math.nan  # the last configured quote's instant so far
        self.done = 0  # ticks run
        self.pending = _no_rows()  # rows of the ticks not yet run, in time order
        self.parts: list[tuple[np.ndarray, dict[str, Series]]] = []  # (grid, series) of each pass
        self.result = RunResult(np.zeros(0), Published(), [], {}, [], {m: [] for m in self.markets})
        self.on_pass: Callable[[], None] | None = None  # called after each pass (a progress bar reads `now`)
        self.now = math.nan  # the last tick run

    def feed(self, piece: Ticks) -> None:
        """A piece of the ticks: every row older than any row of a later piece."""
        started = time.perf_counter()
        known = np.array([k in self.book.slot for k in piece.keys], dtype=bool)
        piece = piece.take(known[piece.feed]) if len(piece.keys) else piece
        if len(piece):  # a piece of quotes nobody configured moves nothing (as the whole run's grid)
            if self.start is None:
                self.start = float(tick_grid(float(piece.ts[0]), float(piece.ts[0]), self.tick_s)[0])
            self.last_ts = float(piece.ts[-1])
            self.pending = _concat(self.pending, quote_rows(checked(piece, self.settings, self.heartbeat), self.book))
            ready = self._ticks_through(self.last_ts)
            if self.chunk > 1:
                ready = self.done + (ready - self.done) // self.chunk * self.chunk
            self._run_to(ready)
        self.result.seconds += time.perf_counter() - started

    def finish(self) -> RunResult:
        """The run's result, once every piece is in."""
        started = time.perf_counter()
        if self.start is not None:
            self._run_to(self._grid_length())
        result = self.result
        if self.parts:
            result.grid = np.concatenate([g for g, _ in self.parts])
        result.series = {m: _joined([p[m] for _, p in self.parts]) for m in self.markets}
        result.disputes = sorted(self.stage.disputes(), key=lambda d: (d.opened_ts, d.id))
        self.parts, self.pending = [], _no_rows()
        result.seconds += time.perf_counter() - started
        return result

    def _grid_length(self) -> int:
        assert self.start is not None
        return len(tick_grid(self.start, self.last_ts, self.tick_s))

    def _ticks_through(self, ts: float) -> int:
        """How many ticks of the grid so far fall at or before `ts` (no later row can reach them)."""
        n = self._grid_length()
        return self.done + int(np.searchsorted(self._grid(self.done, n), ts, side="right"))

    def _grid(self, k0: int, k1: int) -> np.ndarray:
        assert self.start is not None
        return self.start + self.tick_s * np.arange(k0, k1)  # element by element as tick_grid's

    def _run_to(self, k1: int) -> None:
        """Run the ticks done .. k1 - 1 on the rows received up to the last of them."""
        k0 = self.done
        if k1 <= k0:
            return
        grid = self._grid(k0, k1)
        n = int(np.searchsorted(self.pending.received_ts, grid[-1], side="right"))
        rows, self.pending = self.pending.take(slice(0, n)), self.pending.take(slice(n, None))  # type: ignore[arg-type]
        series = {m: _empty_series(len(grid)) for m in self.markets}
        self.parts.append((grid, series))
        feed = _Feeder(rows, self.book, grid, k0)
        for k, t, out in self._outputs(feed, grid, k0):
            if isinstance(out, ChunkMarks):
                self._take_chunk(out, series, k0)
            else:
                self._take_tick(k - k0, t, out, series)
        self.done = k1

    def _outputs(
        self, feed: _Feeder, grid: np.ndarray, k0: int
    ) -> Iterator[tuple[int, float, TickOutput | ChunkMarks]]:
        """The outputs of ticks k0 .. k0 + len(grid) - 1, in order: tick by tick through the QuoteBook
        (`chunk` 1), else `chunk` ticks a pass (a ChunkMarks of the whole chunk, or a TickOutput per
        tick: oracle.replay.chunked). The int is the first tick's index."""
        if self.runner is None:
            for k, t in enumerate(grid.tolist(), start=k0):
                feed.until(k)
                yield k, t, self.pipeline.tick(t)
                if k % CHUNK_TICKS == 0:
                    self._passed(t)
            return
        fill = FrameFill(feed.rows(), feed.batch, len(self.book.keys), self.fill)
        for a in range(k0, k0 + len(grid), self.chunk):
            b = min(a + self.chunk, k0 + len(grid))
            k = a
            for out in self.runner.run(fill.frames(a, b), a, grid[a - k0 : b - k0]):
                yield k, float(grid[k - k0]), out
                k += _ticks(out)
            self._passed(float(grid[b - 1 - k0]))
        self.fill = fill.current

    def _passed(self, now: float) -> None:
        self.now = now
        if self.on_pass is not None:
            self.on_pass()

    def _take_tick(self, j: int, t: float, out: TickOutput, series: dict[str, Series]) -> None:
        """One tick's output: its marks due through the sink, every mark in the series (at j)."""
        written = self.sink.write(out.publish)
        if self.marks is not None:
            self.marks.rows([t] * len(written), map(mark_fields, written))
        else:
            for mark in written:
                self.result.published.append(mark)
                self.result.publish_ts.append(t)
        for mark in out.marks:
            _record(series[mark.market], j, mark)
        self.result.perps += [(t, p) for p in out.perps]
        for cand in out.candidates:
            bucket = self.result.excluded[cand.market]
            if len(bucket) < self.keep:
                bucket += [(t, ex.source, ex.pair, ex.price, ex.reason.value) for ex in cand.excluded]

    def _take_chunk(self, out: ChunkMarks, series: dict[str, Series], base: int) -> None:
        """A chunk's marks (oracle.replay.runs), as its ticks one by one would be taken."""
        k0, k1 = out.k0 - base, out.k0 - base + len(out.nows)
        for j, market in enumerate(out.markets):
            s = series[market]
            s.price[k0:k1], s.confidence[k0:k1] = out.price[:, j], out.confidence[:, j]
            s.status[k0:k1], s.tier[k0:k1] = out.status[:, j], out.tier[:, j]
        first_seq = [self.sink.next_seq(m) for m in out.markets]
        counts = out.publish.sum(axis=0).tolist()
        for market, n in zip(out.markets, counts, strict=True):
            self.sink.skip(market, n)
        nows = out.nows.tolist()
        if self.marks is not None:
            self.marks.chunk(out, first_seq)
        else:
            self.result.published.add_chunk(out, first_seq, sum(counts))
            self.result.publish_ts += [nows[t] for t in np.nonzero(out.publish)[0].tolist()]
        for (t, j), excluded in sorted(out.excluded.items()):
            bucket = self.result.excluded[out.markets[j]]
            if len(bucket) < self.keep:
                bucket += [(nows[t], ex.source, ex.pair, ex.price, ex.reason.value) for ex in excluded]


def _ticks(out: TickOutput | ChunkMarks) -> int:
    return len(out.nows) if isinstance(out, ChunkMarks) else 1


def _no_rows() -> QuoteColumns:
    nan = np.zeros(0)
    return QuoteColumns(np.zeros(0, dtype=np.intp), nan, nan, nan, nan, nan, nan, nan)


def _concat(a: QuoteColumns, b: QuoteColumns) -> QuoteColumns:
    if not len(a.slot):
        return b
    return QuoteColumns(*(np.concatenate((getattr(a, f), getattr(b, f))) for f in QuoteColumns.__slots__))


def _joined(parts: list[Series]) -> Series:
    if not parts:
        return _empty_series(0)
    return Series(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("price", "confidence", "status", "tier")))


def quote_rows(ticks: Ticks, book: QuoteBook) -> QuoteColumns:
    """The rows as the book's columns: each (source, pair) as its slot (-1 where the book has none)."""
    slot_of_key = np.array([book.slot.get(k, -1) for k in ticks.keys], dtype=np.intp)
    slot = slot_of_key[ticks.feed] if len(ticks) else np.zeros(0, dtype=np.intp)
    return QuoteColumns(slot, ticks.price, ticks.bid, ticks.ask, ticks.venue_ts, ticks.ts, ticks.confidence, ticks.last)


def heartbeats(settings: Settings) -> dict[tuple[str, str], float]:
    """Each (source, pair)'s `heartbeat_s` (NaN: none), as the live adapter keeps it: its first ref's."""
    heartbeat: dict[tuple[str, str], float] = {}
    for market in settings.markets.values():
        for tier in market.tiers:
            for ref in tier:
                heartbeat.setdefault((ref.source, ref.pair), math.nan if ref.heartbeat_s is None else ref.heartbeat_s)
    return heartbeat


def checked(ticks: Ticks, settings: Settings, heartbeat: dict[tuple[str, str], float] | None = None) -> Ticks:
    """The rows the live parser would let through: no crossed book, no venue time older than the
    source's `heartbeat_s`; a one-sided book loses its side, as live (the price stays the row's);
    a row without a book has its price as its last trade, as live. (`heartbeat`: `heartbeats(settings)`.)"""
    heartbeat = heartbeats(settings) if heartbeat is None else heartbeat
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
    each write names a slot once). `grid` is ticks k0 .. k0 + len(grid) - 1 of the run's grid; a row
    received after its last tick is not handed over.
    """

    def __init__(self, rows: QuoteColumns, book: QuoteBook, grid: np.ndarray, k0: int = 0) -> None:
        self.book, self.k0 = book, k0
        slot = rows.slot
        batch = np.searchsorted(grid, rows.received_ts, side="left")  # tick k takes the rows with ts <= grid[k]
        order = np.lexsort((np.arange(len(slot)), slot))  # by slot, then time
        superseded = np.zeros(len(slot), dtype=bool)
        same = (slot[order[1:]] == slot[order[:-1]]) & (batch[order[1:]] == batch[order[:-1]])
        superseded[order[:-1]] = same
        keep = np.flatnonzero(~superseded & (batch < len(grid)))
        self.kept = rows.take(keep)
        self.batch = batch[keep] + k0
        ticks_idx = np.arange(k0, k0 + len(grid))
        self.start = np.searchsorted(self.batch, ticks_idx, side="left").tolist()
        self.end = np.searchsorted(self.batch, ticks_idx, side="right").tolist()

    def rows(self) -> QuoteColumns:
        """Every row it hands the book, in order (`self.batch[i]`: the tick before which row i goes in)."""
        return self.kept

    def until(self, k: int) -> None:
        a, b = self.start[k - self.k0], self.end[k - self.k0]
        if a < b:
            self.book.write(self.kept.take(slice(a, b)))  # type: ignore[arg-type]


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
