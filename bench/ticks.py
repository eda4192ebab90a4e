"""Reading a ticks file, as `markd replay` does before its runs: the columnar reader against the old one.

    .venv/bin/python bench/ticks.py [--seconds 86400] [--rounds 3]

Setup (not timed): `markd synth` writes one day of 1-second ticks from 6 venues for BTC-USD (6 x
86,400 = 518,400 rows, bench/replay.py's day) as .csv, .csv.gz and, with pyarrow, .parquet. Timed,
best of `rounds` wall-clock seconds (the machine is shared), each to a sorted `Ticks`:
- `read_ticks` on each file: pandas' C parser for CSV, pyarrow for Parquet (what replay runs);
- `TickStream` on each file, its pieces of 2**20 rows read and dropped (a streaming replay's reads:
  no sort, and never the whole file in memory);
- `_read_rows`, the line-by-line csv-module reader that was the only one before (now the fallback
  that names a bad row's line), on .csv and .csv.gz;
- for the choice of reader, the parse alone (no keys, no sort) by pandas and by pyarrow.csv.
Prints a final JSON line: {"rows", "csv_s", "csv_gz_s", "parquet_s", "stream_csv_s", "lines_csv_s", ...}.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle import ticks as ticks_module
from oracle.ticks import NUMBERS, TickStream, read_ticks, write_ticks

VENUES = "coinbase,kraken,bitstamp,okx,bybit,binance"


def best(rounds: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(min(times), 3)


def stream(path: Path) -> int:
    """The rows of every piece, each dropped once counted (as a streaming replay drops a piece it has run)."""
    return sum(len(piece) for piece in TickStream(path))


def parse_only(path: Path) -> dict[str, Callable[[], Any]]:
    """The two columnar parsers considered, each reading the same columns with the same types."""
    import pandas as pd

    names = ["ts", "source", "pair", "price", "bid", "ask", "venue_ts"]
    numbers = [n for n in names if n in NUMBERS]
    out: dict[str, Callable[[], Any]] = {
        "pandas": lambda: pd.read_csv(
            path, dtype={"source": "category", "pair": "category", **dict.fromkeys(numbers, "float64")}
        )
    }
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
    except ImportError:
        return out
    types = {"source": pa.dictionary(pa.int32(), pa.string()), "pair": pa.dictionary(pa.int32(), pa.string())}
    options = pcsv.ConvertOptions(column_types=types | dict.fromkeys(numbers, pa.float64()), null_values=[""])
    out["pyarrow"] = lambda: pcsv.read_csv(path, convert_options=options)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=86_400, help="simulated duration (default one day)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "day.csv"
        synth = ["synth", "--out", str(csv), "--markets", "BTC-USD=30000", "--sources", VENUES, "--seed", "1"]
        subprocess.run([sys.executable, "-m", "oracle", *synth, "--seconds", str(args.seconds)], check=True)
        ticks = read_ticks(csv)
        gz = csv.with_suffix(".csv.gz")
        write_ticks(gz, ticks)
        files = {"csv": csv, "csv_gz": gz}
        try:
            write_ticks(csv.with_suffix(".parquet"), ticks)
            files["parquet"] = csv.with_suffix(".parquet")
        except ticks_module.TicksError as exc:
            print(f"no Parquet figure: {exc}", file=sys.stderr)
        figures["rows"] = len(ticks)
        for name, path in files.items():
            figures[f"{name}_s"] = best(args.rounds, lambda path=path: read_ticks(path))
            figures[f"{name}_mb"] = round(path.stat().st_size / 1e6, 1)
            figures[f"stream_{name}_s"] = best(args.rounds, functools.partial(stream, path))
        for name in ("csv", "csv_gz"):  # the old reader is slow: once is enough
            figures[f"lines_{name}_s"] = best(1, lambda name=name: ticks_module._read_rows(files[name]))
        figures["speedup_csv"] = round(float(figures["lines_csv_s"]) / float(figures["csv_s"]), 1)  # type: ignore[arg-type]
        for name, parse in parse_only(csv).items():
            figures[f"parse_{name}_s"] = best(args.rounds, parse)
    figures["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
