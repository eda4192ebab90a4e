"""`python -m tests.replay.golden --write`: replay every scenario and keep its outputs as golden."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from oracle.replay import run_scenario

from . import GOLDEN, SCENARIOS, kept, outputs, scenario_names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.replay.golden", description=__doc__)
    ap.add_argument("--write", action="store_true", help="overwrite the golden files (default: only compare)")
    ap.add_argument("--only", action="append", metavar="NAME", help="only this scenario (repeatable)")
    args = ap.parse_args(argv)
    differ = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or scenario_names():
            folder = Path(tmp) / name
            run_scenario(SCENARIOS / f"{name}.toml", folder, html=False)
            got = outputs(name, folder)
            if args.write:
                (GOLDEN / name).mkdir(exist_ok=True)
                for f, data in got.items():
                    (GOLDEN / name / f).write_bytes(data)
                print(f"wrote {name}")
                continue
            same = (GOLDEN / name).is_dir() and kept(name) == got
            print(f"{'same' if same else 'DIFFERS'} {name}")
            differ += [] if same else [name]
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
