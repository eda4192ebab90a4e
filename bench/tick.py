"""CPU of one `Pipeline.tick` in-process: 1,000 markets x 8 sources, every price moving 1 bps a tick.

    .venv/bin/python bench/tick.py [--markets 1000] [--sources 8] [--ticks 100] [--case quiet|absent|stale]
                                   [--profile]

The daemon's `markd_tick_cpu_seconds` (bench/latency.py's `tick_cpu_ms_p50`) without the daemon: the
same config as bench/latency.py, quotes written straight into the QuoteBook (one frame per source and
tick), then `--ticks` ticks timed with `time.thread_time()`. Cases: `quiet` every source quotes every
tick (the bench's load); `absent` the last source never quotes; `stale` it stops after the first tick,
so every market has a stale exclusion. `--profile` prints a cProfile of the timed ticks.
Prints a final JSON line: {"tick_cpu_ms_p50", "tick_cpu_ms_min", ...}.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle.metrics import Metrics
from oracle.pipeline import Pipeline
from oracle.quotebook import QuoteBook
from oracle.settings import parse_settings
from oracle.validation.stage import DisputeStage

T0 = 1_700_000_000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--case", choices=("quiet", "absent", "stale"), default="quiet")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    markets = [f"M{i:04d}-USD" for i in range(args.markets)]
    sources = [f"s{i}" for i in range(args.sources)]
    settings = parse_settings(
        {
            "policy": {"min_sources": 3, "max_age_ms": 2000, "max_deviation_bps": 150},
            "sources": {s: {"kind": "http_json", "base_url": f"http://bench/{s}"} for s in sources},
            "markets": {m: {"sources": [{"source": s, "pair": m, "path": m} for s in sources]} for m in markets},
        }
    )
    book = QuoteBook.for_settings(settings)
    pipeline = Pipeline(settings, book, Metrics(), DisputeStage(settings))
    rng = np.random.default_rng(1)
    base = 10.0 + rng.random(len(markets)) * 1000.0
    none = np.full(len(markets), np.nan)
    pairs = tuple(markets)

    def feed(k: int, now: float) -> None:
        quoting = sources if args.case == "quiet" or (args.case == "stale" and k == 0) else sources[:-1]
        for s in quoting:
            price = base * (1.0 + 1e-4 * rng.standard_normal(len(markets)))
            book.write_frame(s, pairs, now, price, none, none, none, none, none)

    warm = 30
    times = []
    profile = cProfile.Profile()
    for k in range(warm + args.ticks):
        now = T0 + 0.1 * k
        feed(k, now)
        started = time.thread_time()
        if args.profile and k >= warm:
            profile.enable()
        pipeline.tick(now)
        if args.profile and k >= warm:
            profile.disable()
        if k >= warm:
            times.append(time.thread_time() - started)
    if args.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    out = {
        "tick_cpu_ms_p50": round(float(np.median(times)) * 1000, 2),
        "tick_cpu_ms_min": round(min(times) * 1000, 2),
        "case": args.case,
        "markets": args.markets,
        "sources": args.sources,
        "ticks": args.ticks,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
