"""bench/latency.py runs a real `markd run` and prints its documented final JSON line (no timing is
asserted: the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.e2e.stack import ROOT, clean_env


@pytest.mark.timeout(60)
def test_bench_latency_prints_a_final_json_line_with_the_documented_keys() -> None:
    args = ["--markets", "40", "--sources", "8", "--seconds", "3", "--sample", "10", "--warmup", "30"]
    proc = subprocess.run(
        [sys.executable, "bench/latency.py", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"p50_ms", "p99_ms", "cpu_pct", "rss_mb", "tick_cpu_ms_p50"} <= set(last)
    assert (last["markets"], last["sources"], last["tick_ms"]) == (40, 8, 100)
    assert last["samples"] >= 10
    assert 0 < last["p50_ms"] <= last["p99_ms"] and last["cpu_pct"] > 0 and last["rss_mb"] > 0
    assert 0 < last["tick_cpu_ms_p50"] <= last["tick_cpu_ms_p99"]  # from the daemon's markd_tick_cpu_seconds
