"""Replay throughput as a user sees it: `markd replay` and `markd sweep` timed end to end as subprocesses.

Setup (not timed): `markd synth` writes one day of 1-second ticks from 6 venues for BTC-USD
(6 x 86,400 = 518,400 rows) to a ticks file; a scenario beside it spikes one venue +30 % for an hour.
Timed, each as a subprocess from start to exit:
- `markd replay SCENARIO --out DIR --no-html`: reading the file, both runs (reference and attacked),
  report.json, marks.csv and disputes.csv;
- `markd sweep SCENARIO --set ... --out DIR --no-html` of 8 combinations (2 x 2 x 2), `--jobs` default.

Prints one JSON line: {"rows", "replay_s", "rows_per_s", "sweep_combinations", "sweep_s", "load_avg"}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENUES = ["coinbase", "kraken", "bitstamp", "okx", "bybit", "binance"]
MARKD = [sys.executable, "-m", "oracle"]
SWEEP = [
    "--set",
    "policy.max_deviation_bps=50,150",
    "--set",
    "policy.min_sources=2,3",
    "--set",
    "policy.max_jump_bps=300,1000",
]

CONFIG = (
    "[service]\ntick_ms = 1000\n\n"
    + "".join(f'[sources.{v}]\nkind = "{v}"\n' for v in VENUES)
    + (
        "\n[markets.BTC-USD]\nsources = ["
        + ", ".join(f'{{ source = "{v}", pair = "BTC-USD" }}' for v in VENUES)
        + "]\n"
    )
)
SCENARIO = """ticks = "day.csv"
config = "day.markd.toml"

[[attack]]
kind = "spike"
sources = ["okx"]
pair = "BTC-USD"
start_s = {hour}
duration_s = {hour}
magnitude = 0.3
"""


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=86_400, help="simulated duration (default one day)")
    p.add_argument("--no-sweep", action="store_true", help="time the replay only")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ticks = folder / "day.csv"
        synth = ["synth", "--out", str(ticks), "--markets", "BTC-USD=30000", "--sources", ",".join(VENUES)]
        subprocess.run([*MARKD, *synth, "--seconds", str(args.seconds), "--seed", "1"], check=True)
        rows = sum(1 for _ in ticks.open()) - 1
        (folder / "day.markd.toml").write_text(CONFIG)
        scenario = folder / "day.toml"
        scenario.write_text(SCENARIO.format(hour=args.seconds // 24))  # an hour of a day
        replay_s = timed([*MARKD, "replay", str(scenario), "--out", str(folder / "replay"), "--no-html"])
        figures: dict[str, object] = {"rows": rows, "replay_s": round(replay_s, 2)}
        figures["rows_per_s"] = round(rows / replay_s)
        if not args.no_sweep:
            sweep_s = timed([*MARKD, "sweep", str(scenario), *SWEEP, "--out", str(folder / "sweep"), "--no-html"])
            figures |= {"sweep_combinations": 8, "sweep_s": round(sweep_s, 2)}
        figures["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
