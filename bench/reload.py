"""Benchmark a config reload's swap: what Service._apply does between two ticks (the loop is held
meanwhile), at N markets x S sources, one market added and one removed.

    python bench/reload.py [--markets 1000] [--sources 8] [--repeat 5]

Times, in CPU time (best of `repeat`; the machine is shared): validating the file (parse_settings of
the whole config, as a reload reads it), the new QuoteBook with the old one's quotes carried, the
dispute stage reconfigured, and the new pipeline built and given the old one's memory. Only the last
three hold the event loop; the validation runs before them but on the loop too. Prints one final
JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle.metrics import Metrics
from oracle.models import Quote
from oracle.pipeline import Pipeline
from oracle.quotebook import QuoteBook
from oracle.settings import parse_settings
from oracle.validation.stage import DisputeStage


def raw_config(markets: list[str], sources: int) -> dict[str, Any]:
    names = [f"s{i}" for i in range(sources)]
    return {
        "policy": {"min_sources": 3, "freeze_ticks": 20},
        "sources": {n: {"kind": "coinbase"} for n in names},
        "markets": {m: {"sources": [{"source": n, "pair": m} for n in names]} for m in markets},
    }


def best_ms(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    markets = [f"M{i}-USD" for i in range(args.markets)]
    old_raw = raw_config(markets, args.sources)
    new_raw = raw_config([*markets[1:], "NEW-USD"], args.sources)
    old = parse_settings(old_raw)
    book = QuoteBook.for_settings(old)
    for m in markets:
        for i in range(args.sources):
            book.update(Quote(f"s{i}", m, 100.0 + i * 0.01, 1_700_000_000.0))
    stage = DisputeStage(old)
    pipeline = Pipeline(old, book, Metrics(), stage)
    pipeline.tick(1_700_000_000.0)
    new = parse_settings(new_raw)

    def swap() -> None:
        fresh = QuoteBook.for_settings(new)
        fresh.carry(book)
        stage.reconfigure(new)  # after the first run: nothing left to remove, the loop over kept markets remains
        Pipeline(new, fresh, Metrics(), stage).carry(pipeline)

    validate_ms = best_ms(lambda: parse_settings(new_raw), args.repeat)
    swap_ms = best_ms(swap, args.repeat)
    print(
        f"{args.markets} markets x {args.sources} sources: validate {validate_ms:.1f} ms, swap {swap_ms:.1f} ms (CPU)"
    )
    print(
        json.dumps(
            {
                "markets": args.markets,
                "sources": args.sources,
                "validate_ms": round(validate_ms, 1),
                "swap_ms": round(swap_ms, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
