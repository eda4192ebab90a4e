"""bench/aggregate.py runs and prints its documented final JSON line (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_aggregate_prints_a_final_json_line_with_the_documented_keys() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/aggregate.py", "--markets", "200", "--sources", "8", "--repeat", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(last) == {"markets", "sources", "core_ms", "naive_ms", "ratio"}
    assert (last["markets"], last["sources"]) == (200, 8)
    assert all(isinstance(last[k], float) and last[k] > 0 for k in ("core_ms", "naive_ms", "ratio"))
    assert "results agree" in proc.stderr


def _last_json(argv: list[str]) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_bench_ticks_times_each_format_and_the_old_reader() -> None:
    last, _ = _last_json(["bench/ticks.py", "--seconds", "60", "--rounds", "1"])
    assert last["rows"] == 6 * 60
    for key in ("csv_s", "csv_gz_s", "parquet_s", "lines_csv_s", "lines_csv_gz_s", "parse_pandas_s", "parse_pyarrow_s"):
        assert last[key] > 0, key


def test_bench_replay_b_below_30_by_10_runs_two_sizes_and_says_it_extrapolates() -> None:
    last, err = _last_json(["bench/replay.py", "--no-a", "--days", "0.002", "--markets", "2"])
    assert (last["b_rows"], last["b_half_rows"], last["b_target_rows"]) == (173 * 6 * 2, 86 * 6 * 2, 30 * 86_400 * 60)
    assert last["b_extrapolated"] is True and last["b_replay_s"] > 0 and last["b_rss_mb"] > 0
    assert "EXTRAPOLATED, not run: 30 days x 10 markets" in err
