"""Replay throughput: one day of 1-second ticks from 6 venues for one market, end to end.

Setup (not timed): oracle.sim.synth writes the day (6 venues x 86,400 s = 518,400 rows) to a ticks
file with one attack (a venue spiked for an hour) in a scenario beside it.
Timed: the attacked run's end-to-end replay of that file, as `markd replay` does it for that run:
read and parse the ticks file, apply the attack, drive the daemon's Pipeline (QuoteBook, Aggregator,
DisputeStage) over every tick of the day on virtual time into the MemorySink, and write marks.csv
and disputes.csv. Not timed: the reference run, report.json and report.html.

Prints one JSON line: {"rows", "seconds", "rows_per_s", "ticks", "tick_ms"}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from oracle.replay.attacks import Attack, apply_attacks
from oracle.replay.report import write_disputes_csv, write_marks_csv
from oracle.replay.run import replay
from oracle.settings import Settings
from oracle.sim.synth import synth_ticks
from oracle.ticks import read_ticks

VENUES = ["coinbase", "kraken", "bitstamp", "okx", "bybit", "binance"]


def settings(tick_ms: int) -> Settings:
    return Settings.model_validate(
        {
            "service": {"tick_ms": tick_ms},
            "sources": {v: {"kind": v} for v in VENUES},
            "markets": {"BTC-USD": {"sources": [{"source": v, "pair": "BTC-USD"} for v in VENUES]}},
        }
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=86_400.0)
    p.add_argument("--tick-ms", type=int, default=1000)
    args = p.parse_args()
    cfg = settings(args.tick_ms)
    attack = Attack(kind="spike", sources=["okx"], pair="BTC-USD", start_s=3600, duration_s=3600, magnitude=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.csv"
        rows = synth_ticks(path, {"BTC-USD": 30_000.0}, VENUES, args.seconds, 1.0, seed=1)
        out = Path(tmp) / "out"
        out.mkdir()
        started = time.perf_counter()
        ticks = apply_attacks(read_ticks(path), [attack])
        run = replay(cfg, ticks)
        write_marks_csv(out / "marks.csv", run)
        write_disputes_csv(out / "disputes.csv", run)
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": round(seconds, 3),
                "rows_per_s": round(rows / seconds),
                "ticks": len(run.grid),
                "tick_ms": args.tick_ms,
            }
        )
    )


if __name__ == "__main__":
    main()
