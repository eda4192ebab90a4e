"""A replay's ticks as pieces in time order, so that a month of them never sits in memory at once.

A replay reads its ticks as they stream from the file (`oracle.ticks.TickStream`) or, when they are
already in memory ([synth], [import_ohlc], `markd sweep`), as slices of the table. Either way the
runs see pieces that together are the sorted table `read_ticks` would return, cut so that every row
of one instant is in one piece: a piece's rows are all older than the next piece's. That cut is what
makes the pieces' answers the whole table's: an attack, the stable sort after it, the replay's
batching of the rows between two ticks, all act on rows of one instant together.

A file whose rows are not in time order cannot be cut so: `in_time` raises `NotInTimeOrder`, and
the replay reads that file whole and sorts it, as before (a recording and `markd synth` write in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from oracle.ticks import Ticks

# Rows a piece: large enough that numpy's per-call cost vanishes (a piece of 10 markets x 6 venues
# is ~36 minutes of 1 s ticks), small enough that the progress bar moves a few times a second and a
# piece's copies stay at a few tens of MB.
PIECE_ROWS = 1 << 17


class NotInTimeOrder(Exception):
    """A row is older than one before it: the ticks must be read whole and sorted."""


class Source(Protocol):
    """Ticks a replay reads piece by piece (in file order), and how much of them it has read (0..1)."""

    def __iter__(self) -> Iterator[Ticks]: ...

    @property
    def fraction(self) -> float: ...


class TableSource:
    """A table already in memory (sorted by ts), as consecutive slices: views, no copies."""

    def __init__(self, ticks: Ticks, rows: int | None = None) -> None:
        self.ticks, self.rows = ticks, rows or PIECE_ROWS
        self._read = 0

    def __iter__(self) -> Iterator[Ticks]:
        n = len(self.ticks)
        for a in range(0, n, self.rows):
            self._read = min(n, a + self.rows)
            yield self.ticks.take(slice(a, self._read))  # type: ignore[arg-type]

    @property
    def fraction(self) -> float:
        return self._read / len(self.ticks) if len(self.ticks) else 1.0

    @property
    def times(self) -> tuple[float, float] | None:
        """The first and the last row's `ts` (None: no row): the table's span, known before a run."""
        return (float(self.ticks.ts[0]), float(self.ticks.ts[-1])) if len(self.ticks) else None


def in_time(pieces: Iterable[Ticks]) -> Iterator[Ticks]:
    """The pieces re-cut at instants: each ends with every row of its last `ts` (the rows of that
    instant from the next piece move in), and each piece's rows are in time order. NotInTimeOrder
    when a row is older than the one before it. Keys grow from piece to piece; each piece yielded
    carries the keys of the piece it came from."""
    held: Ticks | None = None  # the rows of the last instant seen, which the next piece may continue
    for piece in pieces:
        if not len(piece):
            continue
        ts = piece.ts
        if np.any(ts[1:] < ts[:-1]) or (held is not None and ts[0] < held.ts[-1]):
            raise NotInTimeOrder
        if held is not None:
            piece = Ticks.concat([held.with_keys(piece.keys), piece])
            ts = piece.ts
        cut = int(np.searchsorted(ts, ts[-1], side="left"))  # the last instant's first row
        if cut:
            yield piece.take(slice(0, cut))  # type: ignore[arg-type]
        held = piece.take(slice(cut, len(piece)))  # type: ignore[arg-type]
    if held is not None:
        yield held


def windowed(pieces: Iterable[Ticks], bounds: tuple[float, float] | None) -> Iterator[Ticks]:
    """Only the rows received in [start, end) (a scenario's [window]); pieces left empty are skipped."""
    for piece in pieces:
        if bounds is not None:
            piece = piece.take((piece.ts >= bounds[0]) & (piece.ts < bounds[1]))
        if len(piece):
            yield piece
