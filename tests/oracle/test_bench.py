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
