"""The perp mark in a replay (the daemon's pipeline on virtual time): perp.csv, and the own-book
pump of DESIGN.md's "Perpetual mark price" moving the mark only by what the basis EMA lets through."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from oracle.replay import run_scenario

T0 = 1_700_000_000.0
CONFIG = """\
[service]
tick_ms = 250
[policy]
min_sources = 2
max_age_ms = 3000
[sources.a]
kind = "coinbase"
[sources.b]
kind = "kraken"
[sources.c]
kind = "bitstamp"
[sources.venue]
kind = "http_json"
base_url = "http://127.0.0.1:1/book.json"
[sources.x1]
kind = "binance"
product = "perp"
[sources.x2]
kind = "okx"
product = "perp"
[markets.BTC-USD]
sources = [{ source = "a", pair = "BTC-USD" }, { source = "b", pair = "BTC-USD" }, { source = "c", pair = "BTC-USD" }]
[markets.BTC-USD.perp]
book = { source = "venue", pair = "BTC-PERP", path = "mid" }
external = [{ source = "x1", pair = "BTC-USD" }, { source = "x2", pair = "BTC-USD" }]
ema_s = 150
max_premium_bps = 1000
"""


def _ticks(path: Path, pump: tuple[float, float], book_factor: float) -> None:
    """Spot and the external perps flat at 30,000 for 400 s; the own book x `book_factor` during `pump`."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ts", "source", "pair", "price", "bid", "ask"])
        for s in range(400):
            ts = T0 + s
            for src in ("a", "b", "c"):
                w.writerow([ts, src, "BTC-USD", 30_000.0, "", ""])
            for src in ("x1", "x2"):
                w.writerow([ts, src, "BTC-USD", 30_000.0, "", ""])
            f = book_factor if pump[0] <= s < pump[1] else 1.0
            w.writerow([ts, "venue", "BTC-PERP", 30_000.0 * f, 29_999.0 * f, 30_001.0 * f])


def _run(tmp_path: Path, pump: tuple[float, float], factor: float) -> list[dict[str, str]]:
    (tmp_path / "c.toml").write_text(CONFIG)
    _ticks(tmp_path / "t.csv", pump, factor)
    (tmp_path / "s.toml").write_text('ticks = "t.csv"\nconfig = "c.toml"\n')
    run_scenario(tmp_path / "s.toml", tmp_path / "out", html=False)
    with (tmp_path / "out" / "perp.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_replay_writes_perp_csv_one_row_per_tick(tmp_path: Path) -> None:
    rows = _run(tmp_path, (0, 0), 1.0)
    assert list(rows[0]) == ["ts", "market", "price", "index", "c1", "c2", "c3", "status"]
    ts = [float(r["ts"]) for r in rows]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)  # one market: one row per tick
    assert len(rows) >= 399 * 4 - 8  # every tick of the 400 s once the index validates
    assert {r["status"] for r in rows} == {"ok"}
    assert all(float(r["price"]) == pytest.approx(30_000.0) for r in rows)


def test_own_book_pump_moves_the_mark_only_through_the_basis_ema(tmp_path: Path) -> None:
    """The book +5 % for 30 s, spot and the external perps flat: at most 5 % x (1 - e^(-30/150))."""
    rows = _run(tmp_path, (200, 230), 1.05)
    premium = [float(r["price"]) / float(r["index"]) - 1 for r in rows]
    bound = 0.05 * (1 - math.exp(-30 / 150))  # about 0.906 %
    assert max(premium) == pytest.approx(bound, rel=0.03)  # 250 ms ticks and 1 s quotes: near the bound
    assert max(premium) <= bound * 1.001
    in_pump = [r for r in rows if T0 + 201 <= float(r["ts"]) < T0 + 230]
    assert all(float(r["c2"]) == pytest.approx(31_500.0, rel=1e-4) for r in in_pump)  # the pump itself
    assert all(float(r["price"]) == pytest.approx(float(r["c1"])) for r in in_pump)  # c1 is the median


def test_report_json_gives_the_perp_marks_error_against_the_reference(tmp_path: Path) -> None:
    import json

    (tmp_path / "c.toml").write_text(CONFIG)
    _ticks(tmp_path / "t.csv", (0, 0), 1.0)
    attack = '[[attack]]\nkind = "spike"\nsources = ["venue"]\npair = "BTC-PERP"\n'
    attack += "start_s = 200\nduration_s = 30\nmagnitude = 0.05\n"  # the own book +5 % for 30 s
    (tmp_path / "s.toml").write_text('ticks = "t.csv"\nconfig = "c.toml"\n' + attack)
    run_scenario(tmp_path / "s.toml", tmp_path / "out", html=False)
    perp = json.loads((tmp_path / "out" / "report.json").read_text())["perp"]["BTC-USD"]
    bound = 0.05 * (1 - math.exp(-30 / 150)) * 1e4  # the attack moves the mark by the EMA's share only
    assert perp["max_error_bps"] == pytest.approx(bound, rel=0.03)
    assert perp["seconds_over_50bps"] > 0


def test_report_json_gives_the_perp_figures_an_expect_may_name_and_check_reads_them(tmp_path: Path) -> None:
    import json

    from oracle.replay.scenario import PERP_FIGURES, PERP_METRICS

    (tmp_path / "c.toml").write_text(CONFIG)
    _ticks(tmp_path / "t.csv", (200, 230), 1.05)
    expect = "".join(f'[[expect]]\nmarket = "BTC-USD"\nmetric = "{m}"\nop = ">="\nvalue = -1e9\n' for m in PERP_METRICS)
    (tmp_path / "s.toml").write_text('ticks = "t.csv"\nconfig = "c.toml"\n' + expect)
    outcome = run_scenario(tmp_path / "s.toml", tmp_path / "out")
    perp = json.loads((tmp_path / "out" / "report.json").read_text())["perp"]["BTC-USD"]
    assert set(PERP_FIGURES) <= set(perp) and all(perp[k] is not None for k in PERP_FIGURES)
    got = {c["metric"]: c["got"] for c in outcome.report["expectations"]}
    assert got == {f"perp_{k}": perp[k] for k in PERP_FIGURES}
    bound = 0.05 * (1 - math.exp(-30 / 150)) * 1e4
    assert perp["max_premium_bps"] == pytest.approx(bound, rel=0.03)  # the pump's EMA share
    assert perp["clamped_s"] == 0 and perp["c3_fallback_s"] == 0
    assert abs(perp["final_premium_bps"]) < 1 and abs(perp["final_basis_bps"]) < 50  # E decays after
    assert "<h2>Perp mark</h2>" in (tmp_path / "out" / "report.html").read_text()


def test_a_perp_expect_on_a_market_without_a_perp_table_exits_2(tmp_path: Path, capsys) -> None:
    from oracle.cli import main

    (tmp_path / "c.toml").write_text(CONFIG.split("[markets.BTC-USD.perp]")[0])
    _ticks(tmp_path / "t.csv", (0, 0), 1.0)
    expect = '[[expect]]\nmarket = "BTC-USD"\nmetric = "perp_max_premium_bps"\nop = "<="\nvalue = 1000\n'
    (tmp_path / "s.toml").write_text('ticks = "t.csv"\nconfig = "c.toml"\n' + expect)
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "expect[0].metric: 'perp_max_premium_bps' needs a perp mark" in err and "Traceback" not in err


def test_replay_check_fails_when_a_perp_expect_fails(tmp_path: Path, capsys) -> None:
    from oracle.cli import main

    (tmp_path / "c.toml").write_text(CONFIG)
    _ticks(tmp_path / "t.csv", (200, 230), 1.05)
    expect = '[[expect]]\nmarket = "BTC-USD"\nmetric = "perp_max_premium_bps"\nop = "<="\nvalue = 50\n'
    (tmp_path / "s.toml").write_text('ticks = "t.csv"\nconfig = "c.toml"\n' + expect)
    assert main(["replay", str(tmp_path / "s.toml"), "--out", str(tmp_path / "out"), "--check", "--no-html"]) == 1
    out = capsys.readouterr().out
    assert "FAIL BTC-USD perp_max_premium_bps <= 50.0 bps (got 90." in out
    assert "BTC-USD perp: max error" in out


def test_a_perp_marks_c3_fallback_flag_is_no_part_of_its_identity() -> None:
    """It is replay's figure, not a field of P:{M}:perp: a mark read back from Redis (no flag) is
    the mark that was written."""
    from oracle.models import PerpMark, Status

    written = PerpMark("BTC-USD", 30_000.0, 30_000.0, 30_000.0, 30_000.0, 30_000.0, T0, 1, Status.OK, True)
    read_back = PerpMark("BTC-USD", 30_000.0, 30_000.0, 30_000.0, 30_000.0, 30_000.0, T0, 1, Status.OK)
    assert written == read_back and written.c3_fallback and not read_back.c3_fallback
