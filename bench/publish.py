"""Publish throughput: 100,000 marks over 1,000 markets through RedisPublisher (one pipeline per tick
of 1,000 marks, handed over as columns: `publish_columns`, as the daemon does) to a private
redis-server, unsigned and signed (HMAC-SHA256, Ed25519) in the same run, against the ceiling of the
same server measured by `redis-benchmark -t set -P 16 -q`.

    .venv/bin/python bench/publish.py [--markets 1000] [--marks 100000] [--rounds 3]

Each round runs every mode once, in turn, so a busy spell of the shared machine hits them alike; each
figure is the best of `rounds` (the least disturbed run). Prints a final JSON line:
{"marks_per_s" (unsigned), "hmac_marks_per_s", "ed25519_marks_per_s", "hmac_cost_pct",
"ed25519_cost_pct", "ceiling_ops_per_s", "ratio", ...}; a cost is the throughput lost to signing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
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
from oracle.signing import Signer
from oracle.testing import RedisServer
from oracle.validation.state import MarkColumns


def tick_marks(markets: list[str], tick: int, now: float) -> list[Mark]:
    return [
        Mark(m, 100.0 + i + tick * 0.01, 0.05, now, 0, Status.OK, 1, ("coinbase", "kraken", "okx"))
        for i, m in enumerate(markets)
    ]


MODES = ("unsigned", "hmac-sha256", "ed25519")


async def publish_rate(url: str, n_markets: int, n_marks: int, mode: str = "unsigned") -> float:
    markets = [f"M{i}-USD" for i in range(n_markets)]
    clock = WallClock()
    signer = None if mode == "unsigned" else Signer(mode, secrets.token_bytes(32))
    settings = RedisSettings(url=url, prefix="bench")
    publisher = RedisPublisher(settings, Metrics(), clock, timeout_s=10.0, signer=signer)
    try:
        await publisher.publish(tick_marks(markets, 0, clock.now()))  # loads the script, reads seqs back
        # as the pipeline hands a tick's marks over: columns, not Mark objects (MarkTable.columns)
        ticks = [MarkColumns.of(tick_marks(markets, t, clock.now())) for t in range(1, n_marks // n_markets + 1)]
        written = 0
        started = time.perf_counter()
        for marks in ticks:
            written += len(await publisher.publish_columns(marks))
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
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        tops = []
        for _ in range(args.rounds):
            for mode in MODES:
                server.flush()
                rates[mode].append(asyncio.run(publish_rate(server.url, args.markets, args.marks, mode)))
            tops.append(ceiling(server.port))
        best = {mode: max(r) for mode, r in rates.items()}
        top = max(tops)
    finally:
        server.stop()
    rate = best["unsigned"]
    result = {
        "marks_per_s": round(rate),
        "hmac_marks_per_s": round(best["hmac-sha256"]),
        "ed25519_marks_per_s": round(best["ed25519"]),
        "hmac_cost_pct": round(100 * (1 - best["hmac-sha256"] / rate), 1),
        "ed25519_cost_pct": round(100 * (1 - best["ed25519"] / rate), 1),
        "ceiling_ops_per_s": round(top),
        "ratio": round(rate / top, 4),
        "markets": args.markets,
        "marks": args.marks,
        "rounds_marks_per_s": {mode: [round(x) for x in r] for mode, r in rates.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
