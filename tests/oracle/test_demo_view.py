"""The demo's view is pure (a Frame in, rich text out): its perp rows, drawn only where there are perps."""

from __future__ import annotations

import io
import math

from rich.console import Console

from oracle.demo_view import Frame, market_table
from oracle.models import Mark, PerpMark, Status


def frame(perps: dict[str, PerpMark | None]) -> Frame:
    marks = {m: Mark(m, p, 1.0, 1.7e9, 3, Status.OK, 1, ("a",)) for m, p in (("BTC-USD", 30_000.0), ("SOL-USD", 60.0))}
    truth = {"BTC-USD": 30_001.0, "SOL-USD": 60.01}
    return Frame("markd demo", marks, truth, {}, [], [], "", perps)


def text(f: Frame) -> dict[str, list[str]]:
    """Each row of the drawn table: its label -> the words of its cells."""
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(market_table(f))
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    rows = {line.split("  ")[0].strip(): line for line in lines if line.strip()}
    return {label: line.strip()[len(label) :].split() for label, line in rows.items()}


def test_a_perp_market_shows_its_perp_mark_premium_and_candidates() -> None:
    perp = PerpMark("BTC-USD", 30_012.0, 30_000.0, 30_011.0, 30_015.0, 30_012.0, 1.7e9, 4, Status.OK)
    rows = text(frame({"BTC-USD": perp, "SOL-USD": None}))
    assert rows["perp mark"] == ["30,012.00"]  # SOL-USD's cell is empty
    assert rows["premium"] == ["+4.0", "bps"]
    assert rows["c1 index+basis"] == ["30,011.00"] and rows["c2 own book"] == ["30,015.00"]


def test_a_perp_not_computed_shows_its_status_and_no_candidates() -> None:
    nan = math.nan
    held = PerpMark("BTC-USD", 30_012.0, 30_000.0, nan, nan, nan, 1.7e9, 5, Status.HELD)
    rows = text(frame({"BTC-USD": held}))
    assert rows["premium"] == ["+4.0", "bps", "held"]
    assert rows["c3 other perps"] == ["-"]


def test_no_perp_rows_without_a_perp_market() -> None:
    assert not {"perp mark", "premium"} & set(text(frame({})))
