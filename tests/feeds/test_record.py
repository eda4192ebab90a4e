"""`record`/`run_record`: live quotes from fake venues into a ticks file (DESIGN.md, "Ticks file")."""

from __future__ import annotations

import asyncio
import csv
import gzip
from pathlib import Path

from feeds.record import record, run_record
from oracle.clock import VirtualClock
from oracle.models import Quote
from oracle.ticks import EXTRA, HEADER, TicksWriter
from tests.feeds.conftest import POLL_MS, RUNNER_OPTIONS, settings_for

TICKS_HEADER = HEADER + EXTRA  # a recording writes every column, the second-round ones too


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        assert tuple(next(reader)) == TICKS_HEADER
        return [dict(zip(TICKS_HEADER, row, strict=True)) for row in reader]


async def test_record_writes_the_ticks_file_of_the_design(venues, rest_case, tmp_path):
    case = rest_case("bitstamp")
    venue = await venues(case)
    out = tmp_path / "ticks.csv"
    n = await record(settings_for(case, venue.url), out, 0.3, **RUNNER_OPTIONS)
    rows = _rows(out)
    assert n == len(rows) >= 2
    first = rows[0]
    assert (first["source"], first["pair"], first["bid"], first["ask"]) == (
        "bitstamp",
        "BTC-USD",
        "26208.0",
        "26211.0",
    )
    assert float(first["price"]) == (26208 + 26211) / 2
    assert first["venue_ts"] == "1686068944.0"
    assert all(float(r["ts"]) > 1.7e9 for r in rows)  # receive time, from the clock


async def test_record_gzips_a_csv_gz_and_leaves_missing_fields_empty(venues, rest_case, tmp_path):
    case = rest_case("pyth")
    venue = await venues(case)
    out = tmp_path / "ticks.csv.gz"
    await record(settings_for(case, venue.url), out, 0.3, **RUNNER_OPTIONS)
    row = _rows(out)[0]
    assert (row["pair"], row["price"], row["bid"], row["ask"]) == ("BTC-USD", "51900.75917635", "", "")


def test_rows_are_flushed_as_they_go(tmp_path):
    clock = VirtualClock(1000.0)
    out = tmp_path / "ticks.csv"
    with TicksWriter(out, clock) as writer:
        writer.write(Quote("kraken", "BTC-USD", 1.5, 1000.0))
        clock.advance(1.0)
        writer.write(Quote("kraken", "BTC-USD", 2.5, 1001.0))
        on_disk = out.read_text().splitlines()  # before close
    assert on_disk == [
        "ts,source,pair,price,bid,ask,venue_ts,confidence,last",
        "1000.0,kraken,BTC-USD,1.5,,,,,",
        "1001.0,kraken,BTC-USD,2.5,,,,,",
    ]


def test_run_record_exits_2_on_a_bad_config(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[sources.x]\nkind = "nope"\n[markets.BTC-USD]\nsources = [{source = "x", pair = "BTC-USD"}]\n')
    assert run_record(str(config), str(tmp_path / "t.csv"), 1) == 2
    assert "sources.x.kind" in capsys.readouterr().err
    assert run_record(str(tmp_path / "missing.toml"), str(tmp_path / "t.csv"), 1) == 2
    config.write_text(  # valid settings, but Bybit has no WebSocket adapter
        '[sources.x]\nkind = "bybit"\ntransport = "ws"\n'
        '[markets.BTC-USDT]\nsources = [{source = "x", pair = "BTC-USDT"}]\nmin_sources = 1\n'
    )
    assert run_record(str(config), str(tmp_path / "t.csv"), 1) == 2
    assert "sources.x.transport: bybit has no WebSocket transport" in capsys.readouterr().err


async def test_run_record_records_from_a_config_file(venues, rest_case, tmp_path):
    case = rest_case("coinbase")
    venue = await venues(case)
    config = tmp_path / "markd.toml"
    config.write_text(
        f'[sources.cb]\nkind = "coinbase"\nbase_url = "{venue.url}"\npoll_ms = {POLL_MS}\n'
        '[markets.BTC-USD]\nsources = [{source = "cb", pair = "BTC-USD"}]\nmin_sources = 1\n'
    )
    out = tmp_path / "ticks.csv"
    # run_record owns its event loop, as the CLI does: give it a thread while the fake serves here.
    assert await asyncio.to_thread(run_record, str(config), str(out), 0.5) == 0
    rows = _rows(out)
    assert rows and {(r["source"], r["pair"]) for r in rows} == {("cb", "BTC-USD")}


def test_run_record_exits_1_when_the_file_cannot_be_written(tmp_path, capsys):
    config = tmp_path / "markd.toml"
    config.write_text(
        '[sources.cb]\nkind = "coinbase"\nbase_url = "http://127.0.0.1:9"\n'
        '[markets.BTC-USD]\nsources = [{source = "cb", pair = "BTC-USD"}]\nmin_sources = 1\n'
    )
    assert run_record(str(config), str(tmp_path / "no" / "such" / "dir.csv"), 0.1) == 1
    assert "cannot record" in capsys.readouterr().err
