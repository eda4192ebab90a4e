"""Benchmark the aggregation core: 10,000 markets x 16 sources, vectorised vs per-market Python.

Realistic input: each market's sources quote around a common price with ~5 bps of cross-venue noise;
10 % of quotes are stale and 2 % are outliers (x0.5 .. x2). Both implementations apply the same rules
(staleness, sanity, deviation from the median, quorum, median) and must agree on every market.

    python bench/aggregate.py [--markets 10000] [--sources 16] [--repeat 20]

Both are timed in CPU time (best of `repeat`): the machine is shared, and wall time would measure the
neighbours. Prints one final JSON line: {"markets", "sources", "core_ms", "naive_ms", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle.aggregate import Plan, run_block
from oracle.models import Quote
from oracle.quotebook import QuoteBook
from oracle.settings import parse_settings

NOW = 1_700_000_000.0
MAX_AGE_S = 5.0
MAX_DEV = 0.015  # 150 bps
MIN_SOURCES = 3


def build(markets: int, sources: int, seed: int) -> tuple[QuoteBook, Plan, list[list[tuple[float, float]]]]:
    names = [f"s{i}" for i in range(sources)]
    raw = {
        "policy": {
            "max_age_ms": int(MAX_AGE_S * 1000),
            "max_deviation_bps": MAX_DEV * 1e4,
            "min_sources": MIN_SOURCES,
        },
        "sources": {n: {"kind": "http_json", "base_url": "http://127.0.0.1/prices"} for n in names},  # never fetched
        "markets": {
            f"M{i}-USD": {"sources": [{"source": n, "pair": f"M{i}-USD", "path": "p"} for n in names]}
            for i in range(markets)
        },
    }
    settings = parse_settings(raw)
    book = QuoteBook.for_settings(settings)
    rng = np.random.default_rng(seed)
    centre = np.exp(rng.uniform(np.log(0.01), np.log(100_000), markets))
    price = centre[:, None] * (1 + rng.normal(0, 5e-4, (markets, sources)))
    outlier = rng.random((markets, sources)) < 0.02
    price[outlier] *= rng.choice([0.5, 0.8, 1.25, 2.0], outlier.sum())
    age = rng.uniform(0, 2.0, (markets, sources))
    stale = rng.random((markets, sources)) < 0.10
    age[stale] = rng.uniform(MAX_AGE_S + 0.1, 60, stale.sum())
    naive_input: list[list[tuple[float, float]]] = []
    for m in range(markets):
        row = []
        for s in range(sources):
            p, ts = float(price[m, s]), NOW - float(age[m, s])
            book.update(Quote(names[s], f"M{m}-USD", p, ts))
            row.append((p, ts))
        naive_input.append(row)
    return book, Plan(settings, book), naive_input


def naive(rows: list[list[tuple[float, float]]]) -> list[tuple[float, float, list[tuple[int, str]]]]:
    """The same rules written the obvious way, one market at a time with statistics.median: every
    exclusion with its reason, the median, and the nearest-rank spread as the confidence."""
    out = []
    for row in rows:
        excluded: list[tuple[int, str]] = []
        fresh: list[float] = []
        for i, (p, ts) in enumerate(row):
            if NOW - ts > MAX_AGE_S:
                excluded.append((i, "stale"))
            elif not (math.isfinite(p) and p > 0):
                excluded.append((i, "sanity"))
            else:
                fresh.append(p)
        if not fresh:
            out.append((math.nan, math.nan, excluded))
            continue
        mid = statistics.median(fresh)
        kept = sorted(p for p in fresh if abs(p / mid - 1) <= MAX_DEV)
        excluded += [(i, "deviation") for i, (p, _) in enumerate(row) if p in fresh and abs(p / mid - 1) > MAX_DEV]
        if len(kept) < MIN_SOURCES:
            out.append((math.nan, math.nan, excluded))
            continue
        q25, q50, q75 = (kept[max(math.ceil(q * len(kept) - 1e-9) - 1, 0)] for q in (0.25, 0.5, 0.75))
        out.append((statistics.median(kept), max(q50 - q25, q75 - q50), excluded))
    return out


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()  # CPU time: the machine is shared, wall time measures the neighbours
        fn()
        times.append(time.process_time() - t0)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=10_000)
    ap.add_argument("--sources", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    book, plan, rows = build(args.markets, args.sources, args.seed)
    snap = book.snapshot()
    rates = np.full(len(plan.markets), np.nan)

    blocks = plan.levels[0]

    def core() -> np.ndarray:
        book.snapshot(snap)
        results = [run_block(b, snap, NOW, rates, rates, plan.conv_max_age_s) for b in blocks]
        return np.concatenate([r.price for r in results])

    fast = core()
    slow = naive(rows)
    order = np.array([plan.index[f"M{i}-USD"] for i in range(args.markets)])
    if not np.allclose(fast[order], [p for p, _, _ in slow], equal_nan=True, rtol=1e-12):
        raise SystemExit("vectorised and naive prices differ")
    conf = np.concatenate(
        [r.confidence for r in (run_block(b, snap, NOW, rates, rates, plan.conv_max_age_s) for b in blocks)]
    )
    if not np.allclose(conf[order], [c for _, c, _ in slow], equal_nan=True, rtol=1e-9):
        raise SystemExit("vectorised and naive confidences differ")
    core_ms = best_ms(core, args.repeat)
    naive_ms = best_ms(lambda: naive(rows), max(3, args.repeat // 5))
    print(f"quorum: {np.isfinite(fast).mean():.1%} of markets; results agree", file=sys.stderr)
    print(
        json.dumps(
            {
                "markets": args.markets,
                "sources": args.sources,
                "core_ms": round(core_ms, 3),
                "naive_ms": round(naive_ms, 2),
                "ratio": round(naive_ms / core_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
