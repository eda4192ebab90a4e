"""Validation state as arrays: one row per market, one column per field of the per-tick rules.

The rules that turn a candidate into a mark (tier hysteresis, the jump guard and its window, the
anchor's time-weighted mean, the publish cadence; their logic is in this package's other modules)
keep their state here, in numpy columns indexed by market row. Two paths read and write the same
columns:

- the quiet path (`quiet_mask`, `advance_quiet`): a few vectorised steps per tick for every market
  to which nothing happens this tick, which is almost every market on almost every tick;
- the per-market path: `stage.DisputeStage.process`, whose `TierMachine`, `JumpGuard`, `Anchor`
  and `MarketState` are views of one row of these columns (`Column` descriptors), for the markets
  where something does happen (a tier change, an exclusion, a window, a detector, a dispute);
- along time, in a replay chunk (`quiet_run`, `advance_run`: oracle.replay.runs).

Each field has one home (its column), so the two paths can never disagree about a market's state.
The quiet path runs exactly the scalar code's float operations in the same order (numpy's
elementwise +, -, *, / round as Python's float operations do), so its results are bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar, overload

import numpy as np

from oracle.models import Excluded, Mark, Status

# Status codes in the `pub_status` column (and of quiet marks).
STATUSES: tuple[Status, ...] = tuple(Status)
STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
OK, DEGRADED = STATUS_CODE[Status.OK], STATUS_CODE[Status.DEGRADED]

# Bits of the `muted` column: detectors silenced until their condition clears.
MUTE_ANCHOR, MUTE_DIVERGENCE = 1, 2

# name -> (dtype, value of a fresh row). Prefixes: g_ jump guard, a_ anchor, pub_ last published,
# cand_ the tier in use's result at the latest tick, last_ last validated, pol_ the market's policy.
SPEC: dict[str, tuple[Any, Any]] = {
    "live": (bool, False),  # the row belongs to a market the stage has seen (a MarketState)
    "tier": (np.int64, 0),
    "recover_ticks": (np.int64, 0),
    "tier_max_dev": (float, 0.0),
    "g_max_jump": (float, 0.0),
    "g_window_s": (float, 0.0),
    "g_max_dev": (float, 0.0),
    "g_opened": (float, math.nan),  # the dispute window's start; NaN = no window
    "g_reference": (float, math.nan),
    "g_upheld": (bool, False),
    "a_window_s": (float, 0.0),
    "a_buckets": (np.int64, 0),
    "a_width": (float, math.inf),
    "a_closed_pw": (float, 0.0),
    "a_closed_w": (float, 0.0),
    "a_bucket": (np.int64, 0),
    "a_pw": (float, 0.0),
    "a_w": (float, 0.0),
    "a_price": (float, math.nan),
    "a_ts": (float, math.nan),
    "last_price": (float, math.nan),
    "last_conf": (float, math.nan),
    "last_ts": (float, 0.0),
    "last_tier": (np.int64, 0),
    "cand_has": (bool, False),
    "cand_price": (float, math.nan),
    "cand_conf": (float, math.nan),
    "cand_tier": (np.int64, 0),
    "cand_quorum": (bool, False),
    "pub_has": (bool, False),
    "pub_price": (float, math.nan),
    "pub_status": (np.int8, 0),
    "pub_tier": (np.int64, 0),
    "pub_conf": (float, math.nan),
    "pub_ts": (float, -math.inf),
    "frozen_any": (bool, False),  # the market's set of frozen sources is not empty
    "muted": (np.int8, 0),
    "anchor_confirmed": (bool, False),
    "pol_max_dev": (float, 0.0),
    "pol_anchor_dev": (float, 0.0),
    "pol_heartbeat_ms": (float, 0.0),
    "open_n": (np.int64, 0),  # open disputes on the market
}
OBJECTS = ("last_sources", "cand_sources")  # tuples of source names, in object columns


def _objects(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(())
    return out


class StateArrays:
    """The columns of `n` markets; `streak` is (n, tiers): each tier's run of ticks with quorum."""

    live: np.ndarray
    tier: np.ndarray
    recover_ticks: np.ndarray
    tier_max_dev: np.ndarray
    g_max_jump: np.ndarray
    g_window_s: np.ndarray
    g_max_dev: np.ndarray
    g_opened: np.ndarray
    g_reference: np.ndarray
    g_upheld: np.ndarray
    a_window_s: np.ndarray
    a_buckets: np.ndarray
    a_width: np.ndarray
    a_closed_pw: np.ndarray
    a_closed_w: np.ndarray
    a_bucket: np.ndarray
    a_pw: np.ndarray
    a_w: np.ndarray
    a_price: np.ndarray
    a_ts: np.ndarray
    last_price: np.ndarray
    last_conf: np.ndarray
    last_ts: np.ndarray
    last_tier: np.ndarray
    cand_has: np.ndarray
    cand_price: np.ndarray
    cand_conf: np.ndarray
    cand_tier: np.ndarray
    cand_quorum: np.ndarray
    pub_has: np.ndarray
    pub_price: np.ndarray
    pub_status: np.ndarray
    pub_tier: np.ndarray
    pub_conf: np.ndarray
    pub_ts: np.ndarray
    frozen_any: np.ndarray
    muted: np.ndarray
    anchor_confirmed: np.ndarray
    pol_max_dev: np.ndarray
    pol_anchor_dev: np.ndarray
    pol_heartbeat_ms: np.ndarray
    open_n: np.ndarray
    last_sources: np.ndarray
    cand_sources: np.ndarray
    streak: np.ndarray

    def __init__(self, n: int, tiers: int = 1) -> None:
        self.n = n
        for name, (dtype, fresh) in SPEC.items():
            setattr(self, name, np.full(n, fresh, dtype=dtype))
        for name in OBJECTS:
            setattr(self, name, _objects(n))
        self.streak = np.zeros((n, max(1, tiers)), dtype=np.int64)

    def col(self, name: str) -> np.ndarray:
        arr: np.ndarray = getattr(self, name)
        return arr

    def reset_row(self, i: int) -> None:
        """Row `i` as a market that was never ticked."""
        for name, (_, fresh) in SPEC.items():
            self.col(name)[i] = fresh
        for name in OBJECTS:
            self.col(name)[i] = ()
        self.streak[i] = 0

    def copy_row(self, i: int, src: StateArrays, j: int) -> None:
        """Row `i` takes `src`'s row `j` (a config reload renumbers the markets)."""
        for name in (*SPEC, *OBJECTS):
            self.col(name)[i] = src.col(name)[j]
        k = min(self.streak.shape[1], src.streak.shape[1])
        self.streak[i] = 0
        self.streak[i, :k] = src.streak[j, :k]

    def widen(self, tiers: int) -> None:
        """Room for `tiers` tiers in `streak` (a standalone TierMachine learns its tiers late)."""
        if tiers > self.streak.shape[1]:
            wider = np.zeros((self.n, tiers), dtype=np.int64)
            wider[:, : self.streak.shape[1]] = self.streak
            self.streak = wider


T = TypeVar("T")


class Column(Generic[T]):
    """A scalar attribute of a per-market view, stored in its row of a StateArrays column.
    The owner has `_cols` (StateArrays) and `_row` (int); reads come back as Python scalars."""

    def __init__(self, name: str, cast: Callable[[Any], T]) -> None:
        self.name, self.cast = name, cast

    @overload
    def __get__(self, obj: None, owner: type) -> Column[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object, owner: type) -> Column[T] | T:
        if obj is None:
            return self
        return self.cast(getattr(obj._cols, self.name).item(obj._row))  # type: ignore[attr-defined]

    def __set__(self, obj: object, value: T) -> None:
        getattr(obj._cols, self.name)[obj._row] = value  # type: ignore[attr-defined]


# --- the quiet path ----------------------------------------------------------------------------


def deviation_bps(price: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """disputes.model.deviation_bps over arrays, with the same float operations."""
    usable = np.isfinite(price) & np.isfinite(reference) & (reference > 0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        dev = np.abs(price - reference) / reference * 10_000.0
    return np.where(usable, dev, math.inf)


def anchor_mean(closed_pw: Any, pw: Any, closed_w: Any, w: Any, price: Any) -> np.ndarray:
    """detectors.Anchor.mean over arrays, with the same float operations: the time-weighted mean of
    the closed buckets and the open one, or the price itself before any time has elapsed."""
    total = closed_w + w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total <= 0, price, (closed_pw + pw) / total)


def same_or_nan(a: Any, b: Any) -> Any:
    """a == b, NaN counting as equal to NaN (a confidence is NaN where a venue gives none)."""
    return (a == b) | (np.isnan(a) & np.isnan(b))


@dataclass
class Lanes:
    """A block's results as (markets, tiers) matrices: tier t of the block's j-th market at [j, t-1].
    Cells of tiers a market does not have are NaN / False."""

    price: np.ndarray
    confidence: np.ndarray
    quorum: np.ndarray
    every: np.ndarray  # every configured source of the lane was accepted
    n_tiers: np.ndarray  # (markets,)
    excluded: np.ndarray  # (markets,) any exclusion in any of the market's lanes
    frozen: np.ndarray  # (markets,) any of them excluded as frozen


@dataclass
class Quiet:
    """The quiet markets of a block and what the step computed for them."""

    mask: np.ndarray  # (markets,) over the block's markets
    streak: np.ndarray  # (markets, tiers) the counted streaks (valid on quiet rows)
    tier: np.ndarray  # (markets,) the tier in use (0 where none)


def quiet_mask(s: StateArrays, rows: np.ndarray, lanes: Lanes, now: float) -> Quiet:
    """Which markets of a block nothing happens to this tick: their tier stays in use, with quorum,
    and no higher tier recovers; no frozen source now or last tick; no divergence; the
    anchor holds (or is off, or nothing is validated yet); no window, no uphold, an ordinary move;
    no open dispute, no muted detector. `rows` are the markets' rows in `s`
    (-1: a market the stage does not know, never quiet)."""
    known = rows >= 0
    r = np.where(known, rows, 0)
    n, k = lanes.price.shape
    ix = np.arange(n)
    tier = s.tier[r]
    has_tier = (tier >= 1) & (tier <= lanes.n_tiers)
    t0 = np.where(has_tier, tier - 1, 0)
    price = lanes.price[ix, t0]
    quiet = known & s.live[r] & has_tier & lanes.quorum[ix, t0] & ~lanes.frozen
    quiet &= ~s.frozen_any[r] & (s.muted[r] == 0) & (s.open_n[r] == 0)
    # The tier machine: streaks are counted first; a higher tier that earned its way back recovers.
    streak = np.where(lanes.quorum, s.streak[r, :k] + 1, 0)
    need = np.maximum(s.recover_ticks[r], 1)
    tier_dev = s.tier_max_dev[r]
    for t in range(k - 1):
        higher = (t < t0) & (streak[:, t] >= need)
        if higher.any():
            quiet &= ~(higher & (deviation_bps(lanes.price[:, t], price) <= tier_dev))
    # Divergence: two tiers with quorum that disagree.
    max_dev = s.pol_max_dev[r]
    for a in range(k):
        for b in range(a + 1, k):
            both = lanes.quorum[:, a] & lanes.quorum[:, b]
            if both.any():
                quiet &= ~(both & (deviation_bps(lanes.price[:, b], lanes.price[:, a]) > max_dev))
    last = s.last_price[r]
    validated = ~np.isnan(last)
    # The anchor detector, when it runs: the candidate far from the time-weighted mean.
    checks = validated & (s.a_window_s[r] > 0) & (s.pol_anchor_dev[r] != 0)
    if checks.any():
        mean = anchor_mean(s.a_closed_pw[r], s.a_pw[r], s.a_closed_w[r], s.a_w[r], s.a_price[r])
        breached = np.isfinite(mean) & (deviation_bps(price, mean) > s.pol_anchor_dev[r])
        quiet &= ~(checks & breached)
    # The jump guard: no window, no uphold, and an ordinary move (or the first mark).
    jump = s.g_max_jump[r]
    ordinary = (jump == 0) | (deviation_bps(price, last) <= jump)
    quiet &= np.isnan(s.g_opened[r]) & ~s.g_upheld[r] & (~validated | ordinary)
    return Quiet(quiet, streak, np.where(has_tier, tier, 0))


def advance_quiet(
    s: StateArrays,
    rows: np.ndarray,
    q: Quiet,
    lanes: Lanes,
    sources: np.ndarray,
    now: float,
    close_buckets: Callable[[np.ndarray, int], None],
) -> None:
    """Advance the quiet markets by one tick, as `DisputeStage.process` would: streaks counted,
    the candidate validated, the anchor fed, nothing else changes. `sources` holds each market's
    tier-in-use accepted source names (object array over the block's markets). `close_buckets(rows,
    index)` closes the anchor bucket of those rows (`Anchor._close_bucket`: per market, in Python)
    where time entered bucket `index`."""
    j = np.flatnonzero(q.mask)
    if not j.size:
        return
    r = rows[j]
    t0 = q.tier[j] - 1
    price = lanes.price[j, t0]
    conf = lanes.confidence[j, t0]
    k = q.streak.shape[1]
    s.streak[r, :k] = q.streak[j]
    s.streak[r, k:] = 0
    s.cand_has[r], s.cand_price[r], s.cand_conf[r] = True, price, conf
    s.cand_tier[r], s.cand_quorum[r] = q.tier[j], True
    names = sources[j]
    s.cand_sources[r] = names
    # The anchor detector ran (nothing breached): not confirmed.
    ran = ~np.isnan(s.last_price[r]) & (s.a_window_s[r] > 0)
    s.anchor_confirmed[r[ran]] = False
    # The jump guard validates the candidate.
    s.last_price[r], s.last_conf[r], s.last_ts[r], s.last_tier[r] = price, conf, now, q.tier[j]
    s.last_sources[r] = names
    # Anchor.observe(price, now): the previous price was in force from its time until now.
    a_price, a_ts = s.a_price[r], s.a_ts[r]
    acc = np.isfinite(a_price) & (now > a_ts)
    width = s.a_width[r]
    with np.errstate(invalid="ignore"):
        index = np.where(np.isfinite(width), np.floor(now / width), 0.0)
    closing = acc & (index != s.a_bucket[r])
    for at in np.unique(index[closing]).tolist():  # one index for all, but for unlike windows
        close_buckets(r[closing & (index == at)], int(at))
    ra = r[acc]
    dt = now - a_ts[acc]
    s.a_pw[ra] += a_price[acc] * dt
    s.a_w[ra] += dt
    s.a_price[r], s.a_ts[r] = price, now


def publish_due(s: StateArrays, rows: np.ndarray, status: np.ndarray, now: float) -> np.ndarray:
    """DisputeStage._should_publish over quiet rows (their mark: last_* and `status`): which are due,
    recording them as published."""
    price, conf, tier = s.last_price[rows], s.last_conf[rows], s.tier[rows]
    same_conf = same_or_nan(s.pub_conf[rows], conf)
    changed = (
        ~s.pub_has[rows]
        | (s.pub_price[rows] != price)
        | (s.pub_status[rows] != status)
        | (s.pub_tier[rows] != tier)
        | ~same_conf
    )
    due = (now - s.pub_ts[rows]) * 1000.0 >= s.pol_heartbeat_ms[rows]
    go = (changed | due) & ~np.isnan(price)
    w = rows[go]
    s.pub_has[w], s.pub_price[w], s.pub_status[w] = True, price[go], status[go]
    s.pub_tier[w], s.pub_conf[w], s.pub_ts[w] = tier[go], conf[go], now
    return go


# --- marks, built when read ------------------------------------------------------------------


class LazyMarks(Sequence[Mark]):
    """Marks built on first read, each once (`_build(k)`): at 1,000 markets a tick, most are only
    published from columns, or not read at all."""

    def __init__(self, n: int) -> None:
        self._made: list[Mark | None] = [None] * n

    def _build(self, k: int) -> Mark:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._made)

    @overload
    def __getitem__(self, k: int) -> Mark: ...
    @overload
    def __getitem__(self, k: slice) -> list[Mark]: ...
    def __getitem__(self, k: int | slice) -> Mark | list[Mark]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        mark = self._made[k]
        if mark is None:
            mark = self._made[k] = self._build(k)
        return mark

    def __iter__(self) -> Iterator[Mark]:
        for k in range(len(self._made)):
            yield self[k]


class MarkTable(LazyMarks):
    """Every market's mark of one tick, in plan order. Marks the per-market path made are kept;
    the others are built from a copy of the columns on first read (most ticks, most marks are
    only published, and a publisher reading them builds each once)."""

    def __init__(self, markets: Sequence[str]) -> None:
        super().__init__(len(markets))
        self.markets = markets
        n = len(markets)
        self.price = np.full(n, math.nan)
        self.confidence = np.full(n, math.nan)
        self.ts = np.zeros(n)
        self.tier = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.candidate = np.full(n, math.nan)
        self.sources = _objects(n)
        self._excluded: dict[int, tuple[Excluded, ...]] = {}

    def fill(self, at: np.ndarray, s: StateArrays, rows: np.ndarray, status: np.ndarray) -> None:
        """Record the quiet markets at plan indices `at` (state rows `rows`) after their step."""
        self.price[at], self.confidence[at], self.ts[at] = s.last_price[rows], s.last_conf[rows], s.last_ts[rows]
        self.tier[at], self.status[at], self.candidate[at] = s.tier[rows], status, s.cand_price[rows]
        self.sources[at] = s.last_sources[rows]

    def put(self, at: int, mark: Mark) -> None:
        self._made[at] = mark

    def exclude(self, at: int, excluded: tuple[Excluded, ...]) -> None:
        """The quotes left out of a quiet market's mark (a source down or an outlier)."""
        self._excluded[at] = excluded

    def by_market(self) -> Mapping[str, Mark]:
        """The same marks by market name."""
        return _ByMarket(self)

    def _build(self, k: int) -> Mark:
        return _mark_at(self, k, self._excluded.get(k, _NO_EXCLUSIONS))

    def columns(self, at: Sequence[int]) -> MarkColumns:
        """The marks at plan indices `at` as columns, without building a Mark for any: those the
        per-market path made are read from their Mark, the others from the table's columns."""
        idx = np.asarray(at, dtype=np.intp)
        excluded = {j: self._excluded[k] for j, k in enumerate(at) if k in self._excluded} if self._excluded else {}
        cols = MarkColumns(
            [self.markets[k] for k in at],
            self.price[idx],
            self.confidence[idx],
            self.ts[idx],
            self.tier[idx],
            self.status[idx],
            self.sources[idx],
            self.candidate[idx],
            excluded,
        )
        made = self._made
        for j, k in enumerate(at):
            mark = made[k]
            if mark is not None:
                cols.put(j, mark)
        return cols


_NO_EXCLUSIONS: tuple[Excluded, ...] = ()


def _mark_at(c: MarkTable | MarkColumns, k: int, excluded: tuple[Excluded, ...], seq: int = 0) -> Mark:
    """Row `k` of a table's or a selection's columns as a Mark."""
    return Mark(
        market=c.markets[k],
        price=float(c.price[k]),
        confidence=float(c.confidence[k]),
        ts=float(c.ts[k]),
        seq=seq,
        status=STATUSES[c.status[k]],
        tier=int(c.tier[k]),
        sources=c.sources[k],
        excluded=excluded,
        candidate=float(c.candidate[k]),
    )


@dataclass(frozen=True, eq=False)
class MarkColumns:
    """Some marks of one tick as aligned columns (row j is `markets[j]`'s mark, seq not assigned):
    what a publisher serialises in one go, column by column, instead of mark by mark. Only
    `excluded` is sparse (row -> the quotes left out), as in MarkTable."""

    markets: list[str]
    price: np.ndarray
    confidence: np.ndarray
    ts: np.ndarray
    tier: np.ndarray
    status: np.ndarray  # codes into STATUSES
    sources: np.ndarray  # object: tuples of source names
    candidate: np.ndarray
    excluded: dict[int, tuple[Excluded, ...]]

    @staticmethod
    def of(marks: Sequence[Mark]) -> MarkColumns:
        """Marks (already built) as columns."""
        return MarkColumns(
            [m.market for m in marks],
            np.array([m.price for m in marks], dtype=float),
            np.array([m.confidence for m in marks], dtype=float),
            np.array([m.ts for m in marks], dtype=float),
            np.array([m.tier for m in marks], dtype=np.int64),
            np.array([STATUS_CODE[m.status] for m in marks], dtype=np.int8),
            np.fromiter((m.sources for m in marks), dtype=object, count=len(marks)),  # tuples kept whole
            np.array([m.candidate for m in marks], dtype=float),
            {j: m.excluded for j, m in enumerate(marks) if m.excluded},
        )

    def __len__(self) -> int:
        return len(self.markets)

    def put(self, j: int, mark: Mark) -> None:
        """Row j takes `mark`'s fields (its market is row j's already)."""
        self.price[j], self.confidence[j], self.ts[j] = mark.price, mark.confidence, mark.ts
        self.tier[j], self.status[j], self.candidate[j] = mark.tier, STATUS_CODE[mark.status], mark.candidate
        self.sources[j] = mark.sources
        if mark.excluded:
            self.excluded[j] = mark.excluded

    def take(self, rows: Sequence[int] | np.ndarray) -> MarkColumns:
        """These rows, in this order."""
        idx = np.asarray(rows, dtype=np.intp)
        at = {j: k for k, j in enumerate(idx.tolist())}
        return MarkColumns(
            [self.markets[j] for j in idx.tolist()],
            self.price[idx],
            self.confidence[idx],
            self.ts[idx],
            self.tier[idx],
            self.status[idx],
            self.sources[idx],
            self.candidate[idx],
            {at[j]: ex for j, ex in self.excluded.items() if j in at},
        )

    def mark(self, j: int, seq: int = 0) -> Mark:
        return _mark_at(self, j, self.excluded.get(j, _NO_EXCLUSIONS), seq)

    def marks(self) -> list[Mark]:
        return [self.mark(j) for j in range(len(self))]


class _ByMarket(Mapping[str, Mark]):
    def __init__(self, table: MarkTable) -> None:
        self.table = table

    @cached_property
    def index(self) -> dict[str, int]:
        """Made on first read: the daemon takes every tick's view, and most are never read."""
        return {m: k for k, m in enumerate(self.table.markets)}

    def __getitem__(self, market: str) -> Mark:
        return self.table[self.index[market]]

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)


class MarkList(Sequence[Mark]):
    """Some marks of a MarkTable, by plan index, built when read."""

    def __init__(self, table: MarkTable, at: Sequence[int]) -> None:
        self.table, self.at = table, at

    def __len__(self) -> int:
        return len(self.at)

    @overload
    def __getitem__(self, k: int) -> Mark: ...
    @overload
    def __getitem__(self, k: slice) -> list[Mark]: ...
    def __getitem__(self, k: int | slice) -> Mark | list[Mark]:
        if isinstance(k, slice):
            return [self.table[i] for i in self.at[k]]
        return self.table[self.at[k]]

    def __iter__(self) -> Iterator[Mark]:
        table = self.table
        for i in self.at:
            yield table[i]

    def __add__(self, other: Sequence[Mark]) -> list[Mark]:
        return [*self, *other]

    def columns(self) -> MarkColumns:
        """These marks as columns (MarkTable.columns)."""
        return self.table.columns(self.at)


# --- quiet runs along time (a replay chunk) ---------------------------------------------------


@dataclass
class TimeLanes:
    """One market's lanes over the ticks of a replay chunk: tier t at tick i is [i, t-1]."""

    price: np.ndarray  # (ticks, tiers)
    confidence: np.ndarray
    quorum: np.ndarray
    n_tiers: int
    frozen: np.ndarray  # (ticks,) any of its quotes excluded as frozen


@dataclass
class QuietRun:
    """The first `length` (> 0) ticks of a TimeLanes to which nothing happens, one after another,
    and what the quiet path computes for them (valid on those ticks)."""

    length: int
    tier: int
    streak: np.ndarray  # (ticks, tiers) the counted streaks
    validated: np.ndarray  # (ticks,) a price was validated before the tick
    pw: np.ndarray  # (ticks + 1,) the anchor's open bucket sums before each tick, then after
    w: np.ndarray


def quiet_run(s: StateArrays, r: int, lanes: TimeLanes, nows: np.ndarray) -> QuietRun | None:
    """`quiet_mask` along time: for the market at row `r`, how many ticks from the first of `lanes`
    on are quiet, each tick's state being what `advance_quiet` left after the one before. The same
    conditions in the same float operations; where the quiet path would close an anchor bucket the
    run ends too (the bucket closes in Python, on the tick path). None: the first tick is not quiet."""
    tier = int(s.tier[r])
    if not (s.live[r] and 1 <= tier <= lanes.n_tiers and not s.frozen_any[r] and s.muted[r] == 0):
        return None
    if s.open_n[r] != 0 or not math.isnan(s.g_opened[r]) or s.g_upheld[r]:
        return None
    n, k = lanes.price.shape
    t0 = tier - 1
    price, quorum = lanes.price[:, t0], lanes.quorum
    ok = quorum[:, t0] & ~lanes.frozen & ~np.isnan(price)
    # The tier machine's streaks: one more for each tick with quorum, 0 without.
    idx = np.arange(n)
    streak = np.empty((n, k), dtype=np.int64)
    for c in range(k):
        reset = np.maximum.accumulate(np.where(quorum[:, c], -1, idx))  # the latest tick without quorum
        streak[:, c] = np.where(reset >= 0, idx - reset, s.streak[r, c] + idx + 1)
    need = max(int(s.recover_ticks[r]), 1)
    for c in range(t0):  # a higher tier that earned its way back recovers
        ok &= ~((streak[:, c] >= need) & (deviation_bps(lanes.price[:, c], price) <= s.tier_max_dev[r]))
    for a in range(k):  # divergence: two tiers with quorum that disagree
        for b in range(a + 1, k):
            both = quorum[:, a] & quorum[:, b]
            ok &= ~(both & (deviation_bps(lanes.price[:, b], lanes.price[:, a]) > s.pol_max_dev[r]))
    # Before tick i of the run, the last validated price (and the anchor's) is tick i-1's candidate.
    last = np.concatenate(([s.last_price[r]], price[:-1]))
    validated = ~np.isnan(last)
    a_price = np.concatenate(([s.a_price[r]], price[:-1]))
    a_ts = np.concatenate(([s.a_ts[r]], nows[:-1]))
    acc = np.isfinite(a_price) & (nows > a_ts)
    width = float(s.a_width[r])
    if math.isfinite(width):
        ok &= ~(acc & (np.floor(nows / width) != s.a_bucket[r]))  # a bucket would close
    with np.errstate(invalid="ignore"):
        dt = np.where(acc, nows - a_ts, 0.0)
        # x + 0.0 is x for the sums' values (never -0.0), and cumsum adds in order: the scalar's +=.
        pw = np.cumsum(np.concatenate(([s.a_pw[r]], np.where(acc, a_price * dt, 0.0))))
    w = np.cumsum(np.concatenate(([s.a_w[r]], dt)))
    if s.a_window_s[r] > 0 and s.pol_anchor_dev[r] != 0:
        mean = anchor_mean(s.a_closed_pw[r], pw[:-1], s.a_closed_w[r], w[:-1], a_price)
        ok &= ~(validated & np.isfinite(mean) & (deviation_bps(price, mean) > s.pol_anchor_dev[r]))
    jump = s.g_max_jump[r]
    if jump != 0:  # the jump guard: an ordinary move (or the first mark)
        ok &= ~validated | (deviation_bps(price, last) <= jump)
    length = n if ok.all() else int(np.argmin(ok))
    return QuietRun(length, tier, streak, validated, pw, w) if length else None


def advance_run(
    s: StateArrays, r: int, run: QuietRun, lanes: TimeLanes, sources: Sequence[tuple[str, ...]], nows: np.ndarray
) -> np.ndarray:
    """Advance the market at row `r` through the run's ticks as `advance_quiet` and `publish_due`
    would tick after tick; `sources[i]`: tick i's accepted names of the tier in use. Returns which
    ticks' marks are due for publication."""
    n, e = run.length, run.length - 1
    price, conf = lanes.price[:n, run.tier - 1], lanes.confidence[:n, run.tier - 1]
    k = run.streak.shape[1]
    s.streak[r, :k] = run.streak[e]
    s.streak[r, k:] = 0
    s.cand_has[r], s.cand_price[r], s.cand_conf[r] = True, price[e], conf[e]
    s.cand_tier[r], s.cand_quorum[r], s.cand_sources[r] = run.tier, True, sources[e]
    if s.a_window_s[r] > 0 and run.validated[:n].any():
        s.anchor_confirmed[r] = False  # the anchor detector ran and nothing breached
    s.last_price[r], s.last_conf[r], s.last_ts[r], s.last_tier[r] = price[e], conf[e], nows[e], run.tier
    s.last_sources[r] = sources[e]
    s.a_pw[r], s.a_w[r], s.a_price[r], s.a_ts[r] = run.pw[n], run.w[n], price[e], nows[e]
    return _publish_run(s, r, run.tier, price, conf, nows[:n])


def _publish_run(
    s: StateArrays, r: int, tier: int, price: np.ndarray, conf: np.ndarray, nows: np.ndarray
) -> np.ndarray:
    """`publish_due` tick after tick over a run (its prices are all finite). After the run's first
    tick the last published mark equals the tick before's (published, or unchanged from it), so a
    tick is due on a change from the tick before, or by the heartbeat."""
    status = OK if tier == 1 else DEGRADED
    changed = np.empty(len(price), dtype=bool)
    changed[0] = not (
        s.pub_has[r] and s.pub_price[r] == price[0] and s.pub_status[r] == status and s.pub_tier[r] == tier
        and same_or_nan(s.pub_conf[r], conf[0])
    )  # fmt: skip
    changed[1:] = (price[1:] != price[:-1]) | ~same_or_nan(conf[1:], conf[:-1])
    go = changed.copy()
    last_ts, heartbeat = float(s.pub_ts[r]), float(s.pol_heartbeat_ms[r])
    if not changed.all():  # the heartbeat's turn comes from the last publication: in order
        times = nows.tolist()
        for i in range(len(times)):
            if go[i] or (times[i] - last_ts) * 1000.0 >= heartbeat:
                go[i], last_ts = True, times[i]
    if go.any():
        e = int(np.flatnonzero(go)[-1])
        s.pub_has[r], s.pub_price[r], s.pub_status[r] = True, price[e], status
        s.pub_tier[r], s.pub_conf[r], s.pub_ts[r] = tier, conf[e], nows[e]
    return go
