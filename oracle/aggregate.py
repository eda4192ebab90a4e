"""The aggregation core: pure numpy maths, no I/O, time passed in.

The config is compiled once into a `Plan`. Markets are grouped into dependency levels (a market that
`convert`s through another comes in a later level, so it can use that market's validated mark from
the same tick). A level is cut into blocks; within a block every (market, tier) is one row of a
(rows x sources) matrix, and each rule is one vectorised step over the whole matrix, in this order:

    stale (receive time) > future (venue time ahead) > sanity (non-finite, <= 0) > frozen (oracle.freeze)
    > conversion (x the convert market's fresh validated mark) > bounds (min_price/max_price)
    > deviation from the tier median > quorum > median | weighted_median | trimmed_mean > confidence

The first rule a quote fails is its exclusion reason.

Confidence is a Pyth-style spread of the accepted prices, max(p50 - p25, p75 - p50), with the
quantiles taken as inverted-CDF (nearest-rank) quantiles of the weight distribution (source `weight`
for weighted_median, equal weights otherwise). Because a single accepted quote has no spread, the
band is never narrower than the mean of the accepted quotes' own half-widths (Pyth `conf`, or half
the bid/ask spread), converted like their prices.

A fallback tier needs min(min_sources, its size) quotes: a tier of one Pyth feed can carry a market
alone, while tier 1 must meet `min_sources` in full (the config refuses a tier 1 smaller than it).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from oracle.freeze import FreezeRule, FreezeState
from oracle.models import Candidate, Excluded, Exclusion, Mark, TierResult
from oracle.quotebook import BookSnapshot, QuoteBook
from oracle.settings import Settings, SourceRef

# Reason codes in the int8 exclusion matrix (0 = accepted or absent).
REASONS: tuple[Exclusion, ...] = (
    Exclusion.STALE,
    Exclusion.FUTURE,
    Exclusion.SANITY,
    Exclusion.FROZEN,
    Exclusion.CONVERSION,
    Exclusion.DEVIATION,
)
_CODE = {r: i + 1 for i, r in enumerate(REASONS)}
STALE, FUTURE, SANITY, FROZEN, CONVERSION, DEVIATION = (_CODE[r] for r in REASONS)
METHODS = ("median", "weighted_median", "trimmed_mean")


# A level is cut into blocks of about this many rows. A block's pass works in buffers allocated once
# (Block.work), so a big block costs no page faults, and every step is one numpy call for the whole
# block: 10,000 markets x 16 sources in one block take ~20 % less CPU than in blocks of 4,096 rows.
BLOCK_ROWS = 16384


def _chunks(group: list[str], settings: Settings) -> list[list[str]]:
    """Split a level's markets into blocks of at most ~BLOCK_ROWS rows, keeping a market's tiers together."""
    out: list[list[str]] = [[]]
    rows = 0
    for m in group:
        tiers = len(settings.markets[m].tiers)
        if out[-1] and rows + tiers > BLOCK_ROWS:
            out.append([])
            rows = 0
        out[-1].append(m)
        rows += tiers
    return out


@dataclass(frozen=True)
class Block:
    """Compiled layout of some markets of one dependency level: rows are (market, tier) lanes."""

    markets: tuple[int, ...]  # global market indices in this block
    row_market: np.ndarray  # (rows,) global market index of each row
    row_tier: np.ndarray  # (rows,) 1-based tier
    slot: np.ndarray  # (rows, cols) QuoteBook slot, padding -> the empty slot
    convert: np.ndarray  # (rows, cols) market index whose mark converts the quote; -1 = none
    converts: bool  # any cell converts; without, every rate is 1.0 (a block of one currency)
    bounded: bool  # any row sets min_price > 0 or a max_price
    weight: np.ndarray  # (rows, cols) source weight, 0 on padding
    present_cols: np.ndarray  # (rows, cols) bool: a configured source sits in this cell
    max_age_s: np.ndarray  # (rows,)
    max_dev: np.ndarray  # (rows,) as a fraction (bps / 1e4)
    quorum: np.ndarray  # (rows,)
    min_price: np.ndarray  # (rows,) exclusive lower bound, 0 = none
    max_price: np.ndarray  # (rows,) exclusive upper bound, inf = none
    trim: np.ndarray  # (rows,)
    freeze_ticks: np.ndarray  # (rows,) for the freeze rule; 0 = off
    freeze_frac: np.ndarray  # (rows, cols) each source's freeze_bps / 1e4 (oracle.freeze)
    method_rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # row indices per METHODS entry
    names: tuple[tuple[str, ...], ...]  # source names per row, by column
    pairs: tuple[tuple[str, ...], ...]  # pairs per row, by column

    def __post_init__(self) -> None:
        # Derived once for the pass (`run_block`); plain attributes, not fields, so that a copy made
        # by dataclasses.replace (oracle.replay.chunked) derives its own.
        put = object.__setattr__  # frozen: set once, here
        put(self, "row_base", np.arange(len(self.slot)) * self.slot.shape[1])  # each row's offset in a ravel()
        cols = self.slot.shape[1]
        put(self, "age_limit", _per_cell(self.max_age_s, cols))
        low, high = _ratio_cuts(self.max_dev)
        put(self, "ratio_low", _per_cell(low, cols))
        put(self, "ratio_high", _per_cell(high, cols))
        put(self, "price_floor", _per_cell(self.min_price, cols))
        put(self, "price_ceiling", _per_cell(self.max_price, cols))
        put(self, "padded", not bool(self.present_cols.all()))  # some cell holds no configured source
        flat = self.slot.ravel()
        run = not self.padded and bool((flat == flat[0] + np.arange(flat.size)).all())
        put(self, "run_start", int(flat[0]) if run else -1)  # the cells are slots run_start, +1, ... in order
        put(self, "_work", [])

    row_base: ClassVar[np.ndarray]  # (the types of the attributes set above, for mypy)
    age_limit: ClassVar[float | np.ndarray]  # max_age_s, per cell (`_per_cell`)
    ratio_low: ClassVar[float | np.ndarray]  # the deviation rule's cuts, per cell (`_ratio_cuts`)
    ratio_high: ClassVar[float | np.ndarray]
    price_floor: ClassVar[float | np.ndarray]  # min_price and max_price, per cell
    price_ceiling: ClassVar[float | np.ndarray]
    padded: ClassVar[bool]
    run_start: ClassVar[int]
    _work: ClassVar[list[_Work]]

    def work(self) -> _Work:
        """The block's buffers, allocated at its first pass and reused by every later one."""
        if not self._work:
            self._work.append(_Work(self.slot.shape, gather=self.run_start < 0))
        return self._work[0]


def _per_cell(per_row: np.ndarray, cols: int) -> float | np.ndarray:
    """A per-row limit as a pass compares it: one float when every row has the same (the usual
    block), else a (rows, cols) array. Against a (rows, 1) column numpy runs one short inner loop
    per row, twice the time of either."""
    if per_row.size and bool((per_row == per_row[0]).all()):
        return float(per_row[0])
    return np.repeat(per_row[:, None], cols, axis=1)


def _ratio_cuts(max_dev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the cuts of the deviation rule on ratio = price / centre: below the band iff
    ratio < low, above it iff ratio >= high. The rule itself is (ratio - 1.0) < -max_dev and
    (ratio - 1.0) > max_dev, the subtraction rounded; both sides are monotone in the ratio, so each
    is one exact cut (`_first_double`) and a pass compares the ratio with it: the same answers
    without the subtraction. A high cut of NaN (max_dev inf): no ratio is above."""

    def cuts(d: float) -> tuple[float, float]:
        return _first_double(lambda r: not r - 1.0 < -d, 1.0 - d), _first_double(lambda r: r - 1.0 > d, 1.0 + d)

    values, at = np.unique(max_dev, return_inverse=True)
    low_high = np.array([cuts(d) for d in values.tolist()], dtype=float).reshape(-1, 2)[at]
    return low_high[:, 0], low_high[:, 1]


def _time_cuts(now: float, max_age: float) -> tuple[float, float]:
    """The staleness and future rules as cuts on the time itself: now - received > max_age iff
    received < old, venue - now > max_age iff venue >= ahead (the subtraction rounded; see
    `_ratio_cuts`). NaN: no venue time is ahead."""
    old = _first_double(lambda r: not now - r > max_age, now - max_age)
    ahead = _first_double(lambda v: v - now > max_age, now + max_age)
    return old, ahead


def _first_double(pred: Callable[[float], bool], guess: float) -> float:
    """The first double where `pred` holds, for a pred that is False up to some double and True from
    it on; NaN if it never holds. It must answer alike at -0.0 and 0.0: the search puts one before
    the other, a float comparison with the cut does not. Searched out from `guess` in strides of
    doubles that double, then halved: a few calls when the guess is the cut's rounding, 130 at most."""
    if not pred(math.inf):
        return math.nan
    if pred(-math.inf):
        return -math.inf
    at = _order(guess if guess == guess else 0.0)
    bottom, top = _order(-math.inf), _order(math.inf)  # pred False at bottom, True at top
    step = 1
    if pred(_double(at)):
        false_at, true_at = max(at - step, bottom), at
        while pred(_double(false_at)):
            true_at, step = false_at, step * 2
            false_at = max(at - step, bottom)
    else:
        false_at, true_at = at, min(at + step, top)
        while not pred(_double(true_at)):
            false_at, step = true_at, step * 2
            true_at = min(at + step, top)
    while true_at - false_at > 1:
        mid = (false_at + true_at) // 2
        if pred(_double(mid)):
            true_at = mid
        else:
            false_at = mid
    return _double(true_at)


_SIGN = 1 << 63


def _order(x: float) -> int:
    """A double's place among the doubles, as an integer: -0.0 is -1, 0.0 is 0, larger is later."""
    (bits,) = struct.unpack("<Q", struct.pack("<d", x))
    return bits if bits < _SIGN else _SIGN - 1 - bits


def _double(order: int) -> float:
    """The double at this place (`_order`'s inverse)."""
    (x,) = struct.unpack("<d", struct.pack("<Q", order if order >= 0 else _SIGN - 1 - order))
    return float(x)


class _Work:
    """Scratch arrays of one block's pass. Only valid during a pass: nothing returned points into them
    (the daemon runs a block once per tick, on one thread)."""

    def __init__(self, shape: tuple[int, ...], gather: bool) -> None:
        def floats() -> np.ndarray:
            return np.empty(shape)

        def flags() -> np.ndarray:
            return np.empty(shape, dtype=bool)

        self.received, self.venue, self.half_width = (floats() if gather else None for _ in range(3))
        self.f, self.sorted = floats(), floats()
        self.present, self.stale, self.future, self.sane, self.insane = (flags() for _ in range(5))
        self.ok, self.hit, self.below, self.above = (flags() for _ in range(4))
        self.codes = np.empty(shape, dtype=np.int8)


@dataclass
class BlockResult:
    """Arrays of one block's pass. Row r is market block.row_market[r], tier block.row_tier[r]."""

    block: Block
    price: np.ndarray  # (rows,) NaN without quorum
    confidence: np.ndarray  # (rows,)
    accepted: np.ndarray  # (rows, cols) bool
    reason: np.ndarray  # (rows, cols) int8 exclusion code
    raw: np.ndarray  # (rows, cols) quoted price before conversion

    @property
    def quorum(self) -> np.ndarray:
        return ~np.isnan(self.price)


class Plan:
    """The config compiled for the vectorised passes; built once, reused every tick."""

    def __init__(self, settings: Settings, book: QuoteBook) -> None:
        self.settings = settings
        self.markets: list[str] = settings.market_order()
        self.index = {m: i for i, m in enumerate(self.markets)}
        self.conv_max_age_s = np.array([settings.policy_for(m).max_age_ms / 1000 for m in self.markets] + [math.inf])
        self.levels: list[list[Block]] = [
            [self._block(chunk, book) for chunk in _chunks(group, settings)] for group in settings.market_levels()
        ]

    def _block(self, group: list[str], book: QuoteBook) -> Block:
        s = self.settings
        lanes = []
        for m in group:
            pol = s.policy_for(m)
            for t, tier in enumerate(s.markets[m].tiers):
                quorum = pol.min_sources if t == 0 else min(pol.min_sources, len(tier))
                lanes.append(Lane(m, t + 1, tier, quorum, pol.method))
        return build_block(lanes, s, self.index, book)


@dataclass(frozen=True)
class Lane:
    """One row of a block: a market's tier, with the quorum and method it is aggregated by."""

    market: str
    tier: int  # 1-based
    refs: Sequence[SourceRef]
    quorum: int
    method: str


def build_block(lanes: Sequence[Lane], s: Settings, index: dict[str, int], book: QuoteBook) -> Block:
    """Compile lanes into a Block; `index` numbers the markets (each row's market and its converts).
    A ref's own `weight` (a perp's external entry) overrides its source's."""
    rows, cols = len(lanes), max(1, *(len(lane.refs) for lane in lanes))
    slot = np.full((rows, cols), book.empty_slot, dtype=np.intp)
    convert = np.full((rows, cols), -1, dtype=np.intp)
    weight = np.zeros((rows, cols))
    freeze_frac = np.full((rows, cols), np.inf)
    per_row: dict[str, list[float]] = {k: [] for k in ("age", "dev", "q", "lo", "hi", "trim", "freeze")}
    method_of: list[int] = []
    names, pairs = [], []
    for r, lane in enumerate(lanes):
        pol = s.policy_for(lane.market)
        for c, ref in enumerate(lane.refs):
            slot[r, c] = book.slot[(ref.source, ref.pair)]
            convert[r, c] = index[ref.convert] if ref.convert else -1
            weight[r, c] = getattr(ref, "weight", None) or s.sources[ref.source].weight
            freeze_frac[r, c] = s.freeze_bps(ref.source) / 1e4
        names.append(tuple(ref.source for ref in lane.refs))
        pairs.append(tuple(ref.pair for ref in lane.refs))
        for key, val in zip(
            per_row,
            (
                pol.max_age_ms / 1000,
                pol.max_deviation_bps / 1e4,
                lane.quorum,
                pol.min_price,
                pol.max_price or math.inf,
                pol.trim,
                pol.freeze_ticks,
            ),
            strict=True,
        ):
            per_row[key].append(val)
        method_of.append(METHODS.index(lane.method))
    methods = np.array(method_of)
    return Block(
        markets=tuple(dict.fromkeys(index[lane.market] for lane in lanes)),
        row_market=np.array([index[lane.market] for lane in lanes], dtype=np.intp),
        row_tier=np.array([lane.tier for lane in lanes], dtype=np.intp),
        slot=slot,
        convert=convert,
        converts=bool((convert >= 0).any()),
        bounded=any(lo > 0 for lo in per_row["lo"]) or any(hi < math.inf for hi in per_row["hi"]),
        weight=weight,
        present_cols=slot != book.empty_slot,
        max_age_s=np.array(per_row["age"]),
        max_dev=np.array(per_row["dev"]),
        quorum=np.array(per_row["q"], dtype=np.intp),
        min_price=np.array(per_row["lo"]),
        max_price=np.array(per_row["hi"]),
        trim=np.array(per_row["trim"]),
        freeze_ticks=np.array(per_row["freeze"], dtype=np.int64),
        freeze_frac=freeze_frac,
        method_rows=tuple(np.flatnonzero(methods == i) for i in range(len(METHODS))),  # type: ignore[arg-type]
        names=tuple(names),
        pairs=tuple(pairs),
    )


def run_block(
    block: Block,
    book: BookSnapshot,
    now: float | np.ndarray,
    rates: np.ndarray,
    rate_ts: np.ndarray,
    conv_max_age_s: np.ndarray,
    freeze: FreezeRule | None = None,
) -> BlockResult:
    """One vectorised pass over a block. `rates`/`rate_ts` hold each market's latest validated price
    and its validation time (NaN when none); `freeze` is the block's freeze-rule state, advanced by
    this pass (None: no freeze rule, as for a one-off pass). `now` may be a (rows, 1) column, one
    instant per row, for a block without conversion: a replay chunk stacks several ticks' rows into
    one pass (oracle.replay.chunked).

    The pass works in the block's own buffers (`_Work`, allocated at its first pass and reused every
    tick): a 10,000 x 16 pass is ~20 passes over 1.3 MB arrays, a sort and ~30 over their 160 kB
    masks, and fresh temporaries would cost as much again in allocation and page faults. Only what
    it returns is allocated."""
    w = block.work()
    raw = _gather(block, book.price, None, copy=True)  # returned: its own array, never a view of the book
    received = _gather(block, book.received_ts, w.received)
    present = np.equal(received, received, out=w.present)  # quoted at all: a receive time, not NaN
    if block.padded:
        present &= block.present_cols
    stale, future = _timing(block, received, _gather(block, book.venue_ts, w.venue), now, w)
    sane = np.greater(raw, 0.0, out=w.sane)  # finite and positive; NaN fails both
    sane &= np.less(raw, math.inf, out=w.hit)
    insane = np.logical_not(sane, out=w.insane)
    half_width = _gather(block, book.half_width, w.half_width)
    if block.converts:
        rate = _conversion_rates(block.convert, rates, rate_ts, conv_max_age_s, now)
        no_rate = np.isnan(rate)
        price = raw * rate
        own_width = half_width * rate
    else:  # x 1.0 changes no float: skip the conversion's arrays
        no_rate = None
        price = raw
        own_width = half_width
    if block.converts or block.bounded:
        out_of_bounds = (price <= block.price_floor) | (price >= block.price_ceiling)
    else:  # bounds (0, inf) on unconverted prices: only what `insane` already flags is outside
        out_of_bounds = insane
    rules = [(stale, STALE), (future, FUTURE), (insane, SANITY)]
    if freeze is not None and freeze.on:
        live = present & ~(stale | future | insane | out_of_bounds)
        if no_rate is not None:
            live &= ~no_rate
        quoted = np.where(present, raw, np.nan)
        rules.append((freeze.step(quoted, price, live), FROZEN))
    if no_rate is not None:
        rules.append((no_rate, CONVERSION))
    if out_of_bounds is not insane:
        rules.append((out_of_bounds, SANITY))
    # The first rule a quote fails is its reason: each rule marks the present quotes that no earlier
    # rule took; what no rule takes is accepted. Absent cells have no reason.
    reason = np.zeros(raw.shape, dtype=np.int8)
    ok = w.ok
    np.copyto(ok, present)
    for failed, code in rules:
        _exclude(reason, ok, np.logical_and(failed, ok, out=w.hit), code, w.codes)

    # One sort serves every step: deviation is a band around the median, so the quotes it keeps
    # are a contiguous window [lo, lo + n) of each sorted row. p/centre - 1 grows with p, so the
    # window starts after the `lo` quotes below the band and ends before those above it: counted on
    # the unsorted quotes, with no second pass over the sorted ones.
    s = _sorted_accepted(price, ok, w.sorted)
    base = block.row_base
    count = _row_counts(ok)
    centre = _window_median(s, base, 0, count)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.divide(price, centre.repeat(price.shape[1]).reshape(price.shape), out=w.f)  # see `_per_cell`
    below = np.less(ratio, block.ratio_low, out=w.below)
    below &= ok
    above = np.greater_equal(ratio, block.ratio_high, out=w.above)
    above &= ok
    _exclude(reason, ok, np.logical_or(below, above, out=w.hit), DEVIATION, w.codes)  # outliers were accepted
    lo = _row_counts(below)
    n = count - lo - _row_counts(above)

    result, conf = _aggregate(block, s, lo, n, price, ok)
    own = _own_half_width(own_width, ok, n, w)
    has_quorum = n >= block.quorum
    result[~has_quorum] = np.nan
    conf = np.where(has_quorum, np.fmax(conf, own), np.nan)
    return BlockResult(block, result, conf, ok.copy(), reason, raw)


def _timing(
    block: Block, received: np.ndarray, venue: np.ndarray, now: float | np.ndarray, w: _Work
) -> tuple[np.ndarray, np.ndarray]:
    """The stale (now - received > max_age) and future (venue - now > max_age) cells. With one `now`
    and one max_age for the block (a live tick), each is a comparison with a cut (`_time_cuts`)."""
    age = block.age_limit
    if np.ndim(now) == 0 and isinstance(age, float):
        old, ahead = _time_cuts(float(now), age)
        return np.less(received, old, out=w.stale), np.greater_equal(venue, ahead, out=w.future)
    stale = np.greater(np.subtract(now, received, out=w.f), age, out=w.stale)
    return stale, np.greater(np.subtract(venue, now, out=w.f), age, out=w.future)


def _aggregate(
    block: Block, s: np.ndarray, lo: np.ndarray, n: np.ndarray, price: np.ndarray, ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's price and spread by its method, from the sorted rows `s` and windows [lo, lo + n)."""

    def by(method: str, rows: np.ndarray | slice, ws: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if method == "weighted_median":
            return _weighted(price[rows], ok[rows], block.weight[rows])
        median, spread = _median_and_spread(ws, base, lo[rows], n[rows])
        return median if method == "median" else _trimmed_mean(ws, base, lo[rows], n[rows], block.trim[rows]), spread

    for method, idx in zip(METHODS, block.method_rows, strict=True):
        if idx.size == len(s):  # the usual case, one method for every row: no copies, no scatter
            return by(method, slice(None), s, block.row_base)
    result = np.full(len(s), np.nan)
    conf = np.full(len(s), np.nan)
    for method, idx in zip(METHODS, block.method_rows, strict=True):
        if idx.size:
            result[idx], conf[idx] = by(method, idx, s[idx], block.row_base[: idx.size])
    return result, conf


def _sorted_accepted(price: np.ndarray, ok: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each row's accepted prices in ascending order, then the others (as +inf or NaN).

    price / ok is the price itself where accepted (positive, finite, divided by 1.0) and inf or NaN
    elsewhere (x / 0.0): one pass instead of a fill and a masked copy. The rows sort as int64: the
    bits of doubles without a sign bit order as their values, +inf and then NaN last, and numpy's
    integer row sort skips the float sort's NaN handling (a third quicker). A rejected key with the
    sign bit (a negative price's -inf, or 0/0, which is -NaN on x86) would sort first: then the keys
    go by |price / ok|. No window of accepted quotes reaches the others."""
    bits = out.view(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(price, ok, out=out)
        bits.sort(axis=1)
        if (bits[:, 0] < 0).any():
            np.abs(np.divide(price, ok, out=out), out=out)
            bits.sort(axis=1)
    return out


def _gather(block: Block, values: np.ndarray, out: np.ndarray | None, copy: bool = False) -> np.ndarray:
    """The block's cells of one book array: a view when the block's slots are one run of the book
    (the book numbers its slots in config order, so a block of markets without padding often is),
    else a gather into `out` (None: a new array). `copy`: never a view."""
    start = block.run_start
    if start >= 0:
        view = values[start : start + block.slot.size].reshape(block.slot.shape)
        return view.copy() if copy else view
    return np.take(values, block.slot, out=out, mode="clip")  # clip: slots are in range, and no buffering


def _exclude(reason: np.ndarray, ok: np.ndarray, hit: np.ndarray, code: int, scratch: np.ndarray) -> None:
    """Give the accepted cells `hit` (a subset of `ok`) the reason `code`, and take them out of `ok`."""
    if hit.any():  # most rules exclude nothing on most ticks: one quick scan instead of three passes
        reason += np.multiply(hit.view(np.int8), np.int8(code), out=scratch)  # their reason was 0
        ok ^= hit


def _row_counts(mask: np.ndarray) -> np.ndarray:
    """True cells per row. numpy's row sum over a few columns is slow (~20 ns a row); with a whole
    number of 8-byte words per row, each byte 0 or 1, a row's words add bytewise without a carry
    (no byte exceeds cols / 8), and a multiply by 0x0101...01 gathers a word's 8 bytes in its top one
    (no partial sum exceeds cols <= 255): three operations on a column of words."""
    cols = mask.shape[1]
    if cols % 8 or cols > 255 or not mask.flags.c_contiguous:
        return np.count_nonzero(mask, axis=1)
    words = mask.view(np.uint64)
    total = words[:, 0] + words[:, 1] if cols > 8 else words[:, 0].copy()
    for k in range(2, cols // 8):
        total += words[:, k]
    total *= np.uint64(0x0101_0101_0101_0101)
    total >>= np.uint64(56)
    return total.view(np.int64)  # < 256: the same bits, and no uint64 + int64 -> float64 later


def _conversion_rates(
    convert: np.ndarray, rates: np.ndarray, rate_ts: np.ndarray, max_age_s: np.ndarray, now: float | np.ndarray
) -> np.ndarray:
    """Per cell: 1.0 without conversion, the convert market's mark while fresh, else NaN."""
    fresh = np.where(now - rate_ts <= max_age_s[: len(rates)], rates, np.nan)
    table = np.append(fresh, 1.0)  # index -1 (no conversion) lands on the 1.0
    return table[convert]


def _window_median(s: np.ndarray, base: np.ndarray, lo: np.ndarray | int, n: np.ndarray) -> np.ndarray:
    """Median of the sorted window s[r, lo:lo+n] of each row; NaN for an empty window."""
    a, b = _picks(s, base, lo, n, _MIDDLES)
    out = (a + b) / 2.0
    out[n == 0] = np.nan
    return out


def _median_and_spread(s: np.ndarray, base: np.ndarray, lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_window_median` and the window's spread, max(p50 - p25, p75 - p50) with equal weights, from
    one take of the four picks."""
    a, b, q25, q75 = _picks(s, base, lo, n, slice(None))
    median = (a + b) / 2.0
    median[n == 0] = np.nan
    with np.errstate(invalid="ignore"):  # an empty window reads the rejected cells' inf: inf - inf
        return median, np.fmax(a - q25, q75 - a)  # p50 is the lower middle `a` (`_pick_table`)


def _picks(s: np.ndarray, base: np.ndarray, lo: np.ndarray | int, n: np.ndarray, which: slice) -> np.ndarray:
    """(picks, rows): s[r, lo + offset] for the picks `which` (rows of `_pick_table`) of each row's
    window of n. `base`: each row's offset in s.ravel(): a flat take is several times quicker than
    s[rows, j], and picks x rows (not rows x picks) keeps every step a long inner loop."""
    # A window of n > 0 ends within the row; an empty one at lo = cols (every quote below the band)
    # would read past it: it reads the last column. So every index is in range: mode="wrap" never
    # wraps, and numpy's wrap loop is a quarter quicker than its checked default.
    at = _pick_table(s.shape[1])[which].take(n, axis=1, mode="wrap")
    at += base + np.minimum(lo, s.shape[1] - 1)
    return s.reshape(-1).take(at, mode="wrap")


_MIDDLES = slice(0, 2)  # `_pick_table`'s rows of the median's middle pair


@functools.cache
def _pick_table(cols: int) -> np.ndarray:
    """(4, cols + 1): column n holds the offsets in a window of n values of the median's middle pair
    and of the 25 % and 75 % quantiles. The 50 % quantile is the lower middle: its rank (`_rank`) is
    ceil(n / 2) - 1 = (n - 1) // 2."""
    n = np.arange(cols + 1)
    return np.vstack([np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0), _rank(np.array([[0.25], [0.75]]), n)])


def _rank(q: float | np.ndarray, n: np.ndarray) -> np.ndarray:
    """0-based inverted-CDF rank of quantile q among n equally weighted values."""
    return np.maximum(np.ceil(q * n - 1e-9).astype(np.intp) - 1, 0)


def _trimmed_mean(s: np.ndarray, base: np.ndarray, lo: np.ndarray, n: np.ndarray, trim: np.ndarray) -> np.ndarray:
    """Mean of each sorted window after cutting floor(trim x n) values from each end."""
    k = np.floor(trim * n).astype(np.intp)
    pos = np.arange(s.shape[1])[None, :]
    keep = (pos >= (lo + k)[:, None]) & (pos < (lo + n - k)[:, None])
    with np.errstate(invalid="ignore"):
        mean = row_sum(np.where(keep, s, 0.0)) / keep.sum(axis=1)
    # Rounding can put the mean of equal prices an ulp outside them: keep it within the kept values.
    last = s.shape[1] - 1
    flat = s.reshape(-1)
    lowest = flat.take(base + np.clip(lo + k, 0, last))
    highest = flat.take(base + np.clip(lo + n - k - 1, 0, last))
    return np.minimum(np.maximum(mean, lowest), highest)


def _weighted(price: np.ndarray, ok: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted median and weighted spread of the accepted prices of each row."""
    values = np.where(ok, price, np.nan)
    order = np.argsort(values, axis=1)  # rejected (NaN) last
    s = np.take_along_axis(values, order, axis=1)
    w = np.where(np.isnan(s), 0.0, np.take_along_axis(weight, order, axis=1))
    cw = np.cumsum(w, axis=1)
    total = cw[:, -1:]
    tol = 1e-12 * np.maximum(total, 1.0)
    rows = np.arange(len(s))
    last = s.shape[1] - 1

    def quantile(q: float) -> np.ndarray:
        return s[rows, np.argmax(cw >= q * total - tol, axis=1)]

    # Where the cumulative weight lands exactly on half, take the midpoint with the next value,
    # so that equal weights give the ordinary median.
    mid = np.argmax(cw >= total / 2 - tol, axis=1)
    on_half = np.abs(cw[rows, mid] - total[:, 0] / 2) <= tol[:, 0]
    nxt = s[rows, np.minimum(mid + 1, last)]
    median = np.where(on_half & ~np.isnan(nxt), (s[rows, mid] + nxt) / 2.0, s[rows, mid])
    q25, q50, q75 = quantile(0.25), quantile(0.5), quantile(0.75)
    return median, np.fmax(q50 - q25, q75 - q50)


def _own_half_width(own: np.ndarray, ok: np.ndarray, n: np.ndarray, w: _Work) -> np.ndarray:
    """Mean over accepted quotes of their own uncertainty (Pyth conf, else half the bid/ask spread)."""
    # Every accepted width 0.0 (price-only venues): so is every mean. One look at the bits: not
    # -0.0, whose sum would be -0.0, nor a NaN or negative width (not counted below, but rare).
    nonzero = np.not_equal(np.ascontiguousarray(own).view(np.int64), 0, out=w.hit)
    nonzero &= ok
    if not nonzero.any():
        return np.zeros(len(n))
    counted = np.greater_equal(own, 0.0, out=w.hit)  # NaN >= 0 is False; what is left sums without NaN
    counted &= ok
    summed = w.f
    summed.fill(0.0)
    np.copyto(summed, own, where=counted)
    return np.where(n > 0, row_sum(summed) / np.maximum(n, 1), 0.0)


def row_sum(values: np.ndarray) -> np.ndarray:
    """Each row's sum, added column by column from the left. numpy's own row reduction picks its
    order of additions by the SIMD width of the CPU (AVX-512 or AVX2), so the last bits of a sum,
    and with them a replay's outputs, would differ between two machines; one exactly rounded add
    per column gives the same bits on every CPU."""
    out = values[:, 0].copy()
    for k in range(1, values.shape[1]):
        out += values[:, k]
    return out


# --- from arrays to domain values -------------------------------------------------------------


def candidates(result: BlockResult, markets: Sequence[str], now: float) -> list[Candidate]:
    """One Candidate per market of the block, every tier's result included."""
    return tick_candidates(result, result.block, markets, [now])[0]


def tick_candidates(
    result: BlockResult, block: Block, markets: Sequence[str], nows: Sequence[float]
) -> list[list[Candidate]]:
    """Per tick, `candidates` of `block`: `result` stacks the rows of `block` for each of the ticks
    `nows` (one tick live; many in a replay chunk, oracle.replay.chunked), tick 0's rows first."""
    rows = len(block.row_market)
    # A row whose every configured source was accepted (the usual case) names them all: only the
    # other rows pick their accepted names one by one.
    every = (result.accepted.reshape(len(nows), rows, -1) == block.present_cols).all(axis=2).ravel().tolist()
    prices, confidences = result.price.tolist(), result.confidence.tolist()
    quorum = result.quorum.tolist()
    row_market, row_tier = block.row_market.tolist(), block.row_tier.tolist()
    excluded = _excluded_by_row(result, block)
    out = []
    for t, now in enumerate(nows):
        tiers: dict[int, list[TierResult]] = {}
        out_of: dict[int, list[Excluded]] = {}
        for i, (m, tier, names) in enumerate(zip(row_market, row_tier, block.names, strict=True)):
            r = t * rows + i
            sources = names if every[r] else accepted_names(names, result.accepted[r])
            tiers.setdefault(m, []).append(TierResult(tier, prices[r], confidences[r], sources, quorum[r]))
            if r in excluded:
                out_of.setdefault(m, []).extend(excluded[r])
        out.append([Candidate(markets[m], now, tuple(tiers[m]), tuple(out_of.get(m, ()))) for m in block.markets])
    return out


def accepted_names(names: tuple[str, ...], accepted: np.ndarray) -> tuple[str, ...]:
    """The names of a lane's sources whose quotes `accepted` (its row of BlockResult.accepted) took."""
    return tuple(name for name, a in zip(names, accepted.tolist(), strict=False) if a)


def _excluded_by_row(result: BlockResult, block: Block) -> dict[int, list[Excluded]]:
    """The excluded quotes of each row of `result` with any, in column order."""
    if not result.reason.any():
        return {}
    rows = len(block.row_market)
    r, c = np.nonzero(result.reason)
    codes, raws = result.reason[r, c].tolist(), result.raw[r, c].tolist()
    out: dict[int, list[Excluded]] = {}
    for row, col, code, raw in zip(r.tolist(), c.tolist(), codes, raws, strict=True):
        i = row % rows
        out.setdefault(row, []).append(Excluded(block.names[i][col], block.pairs[i][col], REASONS[code - 1], raw))
    return out


def candidate(result: BlockResult, market: str, rows: Sequence[int], now: float) -> Candidate:
    """The Candidate of one market of the block, from its `rows` (its tiers' lanes, in order): what
    `candidates` gives that market, for the few markets the validation stage looks at one by one."""
    block = result.block
    tiers = []
    excluded = []
    for r in rows:
        names = block.names[r]
        sources = accepted_names(names, result.accepted[r])
        price = float(result.price[r])
        tiers.append(TierResult(int(block.row_tier[r]), price, float(result.confidence[r]), sources, price == price))
        for c in np.flatnonzero(result.reason[r]).tolist():
            code = int(result.reason[r, c])
            excluded.append(Excluded(names[c], block.pairs[r][c], REASONS[code - 1], float(result.raw[r, c])))
    return Candidate(market, now, tuple(tiers), tuple(excluded))


def _cells(block: Block, markets: list[str]) -> list[tuple[tuple[str, int, str, str], int, int]]:
    """Each configured cell of a block as ((market, tier, source, pair), row, column)."""
    out = []
    for r, (m, tier) in enumerate(zip(block.row_market.tolist(), block.row_tier.tolist(), strict=True)):
        for c, (source, pair) in enumerate(zip(block.names[r], block.pairs[r], strict=False)):
            if block.present_cols[r, c]:
                out.append(((markets[m], tier, source, pair), r, c))
    return out


class Aggregator:
    """Runs every level of a Plan in order. Between levels, `validate` turns the level's candidates
    into marks (the dispute stage in the daemon), whose prices then convert the next level's quotes."""

    def __init__(self, settings: Settings, book: QuoteBook) -> None:
        self.plan = Plan(settings, book)
        self.rates = np.full(len(self.plan.markets), np.nan)
        self.rate_ts = np.full(len(self.plan.markets), np.nan)
        # The freeze rule's memory, one state per block of the plan (oracle.freeze).
        self.freeze = [[FreezeState.start(b.freeze_ticks, b.freeze_frac) for b in level] for level in self.plan.levels]

    def carry(self, old: Aggregator) -> None:
        """Take over `old`'s memory (a config reload compiles a new plan): the freeze rule's state of
        every cell that both plans have, the same market, tier, source and pair, and each kept
        market's last rate. A cell new to the plan starts as at start."""
        cells: dict[tuple[str, int, str, str], tuple[FreezeState, int, int]] = {}
        for level, states in zip(old.plan.levels, old.freeze, strict=True):
            for block, state in zip(level, states, strict=True):
                for key, r, c in _cells(block, old.plan.markets):
                    cells[key] = (state, r, c)
        for level, states in zip(self.plan.levels, self.freeze, strict=True):
            for block, state in zip(level, states, strict=True):
                for key, r, c in _cells(block, self.plan.markets):
                    found = cells.get(key)
                    if found is not None:
                        was, i, j = found
                        state.last[r, c], state.ref[r, c], state.over[r, c] = (
                            was.last[i, j],
                            was.ref[i, j],
                            was.over[i, j],
                        )
        for market, k in self.plan.index.items():
            was_at = old.plan.index.get(market)
            if was_at is not None:
                self.rates[k], self.rate_ts[k] = old.rates[was_at], old.rate_ts[was_at]

    def run(
        self,
        book: BookSnapshot,
        now: float,
        validate: Callable[[list[Candidate]], Sequence[Mark]],
        done: Sequence[list[Candidate]] = (),
    ) -> list[Mark]:
        """Every level's candidates through `validate`, which returns their marks. `done`: the
        candidates of the first len(done) levels, aggregated already (see `run_levels`)."""
        marks: list[Mark] = []
        plan = self.plan

        def level(
            results: list[BlockResult], ready: list[Candidate] | None
        ) -> tuple[list[int], list[float], list[float]]:
            cands = ready if ready is not None else [c for r in results for c in candidates(r, plan.markets, now)]
            level_marks = validate(cands)
            marks.extend(level_marks)
            return (
                [plan.index[mk.market] for mk in level_marks],
                [mk.price for mk in level_marks],
                [mk.ts for mk in level_marks],
            )

        self.run_levels(book, now, level)
        return marks

    def run_levels(
        self, book: BookSnapshot, now: float, validate: LevelValidator, done: Sequence[list[Candidate]] = ()
    ) -> None:
        """Run every level's blocks, then `validate(results, None)` the level's results: it returns
        the markets it marked (plan indices) with their validated price and time, the rates of the
        next levels. `done`: the candidates of the first len(done) levels, aggregated already (a
        replay chunk runs level 0 for many ticks in one pass, oracle.replay.chunked): those levels'
        blocks and freeze states are not run again, `validate([], candidates)` takes them."""
        plan = self.plan
        for i, (level, states) in enumerate(zip(plan.levels, self.freeze, strict=True)):
            if i < len(done):
                at, price, ts = validate([], done[i])
            else:
                results = [
                    run_block(block, book, now, self.rates, self.rate_ts, plan.conv_max_age_s, state)
                    for block, state in zip(level, states, strict=True)
                ]
                at, price, ts = validate(results, None)
            self.rates[at], self.rate_ts[at] = price, ts


# (a level's block results, or its candidates if aggregated already) -> (plan indices of the markets
# marked, their prices, their times).
LevelValidator = Callable[[list[BlockResult], list[Candidate] | None], tuple[Sequence[int] | np.ndarray, Any, Any]]
