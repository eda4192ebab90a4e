"""Golden replays: every scenario's marks.csv, disputes.csv and report.json (and perp.csv for a
config with a perp mark), kept byte for byte.

A speed-up must not change an answer, so each scenario of scenarios/ is replayed and its outputs
compared with the copies kept here (tests/replay/test_golden.py). report.json is kept without what
differs from run to run: the timings (`seconds`, `ticks_per_s`) and the scenario's absolute path.

A change that legitimately alters an output regenerates them with

    .venv/bin/python -m tests.replay.golden --write

and its commit message explains every difference as a bug fixed (with the test that pins it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent
SCENARIOS = GOLDEN.parents[2] / "scenarios"
FILES = ("marks.csv", "disputes.csv", "report.json")
PERP_FILE = "perp.csv"  # kept too where the replay writes it (a config with a [markets.M.perp] table)
TIMINGS = ("seconds", "ticks_per_s")


def scenario_names() -> list[str]:
    """Every scenario of scenarios/: the *.toml files that are not configs (*.markd.toml, *.usd.toml)."""
    return sorted(p.name[: -len(".toml")] for p in SCENARIOS.glob("*.toml") if p.name.count(".") == 1)


def stable_report(report: dict[str, Any], name: str) -> str:
    """report.json as kept: the timings dropped, the scenario's path relative to the repository."""
    out = json.loads(json.dumps(report))  # a deep copy of plain JSON data
    for part in ("run", "reference"):
        for key in TIMINGS:
            out[part].pop(key, None)
    out["scenario"]["path"] = f"scenarios/{name}.toml"
    return json.dumps(out, indent=2, sort_keys=True, allow_nan=False) + "\n"


def outputs(name: str, folder: Path) -> dict[str, bytes]:
    """The kept outputs of a replay written to `folder` (report.json made stable)."""
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    out = {
        "marks.csv": (folder / "marks.csv").read_bytes(),
        "disputes.csv": (folder / "disputes.csv").read_bytes(),
        "report.json": stable_report(report, name).encode(),
    }
    if (folder / PERP_FILE).exists():
        out[PERP_FILE] = (folder / PERP_FILE).read_bytes()
    return out


def kept(name: str) -> dict[str, bytes]:
    files = FILES + ((PERP_FILE,) if (GOLDEN / name / PERP_FILE).exists() else ())
    return {f: (GOLDEN / name / f).read_bytes() for f in files}
