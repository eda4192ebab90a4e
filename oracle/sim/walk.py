"""The simulated market's price model: pure numpy, seeded, vectorised.

A market's true price is a driftless geometric random walk (volatility annualised, as traders quote
it). A venue observes it as `true × (1 + bias + noise)`: a constant per-venue bias (venues really do
sit a few bps apart) plus independent noise per quote, and delivers it after a positive latency.

Randomness comes from `rng_for(seed, *names)`, keyed by name rather than by call order, so adding a
market or a venue never changes the numbers drawn for the others.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

SECONDS_PER_YEAR = 365.0 * 24 * 3600
BPS = 1e-4


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator determined by the seed and the names (crc32: stable across runs, unlike hash())."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def sigma(vol: float, dt: float) -> float:
    """The log-return standard deviation over `dt` seconds for an annualised volatility."""
    return vol * float(np.sqrt(dt / SECONDS_PER_YEAR))


def log_steps(rng: np.random.Generator, vol: float, dts: np.ndarray) -> np.ndarray:
    """Log-returns over each interval of `dts` seconds; the -σ²/2 term keeps the mean price flat."""
    s = vol * np.sqrt(np.asarray(dts, dtype=float) / SECONDS_PER_YEAR)
    return s * rng.standard_normal(s.shape) - 0.5 * s * s


def gbm_path(start: float, vol: float, n: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """`n` prices `dt` seconds apart, the first one being `start`."""
    steps = log_steps(rng, vol, np.full(max(n - 1, 0), dt))
    levels = np.concatenate(([0.0], np.cumsum(steps))).tolist()
    # math.exp, not np.exp: numpy's vectorised exp gives other last bits on an AVX-512 CPU, and a
    # scenario's ticks (so its golden outputs) must be the same on every machine.
    return start * np.fromiter(map(math.exp, levels), dtype=float, count=len(levels))


def observe(true: np.ndarray, bias_bps: float, noise_bps: float, rng: np.random.Generator) -> np.ndarray:
    """What a venue quotes for each true price: its constant bias plus fresh noise per quote."""
    noise = noise_bps * BPS * rng.standard_normal(np.shape(true))
    return np.asarray(true) * (1.0 + bias_bps * BPS + noise)


def book(mid: np.ndarray, spread_bps: float) -> tuple[np.ndarray, np.ndarray]:
    """Best bid and ask placed symmetrically around the mid."""
    half = 0.5 * spread_bps * BPS * np.asarray(mid)
    return mid - half, mid + half


def latencies(n: int, mean_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Delivery delays in seconds: gamma-distributed, so always positive with a realistic right tail."""
    if mean_ms <= 0:
        return np.zeros(n)
    shape = 4.0
    return rng.gamma(shape, mean_ms / 1000.0 / shape, n)
