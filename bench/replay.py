"""Replay throughput as a user sees it: `markd replay` and `markd sweep` timed end to end as subprocesses.

    .venv/bin/python bench/replay.py [--seconds 86400] [--no-sweep] [--days 30 --markets 10 | --no-b]

(a) Setup (not timed): `markd synth` writes one day of 1-second ticks from 6 venues for BTC-USD
(6 x 86,400 = 518,400 rows) to a ticks file; a scenario beside it spikes one venue +30 % for an hour.
Timed, each as a subprocess from start to exit:
- `markd replay SCENARIO --out DIR --no-html`: reading the file, both runs (reference and attacked),
  report.json, marks.csv and disputes.csv;
- `markd sweep SCENARIO --set ... --out DIR --no-html` of 8 combinations (2 x 2 x 2), `--jobs` default.

(b) `--days` x `--markets` x the 6 venues at 1 s (issue 10's case, the default, is 30 x 10: 155.5
million rows, a 13.7 GB CSV built a day at a time, ~15 min of setup and 14 GB of disk in the temporary
folder), the first market's okx spiked for the first 24th of the time, `markd replay ... --no-html`
timed the same way, with its peak RSS (the child's own, from wait4). A smaller size than 30 x 10 is
run at that size and at half of it, and wall time and RSS are extrapolated to 30 x 10 along the line
through the two; the JSON says `b_extrapolated` and stderr says so in words.

Prints one JSON line: {"rows", "replay_s", "rows_per_s", "sweep_combinations", "sweep_s", "b_...", "load_avg"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENUES = ["coinbase", "kraken", "bitstamp", "okx", "bybit", "binance"]
# (b)'s ten markets and their start prices
MARKETS = {
    "BTC-USD": 30000, "ETH-USD": 2000, "SOL-USD": 60, "XRP-USD": 0.6, "DOGE-USD": 0.08,
    "ADA-USD": 0.4, "AVAX-USD": 20, "LINK-USD": 12, "DOT-USD": 5, "LTC-USD": 70,
}  # fmt: skip
TARGET_DAYS, TARGET_MARKETS = 30, 10
MARKD = [sys.executable, "-m", "oracle"]
SWEEP = [
    "--set",
    "policy.max_deviation_bps=50,150",
    "--set",
    "policy.min_sources=2,3",
    "--set",
    "policy.max_jump_bps=300,1000",
]


def config(markets: list[str]) -> str:
    """tick_ms = 1000, the 6 venues, each market read from all six."""
    text = "[service]\ntick_ms = 1000\n\n" + "".join(f'[sources.{v}]\nkind = "{v}"\n' for v in VENUES)
    for m in markets:
        text += (
            f"\n[markets.{m}]\nsources = [" + ", ".join(f'{{ source = "{v}", pair = "{m}" }}' for v in VENUES) + "]\n"
        )
    return text


CONFIG = config(["BTC-USD"])
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


def timed_rss(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and the child's peak RSS in MB (its own rusage from wait4, not any other child's)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, argv)
    return wall, usage.ru_maxrss / 1024  # Linux reports KB


def synth(out: Path, prices: dict[str, float], seconds: int, seed: int, start: float | None = None) -> None:
    spec = ",".join(f"{m}={p!r}" for m, p in prices.items())
    argv = ["synth", "--out", str(out), "--markets", spec, "--sources", ",".join(VENUES), "--seed", str(seed)]
    argv += ["--seconds", str(seconds)] + ([] if start is None else ["--start", repr(start)])
    subprocess.run([*MARKD, *argv], check=True, stdout=subprocess.DEVNULL)


def month_file(ticks: Path, names: list[str], days: int) -> None:
    """`days` days of ticks in one file, a day at a time (`markd synth` holds its whole output in
    memory: a month at once would take ~20 GB). Each day starts where the last one's quotes ended and
    two seconds after them, so the file stays in time order (a replay streams only such a file)."""
    prices = {m: float(MARKETS[m]) for m in names}
    start, last_ts = 1_700_000_000.0, -1.0
    day = ticks.with_name("day.csv")
    with ticks.open("w") as out:
        for d in range(days):
            synth(day, prices, 86_400, seed=1 + d, start=start)
            with day.open() as fh:
                header = fh.readline()
                if d == 0:
                    out.write(header)
                first = fh.readline()
                if float(first.split(",")[0]) < last_ts:
                    raise SystemExit(f"day {d} starts before day {d - 1} ends: the file would be out of time order")
                out.write(first)
                shutil.copyfileobj(fh, out, 1 << 24)
            last_ts, prices = closing(day, names)
            start += 86_402
    day.unlink()


def closing(day: Path, names: list[str]) -> tuple[float, dict[str, float]]:
    """The last row's time and each market's last quoted price, from the end of a day's file."""
    with day.open("rb") as fh:
        fh.seek(max(0, day.stat().st_size - (1 << 16)))
        lines = fh.read().decode().splitlines()[1:]
    prices: dict[str, float] = {}
    for line in reversed(lines):
        _, _, pair, price, *_ = line.split(",")
        prices.setdefault(pair, float(price))
    return float(lines[-1].split(",")[0]), {m: prices[m] for m in names}


def case_b(folder: Path, days: float, markets: int) -> dict[str, float | int]:
    """One (b) replay of `days` x `markets` x 6 venues: rows, wall seconds, peak RSS."""
    names = list(MARKETS)[:markets]
    seconds = round(days * 86_400)
    ticks = folder / "b.csv"
    if days > 1:
        if days != int(days):
            raise SystemExit("--days: over one day, give whole days")
        month_file(ticks, names, int(days))
    else:
        synth(ticks, {m: float(MARKETS[m]) for m in names}, seconds, seed=1)
    (folder / "b.markd.toml").write_text(config(names))
    scenario = folder / "b.toml"
    scenario.write_text(SCENARIO.format(hour=max(1, seconds // 24)).replace("day.", "b."))
    wall, rss = timed_rss([*MARKD, "replay", str(scenario), "--out", str(folder / "b-out"), "--no-html"])
    return {"rows": seconds * len(VENUES) * len(names), "s": wall, "rss_mb": rss}


def bench_b(folder: Path, days: float, markets: int) -> dict[str, object]:
    """(b) at the size asked; below 30 x 10, also at half of it, and extrapolated to 30 x 10."""
    target_rows = TARGET_DAYS * 86_400 * len(VENUES) * TARGET_MARKETS
    full = case_b(folder, days, markets)
    out: dict[str, object] = {"b_days": days, "b_markets": markets, "b_rows": full["rows"],
                              "b_replay_s": round(full["s"], 1), "b_rss_mb": round(full["rss_mb"])}  # fmt: skip
    if full["rows"] >= target_rows:
        return out | {"b_extrapolated": False}
    half = case_b(folder, days / 2, markets)
    per_row_s = (full["s"] - half["s"]) / (full["rows"] - half["rows"])
    per_row_mb = (full["rss_mb"] - half["rss_mb"]) / (full["rows"] - half["rows"])
    wall = full["s"] + per_row_s * (target_rows - full["rows"])
    rss = full["rss_mb"] + per_row_mb * (target_rows - full["rows"])
    print(
        f"(b) EXTRAPOLATED, not run: {TARGET_DAYS} days x {TARGET_MARKETS} markets ({target_rows:,} rows) would take "
        f"~{wall / 60:.0f} min and ~{rss / 1024:.1f} GB RSS, along the line through {half['rows']:,} rows "
        f"({half['s']:.1f} s, {half['rss_mb']:.0f} MB) and {full['rows']:,} rows ({full['s']:.1f} s, "
        f"{full['rss_mb']:.0f} MB)",
        file=sys.stderr,
    )
    out |= {"b_half_rows": half["rows"], "b_half_replay_s": round(half["s"], 1), "b_half_rss_mb": round(half["rss_mb"])}
    return out | {"b_extrapolated": True, "b_target_rows": target_rows,
                  "b_target_replay_min": round(wall / 60, 1), "b_target_rss_gb": round(rss / 1024, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=86_400, help="simulated duration (default one day)")
    p.add_argument("--no-sweep", action="store_true", help="time the replay only")
    p.add_argument("--no-a", action="store_true", help="skip (a), the one-day replay and its sweep")
    p.add_argument("--days", type=float, default=TARGET_DAYS, help="(b): days of ticks (default 30)")
    p.add_argument("--markets", type=int, default=TARGET_MARKETS, choices=range(1, len(MARKETS) + 1),
                   metavar="1..10", help="(b): markets, each quoted by the 6 venues (default 10)")  # fmt: skip
    p.add_argument("--no-b", action="store_true", help="skip (b)")
    args = p.parse_args()
    figures: dict[str, object] = {}
    if not args.no_a:
        figures |= bench_a(args.seconds, args.no_sweep)
    if not args.no_b:
        with tempfile.TemporaryDirectory() as tmp:
            figures |= bench_b(Path(tmp), args.days, args.markets)
    figures["load_avg"] = round(os.getloadavg()[0], 1)
    print(json.dumps(figures))


def bench_a(seconds: int, no_sweep: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ticks = folder / "day.csv"
        synth = ["synth", "--out", str(ticks), "--markets", "BTC-USD=30000", "--sources", ",".join(VENUES)]
        subprocess.run([*MARKD, *synth, "--seconds", str(seconds), "--seed", "1"], check=True)
        rows = sum(1 for _ in ticks.open()) - 1
        (folder / "day.markd.toml").write_text(CONFIG)
        scenario = folder / "day.toml"
        scenario.write_text(SCENARIO.format(hour=seconds // 24))  # an hour of a day
        replay_s = timed([*MARKD, "replay", str(scenario), "--out", str(folder / "replay"), "--no-html"])
        figures: dict[str, object] = {"rows": rows, "replay_s": round(replay_s, 2)}
        figures["rows_per_s"] = round(rows / replay_s)
        if not no_sweep:
            sweep_s = timed([*MARKD, "sweep", str(scenario), *SWEEP, "--out", str(folder / "sweep"), "--no-html"])
            figures |= {"sweep_combinations": 8, "sweep_s": round(sweep_s, 2)}
    return figures


if __name__ == "__main__":
    main()
