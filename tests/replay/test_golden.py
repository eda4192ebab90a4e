"""Sameness: every scenario replays to byte-identical outputs (see tests/replay/golden/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from numpy._core import _multiarray_umath as numpy_core

from .conftest import LIBRARY, PERPS
from .golden import FILES, GOLDEN, PERP_FILE, kept, outputs, scenario_names

# Every kept file of every scenario: perp.csv too for the perp scenarios.
KEPT = [(name, f) for name in LIBRARY for f in FILES + ((PERP_FILE,) if name in PERPS else ())]


def test_every_scenario_has_golden_outputs_and_the_session_replays_them_all():
    assert scenario_names() == sorted(LIBRARY)
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(LIBRARY)
    assert [n for n in LIBRARY if (GOLDEN / n / PERP_FILE).exists()] == PERPS


@pytest.mark.parametrize(("name", "file"), KEPT)
def test_a_replay_gives_the_golden_outputs_byte_for_byte(name, file, replayed):
    _, folder = replayed[name]
    got, want = outputs(name, folder)[file], kept(name)[file]
    if got != want:  # name the first differing line, not two megabytes of bytes
        a, b = got.decode().splitlines(), want.decode().splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{name}/{file} differs from the golden file first at line {first + 1} (regenerate: see golden/)")


def test_the_golden_outputs_do_not_depend_on_the_cpus_simd_extensions():
    """The goldens were once written on an AVX-512 machine and failed on an AVX2 one: numpy's exp
    and row sums round differently per SIMD width. Replay again with every SIMD extension this CPU
    has switched off (numpy then runs its baseline loops) and require the same bytes."""
    found = [f for f in numpy_core.__cpu_dispatch__ if numpy_core.__cpu_features__.get(f)]
    if not found:
        pytest.skip("this CPU runs numpy's baseline loops only: nothing to switch off")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(found)}
    root = Path(__file__).resolve().parents[2]
    # a synthesised random walk (exp) and confidence bands (row sums): both kinds of output that differed
    args = [sys.executable, "-m", "tests.replay.golden", "--only", "pyth_two_publishers_zero"]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
