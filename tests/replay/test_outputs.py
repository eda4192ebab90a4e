"""Determinism, the CLI's exit codes and the replay outputs of the contract."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import pytest

import oracle.replay as replay_module
from oracle.cli import main
from oracle.replay import run_scenario
from oracle.replay.scenario import METRICS

from .conftest import SCENARIOS

SMALL = SCENARIOS / "bzx_one_tick_double.toml"


def test_the_same_scenario_twice_gives_byte_identical_outputs(tmp_path, replayed):
    _, first = replayed["mango_pump"]
    run_scenario(SCENARIOS / "mango_pump.toml", tmp_path, html=False)
    for name in ("marks.csv", "disputes.csv"):
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes()
    assert (tmp_path / "disputes.csv").read_text().count("\n") > 1  # a dispute was there to compare


def test_outputs_have_the_contract_headers(replayed):
    _, folder = replayed["mango_pump"]
    with (folder / "marks.csv").open() as fh:
        assert next(csv.reader(fh)) == ["ts", "market", "price", "confidence", "status", "tier", "sources", "seq"]
    with (folder / "disputes.csv").open() as fh:
        assert next(csv.reader(fh)) == ["opened_ts", "closed_ts", "market", "reason", "outcome"]


def test_report_json_has_the_contract_figures_per_market(replayed):
    _, folder = replayed["svb_usdc_depeg"]
    report = json.loads((folder / "report.json").read_text())
    assert set(report["markets"]) == {"BTC-USD", "USDC-USD", "USDT-USD"}
    for figures in report["markets"].values():
        for key in (
            "max_error_bps",
            "p99_error_bps",
            "seconds_over_50bps",
            "availability",
            "disputes",
            "detection_latency_s",
        ):
            assert key in figures
        assert set(METRICS) <= set(figures), "every metric an [[expect]] may name is in the report"
    assert report["run"]["ticks_per_s"] > 0


def test_replay_check_exits_0_when_expectations_hold_and_1_when_one_fails(tmp_path, capsys):
    assert main(["replay", str(SMALL), "--out", str(tmp_path / "a"), "--check", "--no-html"]) == 0
    strict = tmp_path / "strict.toml"
    text = SMALL.read_text().replace('value = 10\nwhy = "one doubled', 'value = 0\nwhy = "one doubled')
    strict.write_text(text.replace('config = "', f'config = "{SCENARIOS}/'))
    assert main(["replay", str(strict), "--out", str(tmp_path / "b"), "--check", "--no-html"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL SUSD-USD max_error_bps <= 0\.0 bps \(got \d+\.\d bps\)$", out, re.M), out
    assert re.search(r"^SUSD-USD: max error \d+\.\d bps, .*availability \d+\.\d %", out, re.M), out


def _bad(tmp_path: Path, body: str) -> Path:
    shutil.copy(SCENARIOS / "bzx_one_tick_double.markd.toml", tmp_path / "c.toml")
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('ticks = "t.csv"\nconfig = "c.toml"\ncolour = "red"\n', "colour"),
        ('ticks = "missing.csv"\nconfig = "c.toml"\n', "missing.csv: no such file"),
        (
            'ticks = "t.csv"\nconfig = "c.toml"\n[[attack]]\nkind = "nuke"\nsources = ["kraken"]\n'
            'pair = "SUSD-USD"\nstart_s = 0\nduration_s = 1\n',
            "attack[0].kind",
        ),
        ('ticks = "t.csv"\nconfig = "c.toml"\n[window]\nstart = 2023-03-10T00:00:00\n', "window.start"),
        ('ticks = "t.csv"\nconfig = "c.toml"\nreference_config = "nope.toml"\n', "nope.toml"),
    ],
    ids=["unknown-key", "missing-ticks", "bad-attack-kind", "window-without-zone", "missing-reference-config"],
)
def test_a_malformed_scenario_exits_2_with_one_clear_line(tmp_path, capsys, body, says):
    (tmp_path / "t.csv").write_text("ts,source,pair,price\n1.0,kraken,SUSD-USD,1.0\n")
    code = main(["replay", str(_bad(tmp_path, body)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and says in err
    assert "Traceback" not in err


def test_report_html_is_self_contained_with_one_image_per_market(tmp_path):
    run_scenario(SCENARIOS / "svb_usdc_depeg_real.toml", tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:)?//", page)
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == 3
    header = re.search(r"<table><tr><th>market</th>(.*?)</tr>", page, re.S)
    assert header and re.findall(r"<th>(.*?)</th>", header.group(1)) == [m.replace("_", " ") for m in METRICS]
    report = json.loads((tmp_path / "report.json").read_text())
    description = report["scenario"]["description"]
    assert f'<p class="desc">{html.escape(description)}</p>' in page  # the incident, in words
    btc = report["markets"]["BTC-USD"]
    row = re.search(r"<tr><td>BTC-USD</td>(.*?)</tr>", page).group(1)
    assert f"<td>{btc['availability'] * 100:.1f} %</td>" in row  # as the terminal says it, not 0.9987
    assert page.count("<th>excluded quotes by reason</th>") >= 1  # each exclusion with its reason


_TICKS = "ts,source,pair,price\n" + "".join(
    f"{t}.0,{s},SUSD-USD,1.0\n" for t in range(1, 30) for s in ("kraken", "coinbase")
)


@pytest.mark.parametrize(
    ("body", "ticks", "says"),
    [
        (
            'ticks = "t.csv"\nconfig = "c.toml"\n',
            "ts,source,pair,price\n1.0,kraken,BTC-USD,30000\n2.0,kraken,BTC-USD,30001\n",
            "no tick is a quote that c.toml reads: the ticks have kraken BTC-USD, the config reads",
        ),
        (
            'ticks = "t.csv"\nconfig = "c.toml"\n[[attack]]\nkind = "spike"\nsources = ["kraken"]\n'
            'pair = "SUSD-USDT"\nstart_s = 0\nduration_s = 10\nmagnitude = 1.0\n',
            _TICKS,
            "attack[0]: spike of kraken SUSD-USDT at 0-10 s matches no quote the config reads",
        ),
        (
            'ticks = "t.csv"\nconfig = "c.toml"\n[[attack]]\nkind = "dropout"\nsources = ["kraken"]\n'
            'pair = "SUSD-USD"\nstart_s = 100\nduration_s = 10\n',
            _TICKS,
            "attack[0]: dropout of kraken SUSD-USD at 100-110 s matches no quote",
        ),
    ],
    ids=["ticks-of-no-configured-market", "attack-on-an-unread-pair", "attack-after-the-ticks-end"],
)
def test_a_replay_that_would_measure_nothing_exits_2_naming_what_matched_nothing(tmp_path, capsys, body, ticks, says):
    (tmp_path / "t.csv").write_text(ticks)
    code = main(["replay", str(_bad(tmp_path, body)), "--out", str(tmp_path / "out"), "--check"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_attack_on_a_pair_the_config_never_reads_exits_2_before_a_tick_is_read(tmp_path, capsys, monkeypatch):
    """A stream learns what the ticks hold only at the end of the file (minutes, for a month); an
    attack on no (source, pair) the config reads can hit nothing whatever they hold, so it is named
    before anything is read or run."""

    def never(*args, **kwargs):
        raise AssertionError("the ticks were read or a run started")

    monkeypatch.setattr(replay_module, "TickStream", never)
    monkeypatch.setattr(replay_module, "Run", never)
    (tmp_path / "t.csv").write_text(_TICKS)
    body = (
        'ticks = "t.csv"\nconfig = "c.toml"\n[[attack]]\nkind = "duplicate"\nsources = ["kraken", "fake"]\n'
        'pair = "SUSD-USDT"\nstart_s = 0\nduration_s = 10\n'
    )
    code = main(["replay", str(_bad(tmp_path, body)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "attack[0]: duplicate of kraken,fake SUSD-USDT at 0-10 s matches no quote the config reads" in err
    assert not (tmp_path / "out").exists()


def test_an_expectation_on_a_market_no_tick_feeds_exits_2(tmp_path, capsys):
    config = Path(__file__).resolve().parents[2] / "config" / "markd.toml"
    (tmp_path / "t.csv").write_text("ts,source,pair,price\n1.0,coinbase,BTC-USD,30000\n2.0,coinbase,BTC-USD,30001\n")
    (tmp_path / "s.toml").write_text(
        f'ticks = "t.csv"\nconfig = "{config}"\n'
        '[[expect]]\nmarket = "ETH-USD"\nmetric = "availability"\nop = "<="\nvalue = 1\n'
    )
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--check"]) == 2
    assert "expect[0]: no tick is a quote of market ETH-USD" in capsys.readouterr().err
