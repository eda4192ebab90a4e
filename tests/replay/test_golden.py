"""Sameness: every scenario replays to byte-identical outputs (see tests/replay/golden/__init__.py)."""

from __future__ import annotations

import pytest

from .conftest import INCIDENTS
from .golden import FILES, GOLDEN, kept, outputs, scenario_names


def test_every_scenario_has_golden_outputs_and_the_session_replays_them_all():
    assert scenario_names() == sorted(INCIDENTS)
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(INCIDENTS)


@pytest.mark.parametrize("name", INCIDENTS)
@pytest.mark.parametrize("file", FILES)
def test_a_replay_gives_the_golden_outputs_byte_for_byte(name, file, replayed):
    _, folder = replayed[name]
    got, want = outputs(name, folder)[file], kept(name)[file]
    if got != want:  # name the first differing line, not two megabytes of bytes
        a, b = got.decode().splitlines(), want.decode().splitlines()
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{name}/{file} differs from the golden file first at line {first + 1} (regenerate: see golden/)")
