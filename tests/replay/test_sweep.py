"""`markd sweep` (DESIGN.md, "`markd sweep`"): the cartesian product of --set values, each replayed as
`markd replay` of that config would be; sweep.csv and sweep.html; exit 2 before anything runs."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest

import oracle.replay as replay_module
import oracle.replay.sweep as sweep_module
from oracle.cli import main
from oracle.replay import load_scenario, load_ticks, run_scenario
from oracle.replay.sweep import FIGURES, format_value, parse_axis, parse_value, plan
from oracle.ticks import write_ticks

from .conftest import SCENARIOS

# A 15-minute DAI market of four venues, coinbase +30 % for five minutes: a wide band lets it into the
# median (error), min_sources = 4 loses quorum while it is excluded (availability). The sweep sees both.
SPIKE = f"""config = "{SCENARIOS / "compound_dai_spike.markd.toml"}"
[synth]
markets = {{ "DAI-USD" = 1.0 }}
sources = ["coinbase", "kraken", "bitstamp", "okx"]
seconds = 900
seed = 2
vol = 0.05

[[attack]]
kind = "spike"
sources = ["coinbase"]
pair = "DAI-USD"
start_s = 300
duration_s = 300
magnitude = 0.30
"""
SETS = ["--set", "policy.max_deviation_bps=100,5000", "--set", "markets.DAI-USD.min_sources=3,4"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sweep")
    scenario = folder / "spike.toml"
    scenario.write_text(SPIKE)
    assert main(["sweep", str(scenario), *SETS, "--out", str(folder / "out"), "--jobs", "2"]) == 0
    return scenario, folder / "out"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_csv_has_the_swept_keys_in_set_order_then_the_contract_columns(swept):
    _, out = swept
    with (out / "sweep.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == ["policy.max_deviation_bps", "markets.DAI-USD.min_sources", "market", *FIGURES]
    rows = _rows(out / "sweep.csv")
    combos = [(r["policy.max_deviation_bps"], r["markets.DAI-USD.min_sources"]) for r in rows]
    assert combos == [("100", "3"), ("100", "4"), ("5000", "3"), ("5000", "4")]  # the cartesian product
    assert {r["market"] for r in rows} == {"DAI-USD"}


def test_each_row_is_the_report_of_markd_replay_with_those_values(swept, tmp_path, monkeypatch):
    scenario, out = swept
    rows = _rows(out / "sweep.csv")
    for row, (band, quorum) in zip(rows, itertools.product(("100", "5000"), ("3", "4")), strict=True):
        # the equivalent replay, its config changed through the environment rather than by the sweep's code
        monkeypatch.setenv("MARKD_POLICY__MAX_DEVIATION_BPS", band)
        monkeypatch.setenv("MARKD_MARKETS__DAI_USD__MIN_SOURCES", quorum)
        run_scenario(scenario, tmp_path / f"{band}-{quorum}", html=False)
        want = json.loads((tmp_path / f"{band}-{quorum}" / "report.json").read_text())["markets"]["DAI-USD"]
        for figure in FIGURES:
            cell = row[figure]
            assert (None if cell == "" else float(cell)) == want[figure], (band, quorum, figure)
    # and the sweep measured something: the wide band lets the spike into the median (more error), and with
    # the narrow band a quorum of 4 is lost while coinbase is excluded (the five minutes: 1/3 of the run)
    by = {(r["policy.max_deviation_bps"], r["markets.DAI-USD.min_sources"]): r for r in rows}
    assert float(by[("5000", "3")]["max_error_bps"]) > float(by[("100", "3")]["max_error_bps"])
    assert float(by[("100", "4")]["availability"]) < 0.7 < float(by[("5000", "4")]["availability"])


def test_one_job_or_two_give_the_same_csv(swept, tmp_path):
    scenario, out = swept
    assert main(["sweep", str(scenario), *SETS, "--out", str(tmp_path), "--jobs", "1", "--no-html"]) == 0
    assert (tmp_path / "sweep.csv").read_bytes() == (out / "sweep.csv").read_bytes()
    assert not (tmp_path / "sweep.html").exists()


def test_sweep_html_plots_error_against_availability_per_market(swept):
    _, out = swept
    page = (out / "sweep.html").read_text()
    assert page.count("data:image/png;base64,") == 1  # one market
    assert "4 combinations" in page and page.count("<td>5000</td>") == 2  # the table, one row per combination


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("policy.max_deviaton_bps=100", "max_deviaton_bps"),  # a typo: unknown key
        ("policy.min_sources=two", "min_sources"),  # a string where a number belongs
        ("policy.min_sources=0,3", "min_sources"),  # a value the type refuses
        ("markets.ETH-USD.min_sources=3", "ETH-USD"),  # no such market
        ("policy.max_deviation_bps", "KEY=V1,V2"),  # no values
    ],
)
def test_an_unknown_key_or_bad_value_exits_2_naming_it_before_anything_runs(
    option, named, tmp_path, monkeypatch, capsys
):
    def never(*args, **kwargs):
        raise AssertionError("a replay ran")

    monkeypatch.setattr(replay_module, "Run", never)
    scenario = tmp_path / "spike.toml"
    scenario.write_text(SPIKE)
    assert main(["sweep", str(scenario), "--set", option, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.5", 0.5), ("3", 3), ("true", True), ('"median"', "median"), ("median", "median"), ("1e-3", 0.001)],
)
def test_values_are_toml_scalars_and_a_bare_word_is_a_string(text, value):
    got = parse_value(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("option", "values"),
    [
        ("policy.max_deviation_bps=50, 150", (50, 150)),
        ('notify.url="http://h/?a=1,b=2",""', ("http://h/?a=1,b=2", "")),  # a comma inside quotes
        ("notify.url='x,y',z", ("x,y", "z")),  # a TOML literal string, then a bare word
        ('redis.sentinels=["h1:26379", "h2:26379"],[]', (["h1:26379", "h2:26379"], [])),  # TOML arrays
        ("policy.method=median,trimmed_mean", ("median", "trimmed_mean")),  # bare words, as before
    ],
)
def test_a_value_may_hold_a_comma_inside_quotes_or_brackets(option, values):
    assert parse_axis(option).values == values


def test_a_sweep_over_arrays_builds_each_config_and_writes_the_array_as_toml(tmp_path):
    scenario = tmp_path / "spike.toml"
    scenario.write_text(SPIKE)
    p = plan(scenario, ['redis.sentinels=["h1:26379","h2:26379"],[]', 'notify.url="http://h/?a=1,b=2"'])
    assert [dict(c) for c in p.combos] == [
        {"redis.sentinels": ["h1:26379", "h2:26379"], "notify.url": "http://h/?a=1,b=2"},
        {"redis.sentinels": [], "notify.url": "http://h/?a=1,b=2"},
    ]
    assert format_value(["h1:26379", "h2:26379"]) == '["h1:26379", "h2:26379"]'
    assert parse_value(format_value(["h1:26379", 2.5, True])) == ["h1:26379", 2.5, True]  # reads back as TOML


def test_a_table_value_exits_2(tmp_path, capsys):
    scenario = tmp_path / "spike.toml"
    scenario.write_text(SPIKE)
    assert main(["sweep", str(scenario), "--set", "policy={a = 1}", "--out", str(tmp_path / "out")]) == 2
    assert "is a table" in capsys.readouterr().err


@pytest.mark.parametrize("x", [0.1, 1 / 3, 2.5e-7, 1e22, 12345.678901234567])
def test_numbers_are_written_so_that_they_read_back_to_the_same_float(x):
    assert float(format_value(x)) == x
    assert format_value(None) == ""


def test_a_missing_ticks_file_exits_2_before_the_pool_starts(tmp_path, capsys):
    scenario = tmp_path / "gone.toml"
    scenario.write_text(f'ticks = "missing.csv"\nconfig = "{SCENARIOS / "compound_dai_spike.markd.toml"}"\n')
    argv = ["sweep", str(scenario), "--set", "policy.min_sources=2,3", "--out", str(tmp_path / "out"), "--jobs", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "missing.csv" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_ticks_file_over_the_shared_size_streams_in_each_combination_to_the_same_sweep(
    swept, tmp_path, monkeypatch, jobs
):
    """A file too large to read whole once (a month) streams through each combination instead, as
    through `markd replay`: the same sweep.csv as the shared read, and no combination reads it whole."""
    scenario, _ = swept
    ticks = write_ticks_of(scenario, tmp_path / "t.csv")
    on_file = tmp_path / "file.toml"
    on_file.write_text(SPIKE.split("[synth]")[0] + f'ticks = "{ticks}"\n[[attack]]' + SPIKE.split("[[attack]]")[1])
    shared = tmp_path / "shared"
    assert main(["sweep", str(on_file), *SETS, "--out", str(shared), "--jobs", jobs]) == 0
    monkeypatch.setattr(sweep_module, "SHARED_READ_MAX_BYTES", 0)
    monkeypatch.setattr(replay_module, "scenario_ticks", _never)  # the whole read: not once, nor in a worker
    monkeypatch.setattr(sweep_module, "scenario_ticks", _never)
    streamed = tmp_path / "streamed"
    assert main(["sweep", str(on_file), *SETS, "--out", str(streamed), "--jobs", jobs]) == 0
    assert (streamed / "sweep.csv").read_bytes() == (shared / "sweep.csv").read_bytes()
    assert len(_rows(streamed / "sweep.csv")) == 4


def write_ticks_of(scenario: Path, path: Path) -> Path:
    write_ticks(path, load_ticks(load_scenario(scenario)))
    return path


def _never(*args, **kwargs):
    raise AssertionError("the ticks were read whole")
