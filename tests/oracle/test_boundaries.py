"""Module boundaries a newcomer can rely on: what the daemon and the replay load, and what they don't."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The venue simulators, the demo and the test helpers (private Redis servers) are for demos and tests.
NOT_IN_PRODUCTION = ("oracle.sim.venues", "oracle.sim.demo", "oracle.demo", "oracle.testing")


def _loaded_after(code: str, packages: tuple[str, ...] = ("oracle", "feeds", "disputes")) -> list[str]:
    """The modules of `packages` (the project's) loaded by a fresh interpreter after running `code`."""
    probe = (
        "import json, sys\n"
        f"{code}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {packages!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def _offending(loaded: list[str], banned: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == b or m.startswith(b + ".") for b in banned)]


def test_markd_replay_of_a_synth_scenario_loads_no_simulated_venue_and_no_test_helper(tmp_path):
    scenario = ROOT / "scenarios" / "pyth_two_publishers_zero.toml"  # [synth]: the price model is used
    loaded = _loaded_after(
        "from oracle.cli import main\n"
        f"assert main(['replay', {str(scenario)!r}, '--out', {str(tmp_path)!r}, '--no-html']) == 0"
    )
    assert "oracle.replay.run" in loaded and "oracle.sim.synth" in loaded  # the probe did replay
    assert _offending(loaded, NOT_IN_PRODUCTION) == []
    assert (tmp_path / "marks.csv").is_file()


def test_markd_replay_loads_no_http_client(tmp_path):
    """aiohttp is the daemon's (venues, API, webhook): a replay, which runs `markd` again for every
    scenario of a sweep, does not pay its ~0.15 s of imports (nor the dispute CLI's parser for it)."""
    scenario = ROOT / "scenarios" / "compound_dai_spike.toml"
    run = f"assert main(['replay', {str(scenario)!r}, '--out', {str(tmp_path)!r}, '--no-html']) == 0"
    assert _loaded_after(f"from oracle.cli import main\n{run}", ("aiohttp",)) == []
    assert (tmp_path / "marks.csv").is_file()  # the probe did replay


def test_markd_run_loads_no_simulator_at_all_and_no_test_helper():
    # What `markd run` imports before it starts the daemon (oracle.cli.cmd_run's imports).
    loaded = _loaded_after("import oracle.cli, oracle.logs, oracle.service")
    assert "feeds.runner" in loaded and "oracle.validation.stage" in loaded
    assert _offending(loaded, ("oracle.sim", *NOT_IN_PRODUCTION)) == []


def test_the_http_face_does_not_import_the_service_not_even_for_type_checking():
    loaded = _loaded_after("import oracle.http")
    assert "oracle.http" in loaded and "oracle.service" not in loaded
    assert "from oracle.service" not in (ROOT / "oracle" / "http.py").read_text()  # it reads a DaemonView
