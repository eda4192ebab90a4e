"""The attack library: pure transforms of a ticks table, one per kind of DESIGN.md.

Each attack acts on the rows of its `sources` for its `pair` whose receive time falls in
[t0 + start_s, t0 + start_s + duration_s), t0 being the first tick. They model the incidents of
INCIDENTS.md: a single venue pumped (spike), every venue walked up (ramp), a feed stuck at a floor
(freeze), a dead venue (dropout), lagging or clock-skewed venues (delay, skew), and one venue's
quotes reappearing under several names to fake independence (duplicate, a Sybil).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field

from oracle.settings import Strict
from oracle.ticks import Ticks

Kind = Literal["spike", "ramp", "freeze", "dropout", "delay", "skew", "duplicate"]


class Attack(Strict):
    kind: Kind
    sources: list[str] = Field(min_length=1)
    pair: str
    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    # spike/ramp: relative price change (+0.30 = +30 %); delay/skew: seconds; duplicate: the relative
    # shift of the copies (0 = exact copies); freeze/dropout: unused.
    magnitude: float = 0.0
    # A genuine move of the market (LUNA's fall, USDC's de-peg), not an attack: the reference run sees
    # it too, so the error measures only what the other attacks do on top of it.
    genuine: bool = False

    def window(self, t0: float) -> tuple[float, float]:
        return t0 + self.start_s, t0 + self.start_s + self.duration_s


def apply_attacks(ticks: Ticks, attacks: list[Attack]) -> Ticks:
    """All attacks, in order, each timed from the first tick of the unattacked file."""
    return apply_and_check(ticks, attacks, None)[0]


def apply_and_check(ticks: Ticks, attacks: list[Attack], read: set[tuple[str, str]] | None) -> tuple[Ticks, list[int]]:
    """apply_attacks, and the indices of the attacks that hit nothing: no row of their sources and
    pair in their window (among the `read` (source, pair) keys, when given), as the ticks stand when
    each attack's turn comes (a `duplicate` may create the rows a later attack aims at)."""
    if not len(ticks):
        return ticks, list(range(len(attacks)))
    t0 = float(ticks.ts.min())
    missed = []
    for i, attack in enumerate(attacks):
        if not _hits(ticks, attack, t0, read):
            missed.append(i)
        ticks = _KINDS[attack.kind](ticks, attack, t0)
    return ticks.sorted(), missed


def _hits(ticks: Ticks, attack: Attack, t0: float, read: set[tuple[str, str]] | None) -> bool:
    if attack.kind == "duplicate":  # it copies sources[0]'s rows; its copies matter where they are read
        read_any = read is None or any((s, attack.pair) in read for s in attack.sources)
        return read_any and bool(_origin_rows(ticks, attack, t0).any())
    rows = _targets(ticks, attack, t0)
    if read is not None:
        rows &= np.isin(ticks.feed, [k for k, key in enumerate(ticks.keys) if key in read])
    return bool(rows.any())


def _targets(ticks: Ticks, attack: Attack, t0: float) -> np.ndarray:
    start, end = attack.window(t0)
    return ticks.rows_of(set(attack.sources), attack.pair) & (ticks.ts >= start) & (ticks.ts < end)


def _scaled(ticks: Ticks, rows: np.ndarray, factor: np.ndarray | float) -> Ticks:
    """Every price column of the rows times `factor` (a confidence is in price units: it scales too)."""
    cols = {name: getattr(ticks, name).copy() for name in _PRICES}
    for col in cols.values():
        col[rows] *= factor
    return dataclasses.replace(ticks, **cols)


_PRICES = ("price", "bid", "ask", "confidence", "last")


def spike(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    return _scaled(ticks, _targets(ticks, attack, t0), 1.0 + attack.magnitude)


def ramp(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    rows = _targets(ticks, attack, t0)
    start, _ = attack.window(t0)
    progress = (ticks.ts[rows] - start) / attack.duration_s
    return _scaled(ticks, rows, 1.0 + attack.magnitude * progress)


def freeze(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    """Each targeted feed keeps sending, but repeats the last price it had before the window."""
    rows = _targets(ticks, attack, t0)
    cols = {name: getattr(ticks, name).copy() for name in _PRICES}
    start, _ = attack.window(t0)
    for f in np.unique(ticks.feed[rows]):
        before = np.flatnonzero((ticks.feed == f) & (ticks.ts < start))
        if not before.size:
            continue
        last = before[np.argmax(ticks.ts[before])]
        hit = rows & (ticks.feed == f)
        for col in cols.values():
            col[hit] = col[last]
    return dataclasses.replace(ticks, **cols)


def dropout(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    return ticks.take(~_targets(ticks, attack, t0))


def delay(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    """Quotes arrive `magnitude` seconds late: receive time moves, venue time does not."""
    rows = _targets(ticks, attack, t0)
    ts = ticks.ts.copy()
    ts[rows] += attack.magnitude
    venue_ts = np.where(rows & np.isnan(ticks.venue_ts), ticks.ts, ticks.venue_ts)
    return dataclasses.replace(ticks, ts=ts, venue_ts=venue_ts)


def skew(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    """The venue's clock runs `magnitude` seconds off (ahead when positive)."""
    rows = _targets(ticks, attack, t0)
    venue_ts = np.where(np.isnan(ticks.venue_ts), ticks.ts, ticks.venue_ts)
    venue_ts = np.where(rows, venue_ts + attack.magnitude, ticks.venue_ts)
    return dataclasses.replace(ticks, venue_ts=venue_ts)


def _origin_rows(ticks: Ticks, attack: Attack, t0: float) -> np.ndarray:
    start, end = attack.window(t0)
    return ticks.rows_of({attack.sources[0]}, attack.pair) & (ticks.ts >= start) & (ticks.ts < end)


def duplicate(ticks: Ticks, attack: Attack, t0: float) -> Ticks:
    """`sources[0]`'s quotes also appear under `sources[1:]`, shifted by `magnitude`."""
    aliases = attack.sources[1:]
    rows = _origin_rows(ticks, attack, t0)
    keys = list(ticks.keys)
    for alias in aliases:
        if (alias, attack.pair) not in keys:
            keys.append((alias, attack.pair))
    grown = ticks.with_keys(tuple(keys))
    parts = [grown]
    for alias in aliases:
        copy = _scaled(grown.take(rows), np.ones(int(rows.sum()), dtype=bool), 1.0 + attack.magnitude)
        feed = np.full(len(copy), keys.index((alias, attack.pair)), dtype=np.intp)
        parts.append(dataclasses.replace(copy, keys=grown.keys, feed=feed))
    return Ticks.concat(parts)


class PieceAttacks:
    """`apply_and_check` over ticks that come in pieces (oracle.replay.pieces), with its answer.

    Every kind but `delay` changes rows where they are: a piece's attacked rows are the whole table's
    attacked rows of that piece, and since a piece holds every row of its instants, sorting it (stably)
    puts them where the whole table's sort does. Two things cross pieces: whether an attack hit
    anything, and the price a `freeze` repeats, the last before its window, perhaps in an earlier
    piece: each freeze carries, per feed, its latest row before the window (as the rows stood at its
    turn), and sees it ahead of the piece. `delay` moves rows in time, across pieces: `streams` says
    no, and the replay then reads the ticks whole."""

    def __init__(self, attacks: list[Attack], t0: float, read: set[tuple[str, str]] | None) -> None:
        self.attacks, self.t0, self.read = attacks, t0, read
        self.hit = [False] * len(attacks)
        self._before: list[Ticks | None] = [None] * len(attacks)  # per freeze: its feeds' rows before the window

    @staticmethod
    def streams(attacks: list[Attack]) -> bool:
        return all(a.kind != "delay" for a in attacks)

    @property
    def missed(self) -> list[int]:
        return [i for i, hit in enumerate(self.hit) if not hit]

    def apply(self, piece: Ticks) -> Ticks:
        for i, attack in enumerate(self.attacks):
            self.hit[i] = self.hit[i] or _hits(piece, attack, self.t0, self.read)
            if attack.kind == "freeze":
                piece = self._freeze(i, piece, attack)
            else:
                piece = _KINDS[attack.kind](piece, attack, self.t0)
        return piece.sorted()

    def _freeze(self, i: int, piece: Ticks, attack: Attack) -> Ticks:
        before = self._before[i]
        ahead = 0 if before is None else len(before)
        if before is not None:
            keys = piece.keys + tuple(k for k in before.keys if k not in piece.keys)
            piece = Ticks.concat([before.with_keys(keys), piece.with_keys(keys)])
        self._before[i] = _latest_before(piece, attack, self.t0)
        return freeze(piece, attack, self.t0).take(slice(ahead, len(piece)))  # type: ignore[arg-type]


def _latest_before(ticks: Ticks, attack: Attack, t0: float) -> Ticks | None:
    """Per feed of the attack, its row that `freeze` repeats: the latest before the window (the first
    of equal ones); None when there is none."""
    start, _ = attack.window(t0)
    rows = np.flatnonzero(ticks.rows_of(set(attack.sources), attack.pair) & (ticks.ts < start))
    if not rows.size:
        return None
    latest = []
    for f in np.unique(ticks.feed[rows]).tolist():
        mine = rows[ticks.feed[rows] == f]
        latest.append(mine[np.argmax(ticks.ts[mine])])
    return ticks.take(np.array(sorted(latest)))


_KINDS: dict[str, Callable[[Ticks, Attack, float], Ticks]] = {
    "spike": spike,
    "ramp": ramp,
    "freeze": freeze,
    "dropout": dropout,
    "delay": delay,
    "skew": skew,
    "duplicate": duplicate,
}
