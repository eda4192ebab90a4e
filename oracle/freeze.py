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
