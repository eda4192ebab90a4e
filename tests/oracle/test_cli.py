"""The `markd` command line: every command is reachable, and bad input exits 2 or 1 with one line."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from oracle.cli import main
from tests.servers import free_port


def test_synth_through_markd_writes_a_ticks_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.csv.gz"
    argv = ["synth", "--out", str(out), "--markets", "BTC-USD=30000", "--sources", "coinbase,kraken"]
    assert main([*argv, "--seconds", "5"]) == 0
    with gzip.open(out, "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "ts,source,pair,price,bid,ask,venue_ts"
    assert len(lines) == 1 + 2 * 5


def test_synth_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "t.csv"), "--markets", "BTC-USD=abc", "--sources", "x"]) == 2
    assert "not a number" in capsys.readouterr().err


def test_marks_with_redis_unreachable_exits_1_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    assert main(["marks", "--redis", url]) == 1
    err = capsys.readouterr().err
    assert "unavailable" in err
    assert "hunter2" not in err


def test_replay_of_a_malformed_ticks_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.csv").write_text("ts,source,pair\n1,a,b\n")
    config = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
    (tmp_path / "s.toml").write_text(f'ticks = "bad.csv"\nconfig = "{config}"\n')
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "price" in err
    assert "Traceback" not in err


def test_run_with_a_missing_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "/nonexistent/markd.toml"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unknown_command_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bogus"])
    assert exc.value.code == 2


def test_replay_of_a_synth_scenario_that_cannot_be_simulated_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
    (tmp_path / "s.toml").write_text(
        f'config = "{config}"\n[synth]\nmarkets = {{ BTC-USD = 30000 }}\n'
        'sources = ["coinbase", "binance:EUR"]\nseconds = 60\n'
    )
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "[synth]" in err and "EUR-USD" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("perps", "message"),
    [("{ bybit_perp = 0.001 }", "perps names ['bybit_perp'], which are not among the sources"),
     ("{ venue = -1.5 }", "greater than -1")],
)  # fmt: skip
def test_replay_of_a_synth_scenario_with_bad_perps_exits_2(
    perps: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
    (tmp_path / "s.toml").write_text(
        f'config = "{config}"\n[synth]\nmarkets = {{ BTC-USD = 30000 }}\n'
        f'sources = ["coinbase", "venue:BTC-PERP"]\nseconds = 60\nperps = {perps}\n'
    )
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_marks_with_a_url_that_is_no_url_exits_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["marks", "--redis", "notaurl"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "markd marks: --redis 'notaurl': must start with redis://, rediss:// or unix://"


def test_replay_out_naming_an_existing_file_exits_2_before_replaying(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("keep me\n")
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "mango_pump.toml"
    assert main(["replay", str(scenario), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a directory" in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "keep me\n"


def test_check_config_into_a_closed_pipe_stops_quietly() -> None:
    """`markd check-config ... | head`: the reader leaves early; no BrokenPipeError traceback."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "oracle", "check-config", str(root / "config" / "markd.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before markd writes a byte: its first write meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.decode() == ""


def test_an_unexpected_error_is_one_line_and_markd_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("something went wrong")

    monkeypatch.setattr("oracle.cli.cmd_check_config", broken)
    monkeypatch.delenv("MARKD_DEBUG", raising=False)
    assert main(["check-config", "x.toml"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "markd check-config: internal error: RuntimeError: something went wrong"
    assert "Traceback" not in err and "MARKD_DEBUG=1" in err
    monkeypatch.setenv("MARKD_DEBUG", "1")
    assert main(["check-config", "x.toml"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_markd_alone_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: markd") and "COMMAND" in err
    listed = [line.split()[0] for line in err.splitlines() if line.startswith("    ") and line.split()]
    assert {"run", "demo", "check-config", "replay", "record", "synth", "marks", "dispute"} <= set(listed), listed


def test_markd_version_prints_the_version_and_exits_0() -> None:
    from oracle import __version__

    done = subprocess.run([sys.executable, "-m", "oracle", "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout.strip() == f"markd {__version__}"
