"""The freeze rule: a source stuck at a price while its market moves, told apart from a quiet one.

Venus / LUNA (May 2022): a Chainlink feed clamped at its floor while the venues fell 90 %. But a
healthy Chainlink aggregator also sits still, for minutes, whenever the market moves less than its
deviation threshold (0.5 % on most feeds), while every exchange and Pyth move a few bps per second.
"Unchanged while a peer moved" cannot tell the two apart; the size of the move can:

    a cell (one source in one (market, tier) row) is frozen when its quoted price has not changed
    for `freeze_ticks` consecutive ticks during which the median of its row's *other* live quotes
    stood more than the source's `freeze_bps` away from where that median was when the source's
    price last changed. It thaws when its price changes or the peers come back within `freeze_bps`.

A Chainlink feed writes a new round once the market is 0.5 % from its last answer, so with
`freeze_bps` above that (100 by default for `chainlink` sources) a healthy one is never frozen, and
a floored one is caught once the market has left it 1 % behind. `freeze_ticks` is the grace for a
round in flight (and the contract's key: 0 turns the rule off for the market).

The venue's own timestamp is deliberately not taken as a sign of life: a feed clamped at its floor
keeps writing rounds with a fresh `updatedAt` (and a venue's stuck ticker keeps its server time).
A dead feed is caught by its age instead (`stale`, and the Chainlink adapter's `heartbeat_s`).

The peers' median is of the converted prices of the row's live quotes (not stale, future or insane,
with a fresh conversion rate), leaving the cell itself out: in a two-source fallback tier a stuck
source's peer is the other source alone. A source alone in its row has no peers and is never frozen.
Pure numpy, one pass per block and tick; the state is a few (rows x cols) arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

NEVER = np.iinfo(np.int64).max


@dataclass
class FreezeState:
    """What the rule remembers per cell between ticks, with the block's thresholds."""

    need: np.ndarray  # (rows, 1) ticks beyond the threshold before a cell is frozen; NEVER = off
    frac: np.ndarray  # (rows, cols) each cell's freeze_bps / 1e4
    last: np.ndarray  # (rows, cols) the quoted price at its last change; NaN while absent
    ref: np.ndarray  # the peers' median when it last changed; NaN: it had no peers then
    over: np.ndarray  # int: consecutive unchanged ticks with the peers beyond freeze_bps of ref
    on: bool  # False when every row has freeze_ticks = 0 (a block of pegs): the pass skips the rule
    moved: np.ndarray  # bool: last tick's verdict that the peers stood beyond freeze_bps of ref
    inputs: bytes = b""  # last tick's (quoted, price, live), to skip recomputing what cannot change

    @classmethod
    def start(cls, freeze_ticks: np.ndarray, freeze_frac: np.ndarray) -> FreezeState:
        """`freeze_ticks`: (rows,), 0 = off for that row; `freeze_frac`: (rows, cols) bps / 1e4."""
        ticks = np.asarray(freeze_ticks, dtype=np.int64)[:, None]
        shape = np.shape(freeze_frac)
        return cls(
            np.where(ticks > 0, ticks, NEVER),
            np.asarray(freeze_frac, dtype=float),
            np.full(shape, np.nan),
            np.full(shape, np.nan),
            np.zeros(shape, dtype=np.int64),
            bool((ticks > 0).any()),
            np.zeros(shape, dtype=bool),
        )

    def step(self, quoted: np.ndarray, price: np.ndarray, live: np.ndarray) -> np.ndarray:
        return freeze_step(self, quoted, price, live)


class FreezeRule(Protocol):
    """What `run_block` asks of the rule: is it on, and one step over the block's cells."""

    @property
    def on(self) -> bool: ...

    def step(self, quoted: np.ndarray, price: np.ndarray, live: np.ndarray) -> np.ndarray: ...


def peer_median(values: np.ndarray) -> np.ndarray:
    """Per cell, the median of the other non-NaN cells of its row; NaN without any other.

    One sort per row. Leaving out one of the n sorted values s, the m = n - 1 peers' middle pair sits
    at ja = (m - 1) // 2 and jb = m // 2 of the peers, that is at s[ja] or s[ja + 1] and s[jb] or
    s[jb + 1] depending on whether the left-out value ranks at or below ja, between, or above jb;
    comparing values instead of ranks picks the same numbers, ties included (equal values are
    interchangeable).
    """
    s = np.sort(values, axis=1)  # NaN sorts last
    absent = np.isnan(values)
    m = values.shape[1] - 1 - absent.sum(axis=1, keepdims=True)  # peers of a present cell
    ja = np.maximum((m - 1) >> 1, 0)
    jb = np.maximum(m >> 1, 0)
    idx = np.minimum(np.hstack((ja, ja + 1, jb, jb + 1)), values.shape[1] - 1)
    g = s[np.arange(len(s))[:, None], idx]
    sa, sa1, sb, sb1 = g[:, 0:1], g[:, 1:2], g[:, 2:3], g[:, 3:4]
    out = np.where(values <= sa, sa1 + sb1, np.where(values <= sb, sa + sb1, sa + sb)) * 0.5
    out[absent | (m < 1)] = np.nan
    return out


def freeze_step(state: FreezeState, quoted: np.ndarray, price: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Advance the state by one tick; the cells frozen now.

    `quoted`: each cell's price as the source quoted it (NaN: absent), the value that must move;
    `price`: the same converted to the market's currency; `live`: the cells that count as peers.
    """
    inputs = quoted.tobytes() + price.tobytes() + live.tobytes()
    if inputs == state.inputs:
        # Nothing quoted, converted or aged since the last tick (most ticks of a replay, whose
        # quotes come a second apart): the peers, the references and the verdicts are as they were.
        state.over = np.where(state.moved, state.over + 1, 0)
        return state.over >= state.need
    state.inputs = inputs
    peers = peer_median(np.where(live, price, np.nan))
    changed = quoted != state.last  # also True for an absent cell (NaN) and on a first quote
    state.last = np.where(changed, quoted, state.last)
    # Rebase at a change, and when its peers appear (they were missing at its last change).
    state.ref = np.where(changed | np.isnan(state.ref), peers, state.ref)
    state.moved = ~changed & (np.abs(peers - state.ref) > state.frac * state.ref)  # False at a NaN
    state.over = np.where(state.moved, state.over + 1, 0)
    return state.over >= state.need


def freeze_steps(state: FreezeState, quoted: np.ndarray, price: np.ndarray, live: np.ndarray) -> np.ndarray:
    """`freeze_step` for T ticks at once: inputs and the result are (T, rows, cols), tick by tick;
    the state ends as after T calls of `freeze_step` (a replay chunk, oracle.replay.chunked).

    The peers' medians are stateless, one call for the T ticks; the recurrences become scans along
    time. `last` always equals the quoted price in value (NaN aside), so a cell changed at t exactly
    when its quote differs from the one at t - 1. Its `ref` is the peers' median at the first tick
    with peers on or after its latest change (or, without a change in the chunk, the carried `ref`,
    or from tick 0 when that is NaN); `over` counts the ticks since the latest tick it did not move.
    """
    n, rows, cols = quoted.shape
    peers = peer_median(np.where(live, price, np.nan).reshape(n * rows, cols)).reshape(n, rows, cols)
    before = np.concatenate((state.last[None], quoted[:-1]))
    changed = quoted != before
    t = np.arange(n)[:, None, None]
    # Latest change at or before each tick; -1 if none in the chunk (then the carried ref holds,
    # unless it is NaN: then every tick re-takes its peers, as from a change at tick 0).
    change_at = np.maximum.accumulate(np.where(changed, t, -1), axis=0)
    carried = (change_at < 0) & ~np.isnan(state.ref)[None]
    since = np.maximum(change_at, 0)
    # First tick at or after each tick whose peers exist (n: none).
    has_peers = ~np.isnan(peers)
    next_peers = np.flip(np.minimum.accumulate(np.flip(np.where(has_peers, t, n), axis=0), axis=0), axis=0)
    taken_at = np.minimum(t, np.take_along_axis(next_peers, since, axis=0))
    ref = np.where(carried, state.ref[None], np.take_along_axis(peers, taken_at, axis=0))
    moved = ~changed & (np.abs(peers - ref) > state.frac[None] * ref)
    still_at = np.maximum.accumulate(np.where(moved, -1, t), axis=0)  # latest tick it did not move
    over = np.where(still_at < 0, state.over[None] + t + 1, t - still_at)
    last_change = change_at[-1]
    state.last = np.where(
        last_change >= 0, np.take_along_axis(quoted, np.maximum(last_change, 0)[None], axis=0)[0], state.last
    )
    state.ref, state.moved, state.over = ref[-1], moved[-1], over[-1]
    state.inputs = quoted[-1].tobytes() + price[-1].tobytes() + live[-1].tobytes()
    return over >= state.need[None]


@dataclass
class FreezeChunk:
    """A block's rule over `ticks` ticks stacked as one matrix (rows of tick 0, then of tick 1...):
    what `run_block` runs on a replay chunk (oracle.replay.chunked)."""

    state: FreezeState
    ticks: int

    @property
    def on(self) -> bool:
        return self.state.on

    def step(self, quoted: np.ndarray, price: np.ndarray, live: np.ndarray) -> np.ndarray:
        shape = (self.ticks, -1, quoted.shape[1])
        frozen = freeze_steps(self.state, quoted.reshape(shape), price.reshape(shape), live.reshape(shape))
        return frozen.reshape(quoted.shape)
