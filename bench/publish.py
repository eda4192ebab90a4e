"""Publish throughput: 100,000 marks over 1,000 markets through RedisPublisher (one pipeline per tick
of 1,000 marks, as the daemon does) to a private redis-server, against the ceiling of the same
server measured in the same run by `redis-benchmark -t set -P 16 -q`.

    .venv/bin/python bench/publish.py [--markets 1000] [--marks 100000] [--rounds 3]

Each figure is the best of `rounds` runs (the machine may be shared; the best run is the one least
disturbed). Prints a final JSON line: {"marks_per_s", "ceiling_ops_per_s", "ratio", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oracle.clock import WallClock
from oracle.metrics import Metrics
from oracle.models import Mark, Status
from oracle.publish import RedisPublisher
from oracle.settings import RedisSettings
from oracle.testing import RedisServer


def tick_marks(markets: list[str], tick: int, now: float) -> list[Mark]:
    return [
        Mark(m, 100.0 + i + tick * 0.01, 0.05, now, 0, Status.OK, 1, ("coinbase", "kraken", "okx"))
        for i, m in enumerate(markets)
    ]


async def publish_rate(url: str, n_markets: int, n_marks: int) -> float:
    markets = [f"M{i}-USD" for i in range(n_markets)]
    clock = WallClock()
    publisher = RedisPublisher(RedisSettings(url=url, prefix="bench"), Metrics(), clock, timeout_s=10.0)
    try:
        await publisher.publish(tick_marks(markets, 0, clock.now()))  # loads the script, reads seqs back
        ticks = [tick_marks(markets, t, clock.now()) for t in range(1, n_marks // n_markets + 1)]
        written = 0
        started = time.perf_counter()
        for marks in ticks:
            written += len(await publisher.publish(marks))
        elapsed = time.perf_counter() - started
    finally:
        await publisher.close()
    if written != len(ticks) * n_markets:
        raise SystemExit(f"only {written} of {len(ticks) * n_markets} marks were written")
    return written / elapsed


def ceiling(port: int) -> float:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise SystemExit("redis-benchmark is not installed")
    cmd = [exe, "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-P", "16", "-q", "-n", "1000000"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"SET: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if match is None:
        raise SystemExit(f"cannot read redis-benchmark output: {out!r}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markets", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        rates, tops = [], []
        for _ in range(args.rounds):
            server.flush()
            rates.append(asyncio.run(publish_rate(server.url, args.markets, args.marks)))
            tops.append(ceiling(server.port))
        rate, top = max(rates), max(tops)
    finally:
        server.stop()
    result = {
        "marks_per_s": round(rate),
        "ceiling_ops_per_s": round(top),
        "ratio": round(rate / top, 4),
        "markets": args.markets,
        "marks": args.marks,
        "rounds_marks_per_s": [round(r) for r in rates],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
